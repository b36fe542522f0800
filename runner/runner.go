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
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
)

// Store is what the runner needs of the order database (db.Store implements it).
type Store interface {
	Claim(ctx context.Context, worker string, max int, lease time.Duration) ([]db.Order, error)
	Heartbeat(ctx context.Context, l db.Lease, lease time.Duration) (cancelRequested bool, err error)
	SetStage(ctx context.Context, l db.Lease, stage, description string) error
	SetResult(ctx context.Context, l db.Lease, r db.Result) error
	SetLinks(ctx context.Context, l db.Lease, links []db.Link) error
	Finish(ctx context.Context, l db.Lease, stage, description string, notices ...db.Notice) error
	Release(ctx context.Context, l db.Lease) error
	Recover(ctx context.Context, p db.RecoverPolicy, held ...db.Lease) (int, error)
	AddEvent(ctx context.Context, uuid, stage, description string) error
	Get(ctx context.Context, uuid string) (db.Order, error)
	Notify() <-chan struct{}
}

var _ Store = (*db.Store)(nil)

// Runner claims and processes orders. Create it with New, then call Run once.
type Runner struct {
	cfg   Config
	store Store
	imp   Importer
	reg   Registrar // imp, when it can register OME-Zarr; else nil
	pre   Preprocessor
	log   *logrus.Entry
	m     *metrics

	wake chan struct{} // a worker finished: there is room to claim again

	mu      sync.Mutex
	held    map[string]*held // running orders by uuid, from claim until their outcome is written
	upSince time.Time        // start of the current stretch of database contact; zero while unreachable
	back    chan struct{}    // the database answers again after a failure
	writing atomic.Int32     // workers retrying their final writes: no new claims meanwhile
}

// held is an order this runner works on: its lease, and the cancel of its context.
type held struct {
	lease  db.Lease
	cancel context.CancelCauseFunc
}

// New validates the configuration; it starts nothing. pre may be nil when no order may carry
// preprocessing (such orders then fail with a description).
func New(cfg Config, store Store, imp Importer, pre Preprocessor, log *logrus.Entry) (*Runner, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.RecoverInterval <= 0 {
		cfg.RecoverInterval = cfg.Lease / 2
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
	reg, _ := imp.(Registrar)
	return &Runner{
		cfg: cfg, store: store, imp: imp, reg: reg, pre: pre, m: m,
		log:  log.WithField("component", "runner"),
		wake: make(chan struct{}, 1),
		held: map[string]*held{},
		back: make(chan struct{}, 1),
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
		// A worker retrying its final writes means the database is away: it gets them done first.
		if claimNow && running < r.cfg.MaxWorkers && ctx.Err() == nil && r.writing.Load() == 0 {
			free := r.cfg.MaxWorkers - running
			orders, err := r.store.Claim(ctx, r.cfg.Worker, free, r.cfg.Lease)
			if ctx.Err() == nil {
				r.reached(err)
			}
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
		case <-r.back:
			r.renewAll(ctx)
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

// reached notes the outcome of a database call: an error other than a refused fenced write means
// the database did not answer. When it answers again after that, r.back tells the loop to renew
// every held lease at once.
func (r *Runner) reached(err error) {
	up := err == nil || errors.Is(err, db.ErrLeaseLost)
	r.mu.Lock()
	wasDown := r.upSince.IsZero()
	switch {
	case up && wasDown:
		r.upSince = time.Now()
	case !up:
		r.upSince = time.Time{}
	}
	r.mu.Unlock()
	if up && wasDown {
		select {
		case r.back <- struct{}{}:
		default:
		}
	}
}

// hold registers a claimed order as running here; the returned func forgets it.
func (r *Runner) hold(l db.Lease, cancel context.CancelCauseFunc) func() {
	r.mu.Lock()
	r.held[l.UUID] = &held{lease: l, cancel: cancel}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.held, l.UUID)
		r.mu.Unlock()
	}
}

func (r *Runner) heldLeases() []*held {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*held, 0, len(r.held))
	for _, h := range r.held {
		out = append(out, h)
	}
	return out
}

// renewAll renews the lease of every order this runner holds (also those whose import is over
// and whose outcome waits for the database), so that no recovery, here or in another agent, takes
// them for abandoned. A lost lease or a cancel request stops that order. It reports whether every
// renewal reached the database.
func (r *Runner) renewAll(ctx context.Context) bool {
	ok := true
	for _, h := range r.heldLeases() {
		cancelRequested, err := r.store.Heartbeat(ctx, h.lease, r.cfg.Lease)
		if ctx.Err() != nil {
			return false
		}
		r.reached(err)
		switch {
		case errors.Is(err, db.ErrLeaseLost):
			h.cancel(errLeaseLost)
		case err != nil:
			ok = false
		case cancelRequested:
			h.cancel(errCancelRequested)
		}
	}
	return ok
}

// recover handles orders whose lease expired. It runs only after this runner renewed its own
// leases and has reached the database without a break for at least one lease: after an outage,
// live owners elsewhere get that long to renew theirs before anything of theirs counts as
// abandoned. The orders this runner holds are never recovered here.
func (r *Runner) recover(ctx context.Context) int {
	if !r.renewAll(ctx) {
		return 0
	}
	r.mu.Lock()
	upSince := r.upSince
	r.mu.Unlock()
	if upSince.IsZero() || time.Since(upSince) < r.cfg.Lease {
		r.log.WithField("since", upSince).Debug("recovery waits for a lease of database contact")
		return 0
	}
	hs := r.heldLeases()
	leases := make([]db.Lease, len(hs))
	for i, h := range hs {
		leases[i] = h.lease
	}
	n, err := r.store.Recover(ctx, r.cfg.RecoverPolicy(), leases...)
	if ctx.Err() == nil {
		r.reached(err)
	}
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
