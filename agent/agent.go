package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/notify"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/retention"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/settings"
	"github.com/omero-adi/omero-adi/watcher"
	"github.com/omero-adi/omero-adi/web"
)

// Roles an agent process can take.
const (
	RoleAll     = "all"
	RoleWatcher = "watcher"
	RoleRunner  = "runner"
)

// NewLogger builds the process logger from log_level, log_format and log_file_path. Messages go to
// stderr (w) and, when log_file_path is set, to that file as well.
func NewLogger(cfg Config, w io.Writer) (*logrus.Logger, error) {
	l := logrus.New()
	lvl, err := logrus.ParseLevel(cfg.LogLevel)
	if err != nil {
		return nil, settings.Errorf("log_level", "%v", err)
	}
	l.SetLevel(lvl)
	if cfg.LogFormat == "json" {
		l.SetFormatter(&logrus.JSONFormatter{})
	} else {
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	l.SetOutput(w)
	if cfg.LogFilePath != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.LogFilePath), 0o755); err != nil {
			return nil, fmt.Errorf("log_file_path: %w", err)
		}
		f, err := os.OpenFile(cfg.LogFilePath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("log_file_path: %w", err)
		}
		l.SetOutput(io.MultiWriter(w, f))
	}
	return l, nil
}

// OpenStore connects to the order database of the settings and applies the migrations; the
// report says what they did (see db.MigrateReport).
func OpenStore(ctx context.Context, cfg Config, log *logrus.Logger) (*db.Store, db.MigrateReport, error) {
	if driver, dsn, err := db.ParseURL(cfg.IngestTrackingDB); err == nil && driver == "sqlite" {
		if err := os.MkdirAll(filepath.Dir(dsnPath(dsn)), 0o755); err != nil {
			return nil, db.MigrateReport{}, fmt.Errorf("create folder of the SQLite database: %w", err)
		}
	}
	s, err := db.Open(ctx, cfg.IngestTrackingDB, db.Options{Logger: log.WithField("component", "db"), Worker: WorkerName(cfg),
		LegacyPendingMaxAge: cfg.LegacyPendingMaxAge})
	if err != nil {
		return nil, db.MigrateReport{}, fmt.Errorf("open database %s: %w", db.MaskURL(cfg.IngestTrackingDB), err)
	}
	rep, err := s.Migrate(ctx)
	if err != nil {
		s.Close()
		return nil, db.MigrateReport{}, fmt.Errorf("migrate database %s: %w", db.MaskURL(cfg.IngestTrackingDB), err)
	}
	return s, rep, nil
}

func dsnPath(dsn string) string {
	p, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	return p
}

// WorkerName is this process's name in leases and history: worker_name, else host:pid.
func WorkerName(cfg Config) string {
	if cfg.WorkerName != "" {
		return cfg.WorkerName
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// Agent is one omero-adi process: the watcher and/or the runner over one order database.
type Agent struct {
	cfg  Config
	role string
	log  *logrus.Logger
	reg  *prometheus.Registry

	errs *web.ErrorLog // the last problem of each part, for the status page; nil without it
	set  *rules.Set    // the watch rules; nil when this agent does not watch
	// zarrRules are the zarr modes of the rules that set one, by rule name (runner.Config.ZarrRules).
	zarrRules map[string]order.ZarrMode
	omero     *omero.Client      // nil when this agent does not run orders
	pre       *preprocess.Runner // nil when this agent does not run orders
	// retainRules are the rules whose retention the agent applies every retention.interval; nil
	// unless this agent runs orders, the interval is set and a rule has retention on.
	retainRules *rules.Set

	// Set by Run.
	retain    *retention.Retention // nil without retainRules
	store     *db.Store
	runner    *runner.Runner
	watcher   *watcher.Watcher
	web       *web.Server        // nil unless [web] enabled
	integrity *integrity.Checker // with the runner: the periodic check of what the orders linked
	notifier  *notify.Notifier   // nil when nothing is to be notified or this agent runs no orders

	// BrokenOrders, when set before Run, receives each order the periodic integrity check finds
	// newly broken; unset, the notifier reports them (when notifications are on).
	BrokenOrders integrity.Reporter

	closeOnce sync.Once
}

// New validates the role and the settings and builds what needs no I/O (the OMERO CLI adapter,
// the preprocessing runner, the rule set); it opens, creates and starts nothing. log may be nil
// (the standard logger).
func New(cfg Config, role string, log *logrus.Logger) (*Agent, error) {
	switch role {
	case RoleAll, RoleWatcher, RoleRunner:
	default:
		return nil, settings.Errorf("", "--role must be all, watcher or runner, got %q", role)
	}
	if log == nil {
		log = logrus.StandardLogger()
	}
	a := &Agent{cfg: cfg, role: role, log: log, reg: prometheus.NewRegistry()}
	if cfg.Web.Enabled {
		a.errs = web.NewErrorLog()
		log.AddHook(a.errs)
	}
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if role != RoleWatcher {
		var err error
		entry := log.WithField("component", "runner")
		if a.omero, err = NewOmeroClient(cfg, entry); err != nil {
			return nil, err
		}
		if a.pre, err = preprocess.New(cfg.preprocessing(), entry); err != nil {
			return nil, settings.Errorf("", "%v", err)
		}
	}
	if role != RoleRunner || len(cfg.Rules) > 0 {
		set, err := cfg.RuleSet()
		if err != nil {
			return nil, settings.Errorf("", "%v", err)
		}
		if len(set.Rules()) == 0 && role == RoleWatcher {
			return nil, settings.Errorf("rules", "--role watcher needs at least one [[rules]] entry")
		}
		a.zarrRules = set.ZarrModes() // a runner reads its orders' rules by name
		if role != RoleWatcher && cfg.Retention.Interval > 0 && retains(set) {
			a.retainRules = set
		}
		if len(set.Rules()) > 0 && role != RoleRunner {
			a.set = set
		}
	}
	return a, nil
}

// NewOmeroClient is the OMERO CLI adapter the settings describe. It runs nothing.
func NewOmeroClient(cfg Config, log *logrus.Entry) (*omero.Client, error) {
	oc := cfg.Omero
	oc.ImportConfig, oc.LogDir = cfg.ImportConfig, cfg.LogDir
	oc.ReadUsers = cfg.Notify.SMTPURL != "" // the mails need the requester's address
	client, err := omero.New(oc, log)
	if err != nil {
		return nil, settings.Errorf("", "%v", err)
	}
	return client, nil
}

// NewChecker is the integrity check the settings describe, over store; client (may be nil) reads
// OMERO's checksums, reporter (may be nil) hears of newly broken orders, reg (may be nil) takes
// the metrics. It starts nothing.
func NewChecker(cfg Config, store *db.Store, client *omero.Client, reporter integrity.Reporter, reg prometheus.Registerer, log *logrus.Entry) (*integrity.Checker, error) {
	d := integrity.Deps{Store: store, Reporter: reporter, ManagedRepo: cfg.Omero.ManagedRepository, AdminUser: cfg.Omero.AdminUser,
		Roots: cfg.DataConfig.Roots(), Log: log, Registerer: reg}
	if client != nil {
		d.OMERO = client
	}
	return integrity.New(cfg.Integrity, d)
}

// NewReporter is the notifier as `omero-adi integrity` reports the broken orders it finds: it
// writes the notices into the outbox with the check's outcome and sends nothing (the runner agents
// do, as with every notice); nil when notifications are off.
func NewReporter(cfg Config, log *logrus.Entry) (integrity.Reporter, error) {
	n, err := notify.New(cfg.Notify, notify.Deps{Log: log})
	if err != nil {
		return nil, settings.Prefix("notify", err)
	}
	if n == nil {
		return nil, nil
	}
	return n, nil
}

// preprocessing is the [preprocessing] table with what preprocess takes from other owners.
func (c Config) preprocessing() preprocess.Config {
	pc := c.Preprocessing
	pc.LocalTmpRoot, pc.ProcessedFolder = c.Omero.LocalTmpRoot, c.ProcessedFolder
	return pc
}

// start opens (and migrates) the database, creates log_dir and builds the runner and the watcher
// over the database.
func (a *Agent) start(ctx context.Context) error {
	store, _, err := OpenStore(ctx, a.cfg, a.log)
	if err != nil {
		return err
	}
	a.store = store
	if a.omero != nil {
		cfg := a.cfg
		if cfg.Omero.DryRun {
			if err := checkDryRunStore(ctx, store, cfg.IngestTrackingDB); err != nil {
				return err
			}
		}
		if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
			return fmt.Errorf("create log_dir %s: %w", cfg.LogDir, err)
		}
		rc := runnerConfig(cfg, a.zarrRules)
		rc.Registerer = a.reg
		a.notifier, err = notify.New(cfg.Notify, notify.Deps{Store: store, Log: a.log.WithField("component", "notify"),
			Registerer: a.reg, Worker: WorkerName(cfg), Known: a.omero.Known})
		if err != nil {
			return settings.Prefix("notify", err)
		}
		if a.notifier != nil {
			rc.Notifier = a.notifier
		}
		a.runner, err = runner.New(rc, store, a.omero, a.pre, a.log.WithField("component", "runner"))
		if err != nil {
			return err
		}
		reporter := a.BrokenOrders
		if reporter == nil && a.notifier != nil {
			reporter = a.notifier
		}
		a.integrity, err = NewChecker(cfg, store, a.omero, reporter, a.reg, a.log.WithField("component", "integrity"))
		if err != nil {
			return err
		}
		if a.retainRules != nil {
			a.retain, err = retention.New(retention.Deps{Store: store, Rules: a.retainRules, BaseDir: cfg.BaseDir,
				ProcessedFolder: cfg.ProcessedFolder, Log: a.log.WithField("component", "retention")})
			if err != nil {
				return err
			}
		}
	}
	if a.set != nil {
		a.watcher, err = watcher.New(a.cfg.Watch, a.set, NewSink(store, a.log.WithField("component", "watcher")), a.log.WithField("component", "watcher"))
		if err != nil {
			return settings.Errorf("", "%v", err)
		}
	}
	if a.cfg.Web.Enabled {
		return a.startWeb()
	}
	return nil
}

// startWeb builds the status page over the database. It checks passwords with the runner's OMERO
// client; an agent that runs no orders builds one for that (it needs omero.password).
func (a *Agent) startWeb() error {
	oc := a.omero
	if oc == nil {
		var err error
		if oc, err = NewOmeroClient(a.cfg, a.log.WithField("component", "web")); err != nil {
			return settings.Errorf("web.enabled", "the status page signs people in with the OMERO CLI: %v", err)
		}
	}
	d := web.Deps{Store: a.store, Accounts: oc, LogFiles: oc.LogFiles, ErrsTail: oc.ErrsTail, Errors: a.errs,
		Secrets: secrets(a.cfg), Log: a.log.WithField("component", "web")}
	if a.watcher != nil {
		d.Health = a.watcher.Health
	}
	var err error
	wc := a.cfg.Web
	wc.WebclientURL = a.cfg.Notify.WebclientURL
	a.web, err = web.New(wc, d)
	if err != nil {
		return settings.Prefix("web", err)
	}
	return nil
}

// secrets are the settings no page may show: the admin password, the database URL and its password.
func secrets(cfg Config) []string {
	out := []string{cfg.Omero.AdminPassword, cfg.IngestTrackingDB}
	if u, err := url.Parse(cfg.IngestTrackingDB); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			out = append(out, pw)
		}
	}
	return out
}

// Run opens the database, starts the parts and blocks until ctx ends (a clean stop returns nil)
// or a part fails. It closes the database before it returns; an Agent runs once.
func (a *Agent) Run(ctx context.Context) error {
	defer a.Close()
	if err := a.start(ctx); err != nil {
		return err
	}
	a.log.WithFields(logrus.Fields{
		"role": a.role, "database": db.MaskURL(a.cfg.IngestTrackingDB), "worker": WorkerName(a.cfg), "dry_run": a.cfg.Omero.DryRun,
	}).Info("agent starting")
	g, gctx := errgroup.WithContext(ctx)
	if a.cfg.Listen != "" {
		ln, err := net.Listen("tcp", a.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s (setting listen): %w", a.cfg.Listen, err)
		}
		srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve health and metrics: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
		a.log.WithField("listen", ln.Addr().String()).WithField("status_page", a.web != nil).Info("serving /metrics, /healthz, /readyz")
	}
	if a.web != nil {
		g.Go(func() error { return a.web.Run(gctx) })
	}
	if a.runner != nil {
		g.Go(func() error { return a.runner.Run(gctx) })
	}
	if a.watcher != nil {
		g.Go(func() error { return a.watcher.Run(gctx) })
	}
	if a.integrity != nil {
		g.Go(func() error { return a.integrity.Run(gctx) })
	}
	if a.notifier != nil {
		g.Go(func() error { return a.notifier.Run(gctx) })
	}
	if a.retain != nil {
		g.Go(func() error { return a.retain.Run(gctx, a.cfg.Retention.Interval) })
	}
	notifySystemd(gctx, a.log)
	err := g.Wait()
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	a.log.Info("agent stopped")
	return err
}

// Close releases the database; it is safe to call more than once.
func (a *Agent) Close() {
	a.closeOnce.Do(func() {
		if a.store != nil {
			a.store.Close()
		}
	})
}

func (a *Agent) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	if a.web != nil {
		mux.Handle("/", a.web.Handler())
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := a.store.DB().PingContext(ctx); err != nil {
			http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if a.watcher != nil {
			for _, h := range a.watcher.Health().Roots {
				fmt.Fprintf(w, "watch %s: mode=%s %s\n", h.Path, h.Mode, h.Reason)
			}
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

// notifySystemd tells systemd the agent is ready and keeps its watchdog fed while ctx lives.
// Outside systemd (no NOTIFY_SOCKET) it does nothing.
func notifySystemd(ctx context.Context, log *logrus.Logger) {
	if ok, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.WithError(err).Warn("notify systemd")
	} else if !ok {
		return
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	go func() {
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			}
		}
	}()
}

// retains reports whether a rule of set has retention on.
func retains(set *rules.Set) bool {
	for _, c := range set.Rules() {
		if c.Retention.Enabled() {
			return true
		}
	}
	return false
}
