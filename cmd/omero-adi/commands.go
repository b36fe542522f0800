package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/agent"
	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/watcher"
)

func (e *env) cmdRun(ctx context.Context, args []string) error {
	fs := newFlagSet("run")
	role := fs.String("role", agent.RoleAll, "all, watcher or runner")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("run: unexpected argument %q", rest[0])
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	log, err := agent.NewLogger(cfg, e.stderr)
	if err != nil {
		return err
	}
	a, err := agent.New(ctx, cfg, *role, agent.Options{Logger: log})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func (e *env) cmdConfigCheck(ctx context.Context, args []string) error {
	if rest, err := parse(newFlagSet("config check"), args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("config check: unexpected argument %q", rest[0])
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	src := cfg.Path
	if src == "" {
		src = "no settings file (" + e.configPath + " does not exist): defaults and environment"
	}
	fmt.Fprintf(e.stdout, "# settings are valid\n# source: %s\n", src)
	for _, name := range agent.EnvOverrides {
		if e.getenv(name) != "" {
			fmt.Fprintf(e.stdout, "# from the environment: %s\n", name)
		}
	}
	return toml.NewEncoder(e.stdout).Encode(cfg.Masked())
}

func (e *env) cmdRulesTest(ctx context.Context, args []string) error {
	paths, err := parse(newFlagSet("rules test"), args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return usagef("rules test: give one or more PATH")
	}
	cfg, err := e.settings()
	if err != nil {
		return err
	}
	set, err := cfg.RuleSet()
	if err != nil {
		return agent.ErrSettingsf("%v", err)
	}
	unmatched := 0
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		m, ok, why := set.Match(abs)
		if !ok {
			unmatched++
			fmt.Fprintf(e.stdout, "%s: no rule matches (%s)\n", abs, why)
			continue
		}
		d, err := m.Rule.Draft(m, []string{m.UnitPath})
		if err != nil {
			fmt.Fprintf(e.stdout, "%s: rule %q matches, but no order can be made: %v\n", abs, m.Rule.Name, err)
			continue
		}
		fmt.Fprintf(e.stdout, "%s: rule %q, unit %s\n  order: group=%s user=%s destination=%s:%s files=%q source=%s\n",
			abs, m.Rule.Name, m.UnitPath, d.Group, d.User, d.Target.Kind, d.Target.IDColumn(), d.Files, d.Source)
		if d.Preprocessing != nil {
			fmt.Fprintf(e.stdout, "  preprocessing: %s %v\n", d.Preprocessing.Container, d.Preprocessing.ExtraParams)
		}
	}
	if unmatched > 0 {
		return fmt.Errorf("%d of %d paths match no rule", unmatched, len(paths))
	}
	return nil
}

// scanSink answers Known from the database and creates nothing.
type scanSink struct{ store *db.Store }

func (s scanSink) KnownSignature(ctx context.Context, rule, path, signature string) (bool, error) {
	return s.store.HasWatchItemSignature(ctx, rule, path, signature)
}

func (s scanSink) Known(ctx context.Context, rule, path, fingerprint string) (bool, error) {
	_, ok, err := s.store.HasWatchItem(ctx, db.WatchKey{Rule: rule, Path: path, Fingerprint: fingerprint})
	return ok, err
}

func (scanSink) Settled(context.Context, watcher.Unit) error { return nil }

func (e *env) cmdScan(ctx context.Context, args []string) error {
	fs := newFlagSet("scan")
	asJSON := fs.Bool("json", false, "print JSON")
	if rest, err := parse(fs, args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("scan: unexpected argument %q", rest[0])
	}
	s, cfg, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	set, err := cfg.RuleSet()
	if err != nil {
		return agent.ErrSettingsf("%v", err)
	}
	if len(set.Rules()) == 0 {
		return agent.ErrSettingsf("rules: no [[rules]] entry to scan")
	}
	log, _ := agent.NewLogger(cfg, e.stderr)
	// TrustMtime: a unit whose newest mtime is older than its settle counts as settled at this one
	// look (the scan creates nothing; the daemon still waits for two observations).
	w, err := watcher.New(watcher.Config{Mode: cfg.Watch.Mode, RescanInterval: cfg.Watch.RescanInterval.Duration,
		PollInterval: cfg.Watch.PollInterval.Duration, TrustMtime: true}, set, scanSink{s}, log.WithField("component", "watcher"))
	if err != nil {
		return agent.ErrSettingsf("%v", err)
	}
	st, err := w.Scan(ctx)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	if *asJSON {
		return writeJSON(e, map[string]any{
			"seen": st.Seen, "settled": st.Settled, "pending": st.Pending, "already_ordered": st.AlreadyOrdered,
			"ignored": st.Ignored, "seconds": st.Duration.Seconds(),
		})
	}
	fmt.Fprintf(e.stdout, "seen %d, settled %d, pending %d, already ordered %d, ignored %d in %s\n",
		st.Seen, st.Settled, st.Pending, st.AlreadyOrdered, st.Ignored, st.Duration.Round(time.Microsecond))
	return nil
}

// cmdDoctor checks what the agent needs on this host and says what to fix.
func (e *env) cmdDoctor(ctx context.Context, args []string) error {
	if rest, err := parse(newFlagSet("doctor"), args); err != nil {
		return err
	} else if len(rest) > 0 {
		return usagef("doctor: unexpected argument %q", rest[0])
	}
	problems := 0
	check := func(name string, err error, fix string) {
		if err == nil {
			fmt.Fprintf(e.stdout, "ok    %s\n", name)
			return
		}
		problems++
		fmt.Fprintf(e.stdout, "FAIL  %s: %v\n", name, err)
		if fix != "" {
			fmt.Fprintf(e.stdout, "      fix: %s\n", fix)
		}
	}
	cfg, err := e.settings()
	check("settings "+e.configPath, err, "correct the key named above")
	if err != nil {
		return fmt.Errorf("%d problem(s) found", problems)
	}
	s, _, err := agent.OpenStore(ctx, cfg, silentLogger())
	check("database "+db.MaskURL(cfg.IngestTrackingDB), err, "check ingest_tracking_db / INGEST_TRACKING_DB_URL and that the server is reachable")
	if s != nil {
		s.Close()
	}
	check("base_dir "+cfg.BaseDir, dirReadable(cfg.BaseDir), "mount the data share there or set base_dir")
	check("log_dir "+cfg.LogDir, dirWritableOrCreatable(cfg.LogDir), "create it and give the agent's user write access")
	if !cfg.Omero.DryRun {
		_, err := exec.LookPath(cfg.Omero.CLI)
		check("omero CLI "+cfg.Omero.CLI, err, "install omero-py (pip install omero-py) or set omero.cli")
		check("omero.managed_repository "+cfg.Omero.ManagedRepository, dirWritable(cfg.Omero.ManagedRepository),
			"mount OMERO's ManagedRepository at the server's path with write access (in-place import creates links there)")
		check("omero.local_tmp_root "+cfg.Omero.LocalTmpRoot, dirWritable(cfg.Omero.LocalTmpRoot), "create it on local disk")
		if cfg.Omero.Password == "" {
			check("OMERO admin password", fmt.Errorf("not set"), "set OMERO_PASSWORD in the service environment")
		} else if client, err := agent.NewOmeroClient(cfg, nil, logrus.NewEntry(silentLogger())); err != nil {
			check("omero settings", err, "correct the key named above")
		} else {
			jars, err := client.ImporterJars()
			check("OMERO.java importer jars "+jars, err, "run `omero import --fetch-jars VERSION` as the agent's user (the container image does this at build time), or set OMERODIR to an OMERO.server/OMERO.py folder with lib/client")
			name := fmt.Sprintf("OMERO server %s:%d as %s", cfg.Omero.Host, cfg.Omero.Port, cfg.Omero.User)
			server, err := client.Ping(ctx)
			if err == nil {
				name += ": " + server
			}
			check(name, err,
				"check that OMERO.server runs, omero.host/omero.port (env OMERO_HOST, OMERO_PORT), and the admin's password (OMERO_PASSWORD)")
		}
	}
	if needsContainers(cfg) {
		_, err := exec.LookPath(cfg.Preprocessing.Runtime)
		check("container runtime "+cfg.Preprocessing.Runtime, err, "apt-get install podman, or map images to local commands in [preprocessing.local]")
	}
	if len(cfg.Rules) > 0 {
		_, err := cfg.RuleSet()
		check(fmt.Sprintf("%d watch rules", len(cfg.Rules)), err, "")
		if b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_watches"); err == nil {
			n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			var low error
			if n < 65536 {
				low = fmt.Errorf("fs.inotify.max_user_watches is %d", n)
			}
			check("inotify watch limit", low, "sysctl -w fs.inotify.max_user_watches=524288 (and persist it in /etc/sysctl.d)")
		}
	}
	if problems > 0 {
		return fmt.Errorf("%d problem(s) found", problems)
	}
	fmt.Fprintln(e.stdout, "all checks passed")
	return nil
}

func needsContainers(cfg agent.Config) bool {
	for _, r := range cfg.Rules {
		if r.Preprocessing != nil {
			if _, local := cfg.Preprocessing.Local[r.Preprocessing.Container]; !local {
				return true
			}
		}
	}
	return false
}

func dirReadable(dir string) error {
	_, err := os.ReadDir(dir)
	return err
}

// dirWritableOrCreatable accepts a writable folder, or a missing one that the agent can create
// (it creates log_dir at start) because its nearest existing parent is writable.
func dirWritableOrCreatable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			return dirWritable(d)
		} else if !errors.Is(err, os.ErrNotExist) || d == filepath.Dir(d) {
			return err
		}
	}
}

func dirWritable(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("not a folder")
	}
	f, err := os.CreateTemp(dir, ".omero-adi-doctor-*")
	if err != nil {
		return err
	}
	f.Close()
	return os.Remove(f.Name())
}

var _ = json.Marshal

func silentLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}
