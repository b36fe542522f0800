package watcher

import (
	"container/heap"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/omero-adi/omero-adi/rules"
)

// The settle state machine. A pending unit (cand) is observed (size and mtime of a file, or the
// walk of a folder unit: no content is read) and scheduled for its next observation; once its
// signature stayed the same across its rule's settle, or its marker exists, it is ready: handed
// to the Sink workers (sink.go), which fingerprint it and talk to the Sink without the lock.
// While it is with them (busy), observations and events only mark it touched; when it comes back
// touched, it is observed again instead of being dropped.

// cand is a pending unit: observed, not yet settled. It is kept small, as every file of a new
// tree is one until it settles: a file's rules.Match (with its map of variables) is made again
// when the unit is handed over, only a folder unit keeps its match and its last walk.
type cand struct {
	path  string
	hash  uint64
	rule  *rules.Compiled
	root  *root
	unit  *unitState // folder units only
	sig   uint64     // signature of the last observation (0: none yet)
	fpSig uint64     // the signature a file's fp was taken for
	// askedSig is the signature the Sink last answered "not known" for (at sight or when
	// settling): the Sink is asked once per content.
	askedSig uint64
	since    int64 // times on the watcher's monotonic clock (see Watcher.now)
	last     int64
	due      int64
	idx      int // in the queue; -1 when not scheduled
	// fp is the fingerprint: a folder unit's from its last walk, a file's for signature fpSig.
	fp      string
	fails   uint8 // hand-overs failed in a row (the retry backs off)
	folder  bool
	busy    bool // with a Sink worker: only the worker's finish changes it (and touched)
	touched bool // an event or a changed observation arrived while busy
}

// unitState is what a folder unit's candidate keeps: its match and its last walk.
type unitState struct {
	match  rules.Match
	files  []string
	marker bool
}

func (c *cand) settle() time.Duration { return c.rule.Settle }

// candHeap orders candidates by due time.
type candHeap []*cand

func (h candHeap) Len() int           { return len(h) }
func (h candHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h candHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].idx = i; h[j].idx = j }
func (h *candHeap) Push(x any)        { c := x.(*cand); c.idx = len(*h); *h = append(*h, c) }
func (h *candHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.idx = -1
	return c
}

// The methods below are called with mu held.

// newFileCand makes a file found for the first time a pending candidate and observes it.
func (w *Watcher) newFileCand(r *root, h uint64, path string, rule *rules.Compiled, size, mtime int64, askedSig uint64) {
	c := &cand{path: path, hash: h, rule: rule, root: r, idx: -1, askedSig: askedSig}
	w.addPending(c)
	w.observedFile(c, size, mtime)
}

func (w *Watcher) addPending(c *cand) {
	w.pending[c.hash] = c
	c.root.pending++
}

func (w *Watcher) dropPending(c *cand) {
	if c.busy {
		c.touched = true // the worker's finish decides
		return
	}
	if w.pending[c.hash] == c {
		delete(w.pending, c.hash)
		c.root.pending--
	}
	w.unschedule(c)
}

func (w *Watcher) schedule(c *cand, at int64) {
	if w.cfg.MinObserve > 0 {
		if min := c.last + int64(w.cfg.MinObserve); at < min {
			at = min
		}
	}
	c.due = at
	if c.idx >= 0 {
		heap.Fix(&w.queue, c.idx)
	} else {
		heap.Push(&w.queue, c)
	}
	if c.idx == 0 { // the earliest now: Run's loop sets its timer again
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (w *Watcher) unschedule(c *cand) {
	if c.idx >= 0 {
		heap.Remove(&w.queue, c.idx)
	}
}

// touch records an event on a pending unit: it changed now, so the quiet period restarts.
func (w *Watcher) touch(c *cand) {
	if c.busy {
		c.touched = true
		return
	}
	now := w.now()
	c.since = now
	w.schedule(c, now+int64(c.settle()))
}

// dueUnit is a folder unit due for its next walk.
type dueUnit struct {
	r *root
	m rules.Match
}

// popDue takes up to max due candidates off the queue: files are observed at once (one lstat
// each), folder units are returned to be walked without the lock.
func (w *Watcher) popDue(max int) (units []dueUnit, more bool) {
	mono := w.now()
	for n := 0; len(w.queue) > 0 && w.queue[0].due <= mono; n++ {
		if n == max {
			return units, true
		}
		c := w.queue[0]
		w.unschedule(c)
		if c.folder {
			units = append(units, dueUnit{c.root, c.unit.match})
			continue
		}
		var s unix.Stat_t
		if err := unix.Lstat(c.path, &s); err != nil || s.Mode&unix.S_IFMT != unix.S_IFREG {
			w.log.WithFields(logrus.Fields{"path": c.path, "rule": c.rule.Name}).Debug("pending file gone")
			w.dropPending(c)
			continue
		}
		w.observedFile(c, s.Size, mtimeOf(&s))
	}
	return units, false
}

// observedFile applies one observation (size, mtime) of a file candidate.
func (w *Watcher) observedFile(c *cand, size, mtime int64) {
	if size == 0 {
		w.dropPending(c) // empty: not a unit (yet); a write event or rescan brings it back
		return
	}
	w.observed(c, fileSig(size, mtime), mtime, false)
}

// observed applies one observation with signature sig to a candidate and hands it to the Sink
// workers when it settled, schedules it, or (an empty folder unit that stayed empty) drops it.
func (w *Watcher) observed(c *cand, sig uint64, newest int64, empty bool) {
	if c.busy {
		if sig != c.sig {
			c.touched = true
		}
		return
	}
	now := w.now()
	if sig != c.sig {
		first := c.sig == 0
		c.sig, c.since = sig, now
		if first && w.cfg.TrustMtime && newest > 0 {
			if age := time.Since(time.Unix(0, newest)); age > 0 {
				c.since = now - int64(age)
			}
		}
	}
	c.last = now
	switch {
	case c.folder && c.unit.marker && !empty:
		w.ready(c)
	case now-c.since >= int64(c.settle()):
		if empty {
			w.dropPending(c)
			return
		}
		w.ready(c)
	default:
		w.schedule(c, c.since+int64(c.settle()))
	}
}

// quiet reports whether a unit whose newest mtime is mtime has been unchanged for settle: only
// such a unit can have been ordered already with this content.
func quiet(mtime int64, settle time.Duration) bool {
	return time.Since(time.Unix(0, mtime)) >= settle
}
