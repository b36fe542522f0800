// Package watcher finds import units in the rules' drop folders and reports each one once it has
// settled. It knows nothing about OMERO or orders: a Sink (the agent, on top of the database)
// decides what a settled unit becomes.
//
// How it works:
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
//   - An event-queue overflow (fsnotify.ErrEventOverflow) or another watch error triggers a full
//     rescan. Running out of inotify watches (ENOSPC/EMFILE) switches that root to polling, logs the
//     sysctl to raise once, and shows in Health. Nothing here is fatal to Run.
//   - A rescan of an unchanged tree only lists (getdents) and stats (fstatat): a per-path cache maps
//     (size, mtime) to "already known" or "not a unit", so Sink.Known is asked once per content and
//     nothing is hashed twice. The cache holds 16 bytes of hashes per file seen (FNV-64 of the path;
//     a collision, about 1 in 10^8 for a million files, would hide one file until its next change);
//     entries of files that a full scan no longer finds are dropped after it. Everything else is
//     proportional to what is pending.
//   - After a restart the cache is empty. A unit found quiet for its rule's settle already (by
//     its newest mtime) is fingerprinted and looked up with Sink.Known at once instead of becoming
//     a candidate, so starting on a large, already ordered tree holds no candidate per unit (the
//     fingerprint would be taken at settle time anyway). The mtime never settles a unit: one that
//     is not known waits for two observations spanning settle like any other, keeping its
//     fingerprint and the Sink's answer.
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
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// Watch modes.
const (
	ModeAuto   = "auto"
	ModeEvents = "events"
	ModePoll   = "poll"
)

// Defaults of Config.
const (
	DefaultRescanInterval = time.Hour
	DefaultPollInterval   = 30 * time.Second
	DefaultEventBuffer    = 4096
)

// WatchLimitHint is the advice logged and shown in Health when inotify watches run out.
const WatchLimitHint = "sysctl fs.inotify.max_user_watches=524288"

// Sentinel errors.
var (
	ErrConfig  = errors.New("invalid watcher config")
	ErrRunning = errors.New("watcher is already running")
)

// Config tunes the watcher. Zero values take the defaults.
type Config struct {
	Mode           string        // auto (default) | events | poll, for every root
	RescanInterval time.Duration // full rescan of event-driven roots (default 1h, jittered ±10 %)
	PollInterval   time.Duration // full rescan of poll-only roots, and retry of missing roots (default 30s)
	MinObserve     time.Duration // optional lower bound between two observations of one candidate
	EventBuffer    uint          // fsnotify event channel buffer (default 4096)
	// TrustMtime lets a unit whose newest mtime is older than its settle count as settled at its
	// first observation. Meant for one-shot scans (`omero-adi scan`); keep it off for the daemon:
	// copies that preserve mtimes (cp -p, rsync -a) would look settled while still being written.
	TrustMtime bool
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
// called one at a time, from Run's goroutine or Scan's caller, while the watcher's state is locked:
// they must not call Scan (Health is fine). A slow Sink delays event handling, never loses events
// (an overflow turns into a rescan).
type Sink interface {
	// Known reports whether a unit with this rule, path and fingerprint was already ordered; it is
	// asked once per content (the watcher caches the answer per path, size and mtime).
	Known(ctx context.Context, rule, path, fingerprint string) (bool, error)
	// Settled is called once per settled unit that Known did not report. An error is retried later.
	Settled(ctx context.Context, u Unit) error
}

// ScanStats counts what one full scan saw.
type ScanStats struct {
	Seen           int           `json:"seen"`            // units observed (files and folder units)
	Settled        int           `json:"settled"`         // units handed to Sink.Settled
	Pending        int           `json:"pending"`         // units waiting to settle after the scan
	AlreadyOrdered int           `json:"already_ordered"` // units the cache or Sink.Known reported
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

// Watcher watches the roots of a rule set. New starts nothing; Run blocks. The fields below mu are
// owned by whoever holds mu (Run's loop or Scan).
type Watcher struct {
	cfg  Config
	set  *rules.Set
	sink Sink
	log  *logrus.Entry

	running atomic.Bool

	mu       sync.Mutex
	roots    []*root
	pending  map[uint64]*cand
	queue    candHeap
	known    map[uint64]knownEntry // hash(path) -> what was decided for which content
	watched  map[string]*root      // watched directory -> its root
	unitDirs map[string]bool       // watched folder units (top level only)
	fsw      *fsnotify.Watcher
	dr       *dirReader
	hbuf     []byte // fingerprint read buffer
	warned   map[string]bool
	limitLog bool
	overLog  bool
	settled  int64
	overflow int64
	rng      *rand.Rand
	epoch    time.Time // zero of the candidates' monotonic clock

	// addWatch, when set, replaces fsw.Add (tests inject ENOSPC with it). Called with mu held.
	addWatch func(path string) error
	// onStart runs in Run after the inotify instance exists, before the first scan (tests).
	onStart func()

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
	pending     int
	errors      int
	lastErr     string
	missingWarn bool
}

// New validates the configuration; it starts nothing.
func New(cfg Config, set *rules.Set, sink Sink, log *logrus.Entry) (*Watcher, error) {
	switch cfg.Mode {
	case "":
		cfg.Mode = ModeAuto
	case ModeAuto, ModeEvents, ModePoll:
	default:
		return nil, fmt.Errorf("%w: watch.mode: unknown mode %q (auto, events or poll)", ErrConfig, cfg.Mode)
	}
	for _, d := range []struct {
		key string
		v   *time.Duration
		def time.Duration
	}{
		{"watch.rescan_interval", &cfg.RescanInterval, DefaultRescanInterval},
		{"watch.poll_interval", &cfg.PollInterval, DefaultPollInterval},
		{"watch.min_observe", &cfg.MinObserve, 0},
	} {
		if *d.v < 0 {
			return nil, fmt.Errorf("%w: %s: negative duration %s", ErrConfig, d.key, *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = DefaultEventBuffer
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
		cfg:      cfg,
		set:      set,
		sink:     sink,
		log:      log.WithField("component", "watcher"),
		pending:  map[uint64]*cand{},
		known:    map[uint64]knownEntry{},
		watched:  map[string]*root{},
		unitDirs: map[string]bool{},
		dr:       newDirReader(),
		warned:   map[string]bool{},
		rng:      rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x61646977)),
		epoch:    time.Now(),
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
// that settle during it (see Config.TrustMtime, or a second Scan after the settle time) go to the
// Sink. Pending units are fingerprinted and checked with Sink.Known at once, so that one scan
// counts what is already ordered. It may be called while Run runs (it waits for Run's current
// step).
func (w *Watcher) Scan(ctx context.Context) (ScanStats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publish()
	start := time.Now()
	var st ScanStats
	var errs []error
	for _, r := range w.roots {
		if err := w.scanRoot(ctx, r, false, &st); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	w.askKnown(ctx, &st)
	st.Pending = len(w.pending)
	st.Duration = time.Since(start)
	if err := ctx.Err(); err != nil {
		return st, err
	}
	return st, errors.Join(errs...)
}

// Run watches until ctx is done. It returns nil on cancellation; per-item problems are logged.
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
	defer func() {
		w.mu.Lock()
		w.fsw = nil
		w.watched = map[string]*root{}
		w.unitDirs = map[string]bool{}
		for _, r := range w.roots {
			r.watches = 0
		}
		w.publish()
		w.mu.Unlock()
	}()
	if w.onStart != nil {
		w.onStart()
	}

	w.mu.Lock()
	for _, r := range w.roots {
		r.mode, r.reason, r.limit = "", "", false // decided again by the start scan
		if noEvents != "" {
			r.mode, r.reason = ModePoll, noEvents
		}
		r.next = time.Now() // the start scan
	}
	w.mu.Unlock()
	w.log.WithField("roots", len(w.roots)).Info("watcher started")

	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		w.mu.Lock()
		w.runDue(ctx)
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
			w.mu.Lock()
			w.handleEvent(ctx, ev)
			// drain a burst under one lock
			for n := 0; n < 1024; n++ {
				select {
				case ev, ok = <-events:
					if ok {
						w.handleEvent(ctx, ev)
						continue
					}
				default:
				}
				break
			}
			w.mu.Unlock()
		case err, ok := <-errs:
			if !ok {
				return fmt.Errorf("watch errors: channel closed")
			}
			w.mu.Lock()
			w.watchError(err)
			w.mu.Unlock()
		case <-timer.C:
		}
	}
}

// watchError handles an error from the inotify reader: always a full rescan of event roots.
func (w *Watcher) watchError(err error) {
	now := time.Now()
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		w.overflow++
		entry := w.log.WithField("hint", "raise fs.inotify.max_queued_events")
		if !w.overLog {
			w.overLog = true
			entry.Warn("inotify event queue overflowed, rescanning")
		} else {
			entry.Debug("inotify event queue overflowed, rescanning")
		}
	} else {
		w.log.WithError(err).Warn("inotify error, rescanning")
	}
	for _, r := range w.roots {
		if r.mode == ModeEvents {
			r.next = now
		}
	}
}

// nextWake is the earliest candidate observation or root rescan.
func (w *Watcher) nextWake() time.Time {
	wake := time.Now().Add(time.Hour)
	if len(w.queue) > 0 {
		if due := w.epoch.Add(time.Duration(w.queue[0].due)); due.Before(wake) {
			wake = due
		}
	}
	for _, r := range w.roots {
		if r.next.Before(wake) {
			wake = r.next
		}
	}
	return wake
}

// runDue re-observes due candidates and rescans due roots.
func (w *Watcher) runDue(ctx context.Context) {
	now := time.Now()
	mono := w.now()
	var st ScanStats
	for len(w.queue) > 0 && w.queue[0].due <= mono && ctx.Err() == nil {
		c := w.queue[0]
		w.unschedule(c)
		w.reobserve(ctx, c, &st)
	}
	for _, r := range w.roots {
		if r.next.After(now) || ctx.Err() != nil {
			continue
		}
		var rs ScanStats
		first := r.lastScan.IsZero()
		err := w.scanRoot(ctx, r, true, &rs)
		r.next = time.Now().Add(w.interval(r, err))
		if err == nil {
			entry := w.log.WithFields(logrus.Fields{
				"root": r.path, "mode": r.mode, "seen": rs.Seen, "settled": rs.Settled, "pending": len(w.pending),
				"already_ordered": rs.AlreadyOrdered, "ignored": rs.Ignored, "watches": r.watches, "took": rs.Duration,
			})
			if first {
				entry.Info("root scanned")
			} else {
				entry.Debug("root rescanned")
			}
		}
	}
}

// interval is the time to the next full scan of r.
func (w *Watcher) interval(r *root, scanErr error) time.Duration {
	if scanErr != nil || r.mode != ModeEvents {
		return w.cfg.PollInterval
	}
	j := 0.9 + 0.2*w.rng.Float64()
	return time.Duration(float64(w.cfg.RescanInterval) * j)
}

// decideMode picks events or poll for a root (once it exists).
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

// watchDir adds an inotify watch on dir when r is event-driven.
func (w *Watcher) watchDir(r *root, dir string, unit bool) {
	if r.mode != ModeEvents || w.fsw == nil {
		return
	}
	if _, ok := w.watched[dir]; ok {
		return
	}
	var err error
	if w.addWatch != nil {
		err = w.addWatch(dir)
	} else {
		err = w.fsw.Add(dir)
	}
	switch {
	case err == nil:
		w.watched[dir] = r
		r.watches++
		if unit {
			w.unitDirs[dir] = true
		}
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EMFILE):
		w.watchLimit(r, err)
	case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		// gone meanwhile
	default:
		r.errors++
		r.lastErr = fmt.Sprintf("watch %s: %v", dir, err)
		w.warnOnce("watch:"+dir, w.log.WithError(err).WithField("path", dir), "cannot watch directory; it is covered by rescans")
		r.next = time.Now() // a full rescan after a watch failure
	}
}

// watchLimit switches r to polling after inotify ran out of watches.
func (w *Watcher) watchLimit(r *root, err error) {
	r.mode, r.limit = ModePoll, true
	r.reason = fmt.Sprintf("inotify watch limit reached (%v): polling; raise it with %s", err, WatchLimitHint)
	entry := w.log.WithError(err).WithFields(logrus.Fields{"root": r.path, "hint": WatchLimitHint})
	if !w.limitLog {
		w.limitLog = true
		entry.Warn("out of inotify watches, root switched to polling")
	} else {
		entry.Info("out of inotify watches, root switched to polling")
	}
	for dir, wr := range w.watched {
		if wr == r {
			_ = w.fsw.Remove(dir)
			delete(w.watched, dir)
			delete(w.unitDirs, dir)
		}
	}
	r.watches = 0
	r.next = time.Now() // a full rescan after a watch failure
}

// unwatch forgets a watched directory that was removed or renamed.
func (w *Watcher) unwatch(dir string) {
	r, ok := w.watched[dir]
	if !ok {
		return
	}
	if w.fsw != nil {
		_ = w.fsw.Remove(dir)
	}
	delete(w.watched, dir)
	delete(w.unitDirs, dir)
	r.watches--
}

// unwatchTree forgets a watched directory and every watched directory below it.
func (w *Watcher) unwatchTree(dir string) {
	w.unwatch(dir)
	prefix := dir + "/"
	for p := range w.watched {
		if strings.HasPrefix(p, prefix) {
			w.unwatch(p)
		}
	}
}

// warnOnce logs msg at Warn the first time key is seen, at Debug afterwards.
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

// handleEvent treats an inotify event as a hint about one path.
func (w *Watcher) handleEvent(ctx context.Context, ev fsnotify.Event) {
	path := filepath.Clean(ev.Name)
	r := w.rootOf(path)
	if r == nil || r.mode != ModeEvents {
		return
	}
	now := time.Now()
	var st ScanStats
	if ev.Has(fsnotify.Remove) {
		w.unwatch(path) // a pending unit finds out at its next observation
	}
	if path == r.path && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
		w.unwatchTree(path)
		r.next = now // the scan finds it missing and retries every PollInterval until it is back
		return
	}
	if _, watched := w.watched[path]; watched && ev.Has(fsnotify.Rename) {
		// A renamed directory keeps its inotify watches, registered under the old paths: drop them
		// all; its new name arrives as a Create and is walked and watched again.
		w.unwatchTree(path)
	}
	parent := filepath.Dir(path)
	if w.unitDirs[parent] {
		w.touchUnit(ctx, r, parent, filepath.Base(path), &st)
		return
	}
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Chmod) {
		return
	}
	h := hashString(path)
	if c := w.pending[h]; c != nil && c.path == path {
		w.touch(c)
		return
	}
	var s unix.Stat_t
	if err := unix.Lstat(path, &s); err != nil {
		return
	}
	switch s.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if !ev.Has(fsnotify.Create) {
			return
		}
		w.dirFound(ctx, r, path, true, &st)
	case unix.S_IFREG:
		if rules.IgnoredName(filepath.Base(path)) {
			return
		}
		w.fileFound(ctx, r, h, path, s.Size, mtimeOf(&s), &st)
	}
}

// dirFound classifies a directory below a descended one and walks it accordingly.
func (w *Watcher) dirFound(ctx context.Context, r *root, dir string, watch bool, st *ScanStats) {
	role := w.set.Dir(dir)
	switch {
	case role.Unit != nil:
		if watch {
			w.watchDir(r, dir, true)
		}
		w.unitFound(ctx, r, *role.Unit, st)
		if role.Descend {
			w.scanDir(ctx, r, dir, watch, st)
		}
	case role.Descend:
		w.scanDir(ctx, r, dir, watch, st)
	default:
		st.Ignored++
		entry := w.log.WithFields(logrus.Fields{"path": dir, "why": role.Why})
		if role.Denied {
			w.warnOnce("deny:"+dir, entry, "folder names no allowed user or group; ignored")
		} else {
			entry.Debug("folder ignored")
		}
	}
}

// touchUnit handles activity at the top level of a watched folder unit.
func (w *Watcher) touchUnit(ctx context.Context, r *root, unit, name string, st *ScanStats) {
	c := w.pending[hashString(unit)]
	if c != nil && c.path == unit && name != c.rule.Marker {
		w.touch(c)
		return
	}
	m, ok, _ := w.set.Match(unit)
	if !ok || m.Rule.Unit != rules.UnitFolder || m.UnitPath != unit {
		return
	}
	w.unitFound(ctx, r, m, st)
}

// scanRoot runs a full scan of one root.
func (w *Watcher) scanRoot(ctx context.Context, r *root, watch bool, st *ScanStats) error {
	start := time.Now()
	var s unix.Stat_t
	err := unix.Stat(r.path, &s)
	if err == nil && s.Mode&unix.S_IFMT != unix.S_IFDIR {
		err = unix.ENOTDIR
	}
	if err == nil {
		err = w.decideMode(r)
	}
	if err != nil {
		r.errors++
		r.lastErr = fmt.Sprintf("scan %s: %v", r.path, err)
		entry := w.log.WithError(err).WithField("root", r.path)
		if !r.missingWarn {
			r.missingWarn = true
			entry.Warn("cannot scan root; retrying")
		} else {
			entry.Debug("cannot scan root; retrying")
		}
		return fmt.Errorf("scan root %s: %w", r.path, err)
	}
	r.missingWarn = false
	var rs ScanStats
	r.gen++
	w.scanDir(ctx, r, r.path, watch, &rs)
	if ctx.Err() == nil {
		w.sweep(r)
	}
	r.lastScan = time.Now()
	r.lastDur = r.lastScan.Sub(start)
	rs.Duration = r.lastDur
	st.Seen += rs.Seen
	st.Settled += rs.Settled
	st.AlreadyOrdered += rs.AlreadyOrdered
	st.Ignored += rs.Ignored
	st.Duration += rs.Duration
	return ctx.Err()
}

// scanDir watches (when asked) and lists one descended directory, observes its files, and
// recurses into its subdirectories.
func (w *Watcher) scanDir(ctx context.Context, r *root, dir string, watch bool, st *ScanStats) {
	if ctx.Err() != nil {
		return
	}
	if watch {
		w.watchDir(r, dir, false) // watch first, then list: nothing created in between is missed
	}
	fd, err := openDir(dir, dir != r.path)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ELOOP) && !errors.Is(err, unix.ENOTDIR) {
			r.errors++
			r.lastErr = fmt.Sprintf("list %s: %v", dir, err)
			w.warnOnce("list:"+dir, w.log.WithError(err).WithField("path", dir), "cannot list directory")
		}
		return
	}
	var subdirs []string
	dh := fnvAdd(fnvOffset, dir)
	if dir != "/" {
		dh = fnvAdd(dh, "/")
	}
	err = w.dr.each(fd, func(name []byte, namePtr *byte, typ uint8) error {
		if rules.IgnoredName(bstr(name)) {
			st.Ignored++
			return nil
		}
		switch typ {
		case unix.DT_DIR:
			subdirs = append(subdirs, string(name))
			return nil
		case unix.DT_REG, unix.DT_UNKNOWN:
		default:
			st.Ignored++ // symlinks, sockets, devices
			return nil
		}
		var s unix.Stat_t
		if fstatat(fd, name, namePtr, &s) != nil {
			return nil // gone meanwhile
		}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFREG:
		case unix.S_IFDIR:
			subdirs = append(subdirs, string(name))
			return nil
		default:
			st.Ignored++
			return nil
		}
		if s.Size == 0 {
			st.Ignored++
			return nil
		}
		h := fnvAddBytes(dh, name)
		if c := w.pending[h]; c != nil && samePath(c.path, dir, name) {
			st.Seen++
			w.observedFile(ctx, c, s.Size, mtimeOf(&s), st)
			return nil
		}
		if ignored, ok := w.cached(r, h, fileSig(s.Size, mtimeOf(&s))); ok {
			if ignored {
				st.Ignored++
			} else {
				st.Seen++
				st.AlreadyOrdered++
			}
			return nil
		}
		w.fileFound(ctx, r, h, joinPath(dir, bstr(name)), s.Size, mtimeOf(&s), st)
		return nil
	})
	unix.Close(fd)
	if err != nil {
		r.errors++
		r.lastErr = fmt.Sprintf("list %s: %v", dir, err)
		w.warnOnce("list:"+dir, w.log.WithError(err).WithField("path", dir), "cannot list directory")
	}
	for _, sd := range subdirs {
		w.dirFound(ctx, r, joinPath(dir, sd), watch, st)
	}
}

// fileFound handles a regular file that is not pending and not in the cache.
func (w *Watcher) fileFound(ctx context.Context, r *root, h uint64, path string, size, mtime int64, st *ScanStats) {
	if size == 0 {
		st.Ignored++
		return
	}
	sig := fileSig(size, mtime)
	if ignored, ok := w.cached(r, h, sig); ok {
		if ignored {
			st.Ignored++
		} else {
			st.Seen++
			st.AlreadyOrdered++
		}
		return
	}
	m, ok, why, denied := w.set.MatchDenied(path)
	if !ok || m.Rule.Unit != rules.UnitFile {
		w.remember(r, h, sig, true)
		st.Ignored++
		entry := w.log.WithFields(logrus.Fields{"path": path, "why": why})
		if denied {
			w.warnOnce("deny:"+path, entry, "file names no allowed user or group; ignored")
		} else if ok {
			entry.Debug("file directly in a folder rule's folder; ignored")
		} else {
			entry.Debug("file ignored")
		}
		return
	}
	st.Seen++
	c := &cand{path: path, hash: h, rule: m.Rule, root: r, idx: -1}
	if w.knownAtSight(ctx, c, size, mtime) {
		w.remember(r, h, sig, false)
		st.AlreadyOrdered++
		return
	}
	w.addPending(c)
	w.observedFile(ctx, c, size, mtime, st)
}

// knownAtSight asks the Sink at once about a file that has been quiet for its rule's settle
// already (its mtime says so), before it becomes a pending candidate: after a restart the cache
// is empty and every file of the tree is found again, and a tree that is ordered already then
// costs no candidate per file, only one fingerprint each, as it would when settling. The mtime is
// only trusted to skip files that are surely still being written; it never settles anything: a
// file that is not known stays a candidate and settles as any other (its fingerprint and the
// Sink's answer are kept, so it is neither hashed nor asked about twice for this content).
func (w *Watcher) knownAtSight(ctx context.Context, c *cand, size, mtime int64) bool {
	if time.Since(time.Unix(0, mtime)) < c.settle() {
		return false
	}
	if w.hbuf == nil {
		w.hbuf = make([]byte, hashChunk)
	}
	sig := fileSig(size, mtime)
	fp, err := fileFingerprint(c.path, sig, w.hbuf)
	if err != nil {
		return false // changed or gone meanwhile: observed as a candidate
	}
	c.fp, c.fpSig = fp, sig
	known, asked := w.askAtSight(ctx, c.rule, c.path, fp)
	c.asked = asked
	return known
}

// askAtSight asks the Sink whether a unit found quiet is ordered already. asked is true when the
// Sink answered no (an error is only logged: the unit is asked about again when it settles).
func (w *Watcher) askAtSight(ctx context.Context, rule *rules.Compiled, path, fp string) (known, asked bool) {
	known, err := w.sink.Known(ctx, rule.Name, path, fp)
	if err != nil {
		w.log.WithError(err).WithFields(logrus.Fields{"rule": rule.Name, "path": path}).Debug("cannot ask whether unit is known")
		return false, false
	}
	if known && w.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		w.log.WithFields(logrus.Fields{"rule": rule.Name, "path": path}).Debug("unit already ordered")
	}
	return known, !known
}

func joinPath(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func samePath(p, dir string, name []byte) bool {
	return len(p) == len(dir)+1+len(name) && p[:len(dir)] == dir && p[len(dir)] == '/' && p[len(dir)+1:] == string(name)
}

func mtimeOf(s *unix.Stat_t) int64 { return s.Mtim.Sec*1e9 + s.Mtim.Nsec }
