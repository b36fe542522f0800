// Package runner drains the order queue: it claims pending orders (from the watcher, the CLI, the
// web plugin or hand-written SQL), validates each, optionally preprocesses it in a container, imports
// it in place into OMERO through the omero CLI as the requesting user and group, redirects the
// ManagedRepository links of converted files, annotates the new images and records the outcome.
// Every write of a running order is fenced by its lease, so one order runs once across agents.
package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
)

// Store is what the runner needs of the order database (db.Store implements it).
type Store interface {
	Claim(ctx context.Context, worker string, max int, lease time.Duration) ([]db.Order, error)
	Heartbeat(ctx context.Context, l db.Lease, lease time.Duration) (cancelRequested bool, err error)
	SetStage(ctx context.Context, l db.Lease, stage, description string) error
	SetResult(ctx context.Context, l db.Lease, r db.Result) error
	Finish(ctx context.Context, l db.Lease, stage, description string) error
	Release(ctx context.Context, l db.Lease) error
	Recover(ctx context.Context, p db.RecoverPolicy) (int, error)
	AddEvent(ctx context.Context, uuid, stage, description string) error
	Notify() <-chan struct{}
}

var _ Store = (*db.Store)(nil)

// Config holds the runner's settings; the agent fills it from the settings file.
type Config struct {
	Worker          string        // lease owner name, unique per process (host:pid)
	MaxWorkers      int           // orders processed at once
	Lease           time.Duration // lease of a running order; heartbeats renew it every Lease/3
	PollInterval    time.Duration // database poll when no notification arrives
	RecoverInterval time.Duration // how often expired leases are recovered (default Lease/2)
	ShutdownTimeout time.Duration // running orders' grace period after the context ends
	Recover         db.RecoverPolicy
	Paths           Paths
	LogDir          string // per-order logs
	Namespace       string // annotation namespace
	DryRun          bool   // validate and log the command, import nothing
	ManagedRepo     string // OMERO's ManagedRepository as this host sees it
	Registerer      prometheus.Registerer
	// AnnotatePlateImages also annotates every Image of an imported Plate (annotate_plate_images);
	// by default a plate's annotation goes on the Plate only, as the old service did.
	AnnotatePlateImages bool
}

// Runner claims and processes orders. Create it with New, then call Run once.
type Runner struct {
	cfg   Config
	store Store
	imp   Importer
	pre   Preprocessor
	log   *logrus.Entry
	m     *metrics

	wake chan struct{} // a worker finished: there is room to claim again
}

// New validates the configuration; it starts nothing. pre may be nil when no order may carry
// preprocessing (such orders then fail with a description).
func New(cfg Config, store Store, imp Importer, pre Preprocessor, log *logrus.Entry) (*Runner, error) {
	if cfg.Worker == "" {
		return nil, errors.New("runner: worker name is empty")
	}
	if cfg.MaxWorkers < 1 {
		return nil, fmt.Errorf("runner: max_workers must be at least 1, got %d", cfg.MaxWorkers)
	}
	if cfg.Lease <= 0 || cfg.PollInterval <= 0 {
		return nil, errors.New("runner: lease and poll_interval must be positive")
	}
	if cfg.RecoverInterval <= 0 {
		cfg.RecoverInterval = cfg.Lease / 2
	}
	if cfg.Namespace == "" {
		cfg.Namespace = "biomero.import"
	}
	if store == nil || imp == nil {
		return nil, errors.New("runner: store and importer are required")
	}
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("runner: register metrics: %w", err)
	}
	return &Runner{
		cfg: cfg, store: store, imp: imp, pre: pre, m: m,
		log:  log.WithField("component", "runner"),
		wake: make(chan struct{}, 1),
	}, nil
}

// Run claims and processes orders until ctx ends. Then it stops claiming, gives running orders
// ShutdownTimeout to finish, cancels what still runs and releases those orders' leases so that
// recovery (here or in another agent) handles them. It returns nil after a clean shutdown.
func (r *Runner) Run(ctx context.Context) error {
	r.log.WithFields(logrus.Fields{"worker": r.cfg.Worker, "max_workers": r.cfg.MaxWorkers}).Info("runner started")
	// Orders outlive Run's context by the shutdown grace period: they run under work, which is
	// cancelled only when that period is over.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()

	var wg sync.WaitGroup
	running := 0
	done := make(chan struct{}, r.cfg.MaxWorkers)
	notify := r.store.Notify()
	poll := time.NewTicker(r.cfg.PollInterval)
	defer poll.Stop()
	recoverTick := time.NewTicker(r.cfg.RecoverInterval)
	defer recoverTick.Stop()

	r.recover(ctx)
	claimNow := true
	for {
		if claimNow && running < r.cfg.MaxWorkers && ctx.Err() == nil {
			free := r.cfg.MaxWorkers - running
			orders, err := r.store.Claim(ctx, r.cfg.Worker, free, r.cfg.Lease)
			if err != nil && ctx.Err() == nil {
				r.log.WithError(err).Warn("claim orders")
			}
			for _, o := range orders {
				running++
				wg.Add(1)
				r.m.running.Inc()
				go func(o db.Order) {
					defer wg.Done()
					defer func() { done <- struct{}{} }()
					defer r.m.running.Dec()
					r.process(work, o)
				}(o)
			}
			// A full batch means more may be waiting: claim again as soon as a worker is free.
			claimNow = len(orders) == free && err == nil
		}
		select {
		case <-ctx.Done():
			return r.shutdown(&wg, done, running, stopWork)
		case <-done:
			running--
			claimNow = true
		case <-notify:
			claimNow = true
		case <-poll.C:
			claimNow = true
		case <-recoverTick.C:
			if r.recover(ctx) > 0 {
				claimNow = true
			}
		}
	}
}

func (r *Runner) shutdown(wg *sync.WaitGroup, done chan struct{}, running int, stopWork context.CancelFunc) error {
	if running > 0 {
		r.log.WithFields(logrus.Fields{"running": running, "timeout": r.cfg.ShutdownTimeout}).Info("waiting for running orders")
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	timer := time.NewTimer(r.cfg.ShutdownTimeout)
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		r.log.Warn("shutdown timeout: stopping running orders and releasing them for recovery")
		stopWork()
		<-finished
	}
	r.log.Info("runner stopped")
	return nil
}

func (r *Runner) recover(ctx context.Context) int {
	n, err := r.store.Recover(ctx, r.cfg.Recover)
	if err != nil {
		if ctx.Err() == nil {
			r.log.WithError(err).Warn("recover expired leases")
		}
		return 0
	}
	if n > 0 {
		r.log.WithField("orders", n).Info("recovered orders with expired leases")
		r.m.recovered.Add(float64(n))
	}
	return n
}
