// Package watcher finds import units in the rules' drop folders and reports each one once it has
// settled. It knows nothing about OMERO or orders: a Sink (the agent, on top of the database)
// decides what a settled unit becomes.
//
// How it works (the files follow these concerns: events.go, walk.go, settle.go, sink.go):
//   - Every root of the rule set (the static prefix of rule paths) is either event-driven (inotify
//     watches on every directory below it, plus a full rescan every RescanInterval with ±10 %
//     jitter) or poll-only (a full rescan every PollInterval, no watches). Mode "auto" picks poll for
//     NFS, SMB/CIFS and FUSE mounts (statfs type), which deliver no events for remote writes.
//   - A new directory gets its watch first and is listed at once, so files created before the watch
//     existed are not missed. Folder units are not descended into with watches: only the unit's own
//     top level is watched (for its marker and as a hint); the unit is walked when it is a candidate.
//   - Events are hints. A candidate is settled when its signature (file: size and mtime; folder:
//     count, total size, newest mtime and a hash of the sorted (path, size, mtime) list) is unchanged
//     across two observations at least the rule's settle apart, or, for a folder unit, as soon as
//     its marker file exists. Only candidates are re-observed on timers, never the whole tree.
//   - A file's content is read (the head and tail hash of its fingerprint) only when it settles,
//     never when it is first found: until then size and mtime are its signature.
//   - Full scans run in their own goroutines, several walkers per root, holding the watcher's lock
//     only while they compare one directory with the pending units and the cache; events of every
//     root are handled meanwhile. Run's loop itself never walks: directories that events find
//     (a tree moved in, a folder unit's top level) go to an event-walker goroutine, due folder
//     units are walked in a goroutine of their own. The Sink is never called with the lock held: settled units are
//     handed over by sinkWorkers goroutines, so a slow database delays only the units waiting on
//     it, and a failing one is retried per unit until it answers.
//   - An event-queue overflow (fsnotify.ErrEventOverflow) or another watch error triggers a full
//     rescan. Running out of inotify watches (ENOSPC/EMFILE) switches that root to polling, logs the
//     sysctl to raise once, and shows in Health. Nothing here is fatal to Run.
//   - A rescan of an unchanged tree only lists (getdents) and stats (fstatat): a per-path cache maps
//     (size, mtime) to "already known" or "not a unit", so the Sink is asked once per content and
//     nothing is hashed twice. The cache holds 16 bytes of hashes per file seen (FNV-64 of the path;
//     a collision, about 1 in 10^8 for a million files, would hide one file until its next change);
//     entries of files that a full scan no longer finds are dropped after it. Everything else is
//     proportional to what is pending.
//   - After a restart the cache is empty. A unit that a full scan finds quiet for its rule's
//     settle already (by its newest mtime) is looked up at once, without reading it: a file with
//     Sink.KnownSignature (rule, path, size and mtime), a folder unit with Sink.Known (its
//     fingerprint reads no content). So starting on a large, already ordered tree reads no file
//     and holds no candidate per unit. The mtime never settles a unit: one that is not known
//     waits for two observations spanning settle like any other (the Sink's answer is kept).
//   - Rename detection belongs to the Sink: a file renamed or moved within the folder arrives as a
//     settled unit with a new path and the same fingerprint (size, mtime and content hash do not
//     change with a rename), and the Sink, which has the database, recognises it.
//   - Symbolic links are never followed nor reported; hidden and temporary names, everything under
//     ".processed" and empty files are never part of a unit.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/settings"
)

// Watch modes.
const (
	ModeAuto   = "auto"
	ModeEvents = "events"
	ModePoll   = "poll"
)

// WatchLimitHint is the advice logged and shown in Health when inotify watches run out.
const WatchLimitHint = "sysctl fs.inotify.max_user_watches=524288"

// Sentinel errors.
var (
	ErrConfig  = errors.New("invalid watcher config")
	ErrRunning = errors.New("watcher is already running")
)

// Config is the [watch] table, and below its keys the watcher's tuning for tests and one-shot
// scans.
type Config struct {
	Mode           string        `toml:"mode"`            // ModeAuto | ModeEvents | ModePoll, for every root
	RescanInterval time.Duration `toml:"rescan_interval"` // full rescan of event-driven roots (jittered ±10 %)
	PollInterval   time.Duration `toml:"poll_interval"`   // full rescan of poll-only roots, and retry of missing roots

	MinObserve  time.Duration `toml:"-"` // optional lower bound between two observations of one candidate
	EventBuffer uint          `toml:"-"` // fsnotify event channel buffer
	// TrustMtime lets a unit whose newest mtime is older than its settle count as settled at its
	// first observation. Meant for one-shot scans (`omero-adi scan`); keep it off for the daemon:
	// copies that preserve mtimes (cp -p, rsync -a) would look settled while still being written.
	TrustMtime bool `toml:"-"`
}

// DefaultConfig returns the watcher's defaults.
func DefaultConfig() Config {
	return Config{Mode: ModeAuto, RescanInterval: time.Hour, PollInterval: 30 * time.Second, EventBuffer: 4096}
}

// Validate checks the [watch] keys; key names are relative to the table.
func (c Config) Validate() error {
	var p settings.Problems
	if !settings.OneOf(c.Mode, ModeAuto, ModeEvents, ModePoll) {
		p.Add("mode", "must be auto, events or poll, got %q", c.Mode)
	}
	p.Positive("rescan_interval", c.RescanInterval, "1h")
	p.Positive("poll_interval", c.PollInterval, "30s")
	return p.Err()
}

// Unit is a settled import unit.
type Unit struct {
	Rule        *rules.Compiled
	Match       rules.Match
	Path        string   // the file, or the folder unit
	Files       []string // absolute, sorted; without the marker, empty files and ignored names
	Fingerprint string   // file: "size:mtime:hash(head 64KiB + tail 64KiB)"; folder: "count:total:newest:hash(list)"
}

// Sink receives settled units; the agent implements it on top of the database. Its methods are
// called from several goroutines at once (at most sinkWorkers hand-overs plus the walks), never
// while the watcher's state is locked; they must not call Scan (Health is fine). A slow Sink
// delays only the units waiting on it; an error is retried later, per unit.
type Sink interface {
	// KnownSignature reports whether a file unit with this rule and path was already ordered with
	// a fingerprint that begins with signature ("size:mtime:"). A full scan asks it for a file
	// found quiet for its rule's settle already, so that a restart on an ordered tree reads no
	// file; the in-memory cache makes the same (path, size, mtime) assumption.
	KnownSignature(ctx context.Context, rule, path, signature string) (bool, error)
	// Known reports whether a unit with this rule, path and fingerprint was already ordered. It is
	// asked once per content: for a file when it settles (unless KnownSignature said no for the
	// same size and mtime), for a folder unit when a full scan finds it quiet or when it settles.
	Known(ctx context.Context, rule, path, fingerprint string) (bool, error)
	// Settled is called once per settled unit that Known did not report. An error is retried later.
	Settled(ctx context.Context, u Unit) error
}

// ScanStats counts what one full scan saw.
type ScanStats struct {
	Seen           int           `json:"seen"`            // units observed (files and folder units)
	Settled        int           `json:"settled"`         // units handed to Sink.Settled (Scan only)
	Pending        int           `json:"pending"`         // units waiting to settle after the scan
	AlreadyOrdered int           `json:"already_ordered"` // units the cache or the Sink reported
	Ignored        int           `json:"ignored"`         // entries that are no unit (names, patterns, empty, symlinks)
	Duration       time.Duration `json:"duration"`
}

// Health is a snapshot for /healthz and `doctor`.
type Health struct {
	Running   bool         `json:"running"`
	Pending   int          `json:"pending"`
	Settled   int64        `json:"settled"`   // units handed to the Sink since start
	Overflows int64        `json:"overflows"` // inotify queue overflows since start
	Roots     []RootHealth `json:"roots"`
}

// RootHealth describes one watched root.
type RootHealth struct {
	Path             string        `json:"path"`
	Mode             string        `json:"mode"`   // events | poll ("" before the first scan)
	Reason           string        `json:"reason"` // why this mode (statfs type, setting, watch limit)
	WatchLimit       bool          `json:"watch_limit"`
	Watches          int           `json:"watches"`
	LastScan         time.Time     `json:"last_scan"`
	LastScanDuration time.Duration `json:"last_scan_duration"`
	Pending          int           `json:"pending"`
	Errors           int           `json:"errors"`
	LastError        string        `json:"last_error,omitempty"`
}

// Watcher watches the roots of a rule set. New starts nothing; Run blocks. The fields below mu
// are owned by whoever holds mu: Run's loop, the walks, the Sink workers and Scan take it for
// short bookkeeping steps only, never across a Sink call or a whole walk.
type Watcher struct {
	cfg  Config
	set  *rules.Set
	sink Sink
	log  *logrus.Entry

	running   atomic.Bool
	wake      chan struct{} // a background scan ended: Run's loop recomputes its timer
	handReady chan struct{} // handq has work for a Sink worker
	lookups   chan struct{} // held by the walk that looks quiet units up with the Sink (one at a time)
	dirReady  chan struct{} // dirq has work for the event walker

	mu       sync.Mutex
	roots    []*root
	pending  map[uint64]*cand
	queue    candHeap
	handing  int                   // settled candidates waiting in the roots' handq
	handTurn int                   // the root whose handq is served next
	dirq     []newDir              // directories events found, waiting for the event walker
	known    map[uint64]knownEntry // hash(path) -> what was decided for which content
	watched  map[string]*root      // watched directory -> its root
	unitDirs map[string]bool       // watched folder units (top level only)
	fsw      *fsnotify.Watcher
	warned   map[string]bool
	limitLog bool
	overLog  retry.Quiet
	sinkDown retry.Quiet // a streak of failed hand-overs: logged once, ended by a success
	settled  int64
	overflow int64
	rng      *rand.Rand
	epoch    time.Time // zero of the candidates' monotonic clock

	hmu    sync.Mutex
	health Health
}

type root struct {
	path        string
	idx         uint16 // in roots, for the cache
	gen         uint32 // number of the current (or last) full scan
	mode        string
	reason      string
	limit       bool
	watches     int
	lastScan    time.Time
	lastDur     time.Duration
	next        time.Time
	scanning    bool    // a background full scan runs
	handq       []*cand // settled candidates waiting for a Sink worker
	again       bool    // another full scan is due as soon as the running one ends
	pending     int
	errors      int
	lastErr     string
	missingWarn bool
}

// New validates the configuration; it starts nothing.
func New(cfg Config, set *rules.Set, sink Sink, log *logrus.Entry) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, settings.Prefix("watch", err))
	}
	if cfg.MinObserve < 0 || cfg.EventBuffer == 0 {
		return nil, fmt.Errorf("%w: MinObserve must not be negative and EventBuffer must be positive", ErrConfig)
	}
	if set == nil {
		return nil, fmt.Errorf("%w: no rule set", ErrConfig)
	}
	if sink == nil {
		return nil, fmt.Errorf("%w: no sink", ErrConfig)
	}
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	w := &Watcher{
		cfg:       cfg,
		set:       set,
		sink:      sink,
		log:       log.WithField("component", "watcher"),
		wake:      make(chan struct{}, 1),
		handReady: make(chan struct{}, 1),
		lookups:   make(chan struct{}, 1),
		dirReady:  make(chan struct{}, 1),
		pending:   map[uint64]*cand{},
		known:     map[uint64]knownEntry{},
		watched:   map[string]*root{},
		unitDirs:  map[string]bool{},
		warned:    map[string]bool{},
		rng:       rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x61646977)),
		epoch:     time.Now(),
	}
	for i, r := range set.Roots() {
		w.roots = append(w.roots, &root{path: r.Path, idx: uint16(i)})
	}
	w.publish()
	return w, nil
}

// now is the time on the candidates' clock: monotonic nanoseconds since New (8 bytes per time
// stamp instead of a time.Time's 24; there are three per candidate).
func (w *Watcher) now() int64 { return int64(time.Since(w.epoch)) }

// Health returns a snapshot of the watcher's state; it never blocks on a running scan.
func (w *Watcher) Health() Health {
	w.hmu.Lock()
	defer w.hmu.Unlock()
	h := w.health
	h.Roots = append([]RootHealth(nil), w.health.Roots...)
	h.Running = w.running.Load()
	return h
}

// publish copies the state into the health snapshot. Caller holds mu (or is New).
func (w *Watcher) publish() {
	h := Health{Pending: len(w.pending), Settled: w.settled, Overflows: w.overflow}
	for _, r := range w.roots {
		h.Roots = append(h.Roots, RootHealth{
			Path: r.path, Mode: r.mode, Reason: r.reason, WatchLimit: r.limit, Watches: r.watches,
			LastScan: r.lastScan, LastScanDuration: r.lastDur, Pending: r.pending, Errors: r.errors, LastError: r.lastErr,
		})
	}
	w.hmu.Lock()
	w.health = h
	w.hmu.Unlock()
}

// Scan runs one full scan of every root without adding watches and returns what it saw. Units
// that settle during it (see Config.TrustMtime, or a second Scan after the settle time) are handed
// to the Sink by Scan itself before it returns. A unit found quiet for its settle is looked up
// with the Sink at once (without reading it), so that one scan counts what is already ordered; a
// unit that is not quiet cannot have been ordered with its current content, and is neither read
// nor looked up. Scan may be called while Run runs.
func (w *Watcher) Scan(ctx context.Context) (ScanStats, error) {
	start := time.Now()
	var st ScanStats
	var errs []error
	for _, r := range w.roots {
		if err := w.scanRoot(ctx, r, walkOpts{probe: true, sync: true, workers: scanWorkers}, &st); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	w.drain(ctx, make([]byte, hashChunk), &st)
	w.mu.Lock()
	st.Pending = len(w.pending)
	w.publish()
	w.mu.Unlock()
	st.Duration = time.Since(start)
	if err := ctx.Err(); err != nil {
		return st, err
	}
	return st, errors.Join(errs...)
}

// Run watches until ctx is done. It returns nil on cancellation; per-item problems are logged.
// When it returns, its background scans and Sink workers have ended.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer w.running.Store(false)

	var events <-chan fsnotify.Event
	var errs <-chan error
	noEvents := ""
	if w.cfg.Mode != ModePoll {
		fsw, err := fsnotify.NewBufferedWatcher(w.cfg.EventBuffer)
		if err != nil {
			noEvents = fmt.Sprintf("inotify unavailable (%v): polling", err)
			w.log.WithError(err).WithField("hint", "sysctl fs.inotify.max_user_instances=1024").Warn("inotify unavailable, polling every root")
		} else {
			defer fsw.Close()
			events, errs = fsw.Events, fsw.Errors
			w.mu.Lock()
			w.fsw = fsw
			w.mu.Unlock()
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	var bg sync.WaitGroup // background scans, walks of new directories and folder units, Sink workers
	defer func() {
		cancel()
		bg.Wait()
		w.mu.Lock()
		w.fsw = nil
		w.dirq = nil // the next start scan walks everything
		w.watched = map[string]*root{}
		w.unitDirs = map[string]bool{}
		for _, r := range w.roots {
			r.watches = 0
		}
		w.publish()
		w.mu.Unlock()
	}()

	w.mu.Lock()
	for _, r := range w.roots {
		r.mode, r.reason, r.limit = "", "", false // decided again by the start scan
		if noEvents != "" {
			r.mode, r.reason = ModePoll, noEvents
		}
		r.next = time.Now() // the start scan
	}
	w.mu.Unlock()
	for range sinkWorkers {
		bg.Go(func() { w.handWorker(ctx) })
	}
	bg.Go(func() { w.eventWalker(ctx) })
	w.log.WithField("roots", len(w.roots)).Info("watcher started")

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		w.observeDue(ctx, &bg)
		w.mu.Lock()
		now := time.Now()
		for _, r := range w.roots {
			if !r.scanning && !r.next.After(now) && ctx.Err() == nil {
				r.scanning = true
				bg.Go(func() { w.backgroundScan(ctx, r) })
			}
		}
		wake := w.nextWake()
		w.publish()
		w.mu.Unlock()
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			w.log.Info("watcher stopped")
			return nil
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("watch events: channel closed")
			}
			w.handleEvent(ev)
			// handle a burst before looking at the timers again
			for n := 0; n < 1024; n++ {
				select {
				case ev, ok = <-events:
					if ok {
						w.handleEvent(ev)
						continue
					}
				default:
				}
				break
			}
		case err, ok := <-errs:
			if !ok {
				return fmt.Errorf("watch errors: channel closed")
			}
			w.mu.Lock()
			w.watchError(err)
			w.mu.Unlock()
		case <-w.wake:
		case <-timer.C:
		}
	}
}

// observeDue re-observes the candidates that are due: files in batches under the lock (one lstat
// each); folder units are walked in a goroutine of bg (an .ome.zarr has thousands of files), so
// that Run's loop goes back to the events at once.
func (w *Watcher) observeDue(ctx context.Context, bg *sync.WaitGroup) {
	for ctx.Err() == nil {
		w.mu.Lock()
		units, more := w.popDue(512)
		w.mu.Unlock()
		if len(units) > 0 {
			bg.Go(func() {
				dr := dirReaders.Get().(*dirReader)
				defer dirReaders.Put(dr)
				for _, u := range units {
					w.observeUnit(ctx, u.r, u.m, dr, false, &ScanStats{})
				}
			})
		}
		if !more {
			return
		}
	}
}

// backgroundScan runs a full scan of r for Run (watching its directories when r is event-driven)
// and schedules the next one.
func (w *Watcher) backgroundScan(ctx context.Context, r *root) {
	w.mu.Lock()
	first := r.lastScan.IsZero()
	w.mu.Unlock()
	var st ScanStats
	err := w.scanRoot(ctx, r, walkOpts{watch: true, probe: true, workers: scanWorkers}, &st)
	w.mu.Lock()
	r.scanning = false
	r.next = time.Now().Add(w.interval(r, err))
	if r.again {
		r.again = false
		r.next = time.Now()
	}
	if err == nil {
		entry := w.log.WithFields(logrus.Fields{
			"root": r.path, "mode": r.mode, "seen": st.Seen, "pending": r.pending,
			"already_ordered": st.AlreadyOrdered, "ignored": st.Ignored, "watches": r.watches, "took": st.Duration,
		})
		if first {
			entry.Info("root scanned")
		} else {
			entry.Debug("root rescanned")
		}
	}
	w.publish()
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// interval is the time to the next full scan of r. Caller holds mu.
func (w *Watcher) interval(r *root, scanErr error) time.Duration {
	if scanErr != nil || r.mode != ModeEvents {
		return w.cfg.PollInterval
	}
	j := 0.9 + 0.2*w.rng.Float64()
	return time.Duration(float64(w.cfg.RescanInterval) * j)
}

// nextWake is the earliest candidate observation or root rescan. Caller holds mu.
func (w *Watcher) nextWake() time.Time {
	wake := time.Now().Add(time.Hour)
	if len(w.queue) > 0 {
		if due := w.epoch.Add(time.Duration(w.queue[0].due)); due.Before(wake) {
			wake = due
		}
	}
	for _, r := range w.roots {
		if !r.scanning && r.next.Before(wake) {
			wake = r.next
		}
	}
	return wake
}

// decideMode picks events or poll for a root (once it exists). Caller holds mu.
func (w *Watcher) decideMode(r *root) error {
	if r.mode != "" {
		return nil
	}
	switch {
	case w.cfg.Mode == ModePoll:
		r.mode, r.reason = ModePoll, "watch.mode = poll"
	case w.cfg.Mode == ModeEvents:
		r.mode, r.reason = ModeEvents, "watch.mode = events"
	default:
		mode, reason, err := fsMode(r.path)
		if err != nil {
			return err
		}
		r.mode, r.reason = mode, reason
	}
	w.log.WithFields(logrus.Fields{"root": r.path, "mode": r.mode, "reason": r.reason}).Info("root mode decided")
	return nil
}

// rootOf returns the root that contains path.
func (w *Watcher) rootOf(path string) *root {
	for _, r := range w.roots {
		if path == r.path || strings.HasPrefix(path, r.path) && (r.path == "/" || path[len(r.path)] == '/') {
			return r
		}
	}
	return nil
}

// warnOnce logs msg at Warn the first time key is seen, at Debug afterwards. Caller holds mu.
func (w *Watcher) warnOnce(key string, entry *logrus.Entry, msg string) {
	if w.warned[key] {
		entry.Debug(msg)
		return
	}
	if len(w.warned) > 10000 {
		clear(w.warned)
	}
	w.warned[key] = true
	entry.Warn(msg)
}
