package watcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/rules"
)

// Talking to the Sink. No Sink method is ever called with mu held: settled candidates wait in
// their root's handq for one of sinkWorkers goroutines (or for Scan, which hands over what settles during
// it itself), and the walks ask about units found quiet between two holds of the lock. A slow
// Sink delays the units waiting on it, never event handling or the walks of other roots; a
// failing one loses nothing: the unit is observed again and retried with a growing delay.

// sinkWorkers is how many settled units are handed over at once.
const sinkWorkers = 4

// maxRetryDelay bounds the delay between two hand-overs of a unit the Sink failed on.
const maxRetryDelay = time.Minute

// ready hands a settled candidate to the Sink workers. Caller holds mu.
func (w *Watcher) ready(c *cand) {
	w.unschedule(c)
	c.busy = true
	c.root.handq = append(c.root.handq, c)
	w.handing++
	select {
	case w.handReady <- struct{}{}:
	default:
	}
}

// popHand takes the next settled candidate (nil when there is none). The roots take turns, so
// that the backlog of a large root (a start-up ordering a whole tree) does not hold back a unit
// dropped into another one.
func (w *Watcher) popHand() *cand {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.handing == 0 {
		return nil
	}
	var c *cand
	for i := range w.roots {
		r := w.roots[(w.handTurn+i)%len(w.roots)]
		if len(r.handq) > 0 {
			c = r.handq[0]
			r.handq[0] = nil
			r.handq = r.handq[1:]
			w.handTurn = (w.handTurn + i + 1) % len(w.roots)
			break
		}
	}
	if c == nil {
		return nil
	}
	w.handing--
	if w.handing > 0 { // wake another worker
		select {
		case w.handReady <- struct{}{}:
		default:
		}
	}
	return c
}

// handWorker hands settled candidates over until ctx is done.
func (w *Watcher) handWorker(ctx context.Context) {
	buf := make([]byte, hashChunk)
	for {
		c := w.popHand()
		if c == nil {
			select {
			case <-ctx.Done():
				return
			case <-w.handReady:
			}
			continue
		}
		w.handOver(ctx, c, buf, nil)
	}
}

// drain hands over every settled candidate waiting, in the caller's goroutine (Scan), counting
// into st.
func (w *Watcher) drain(ctx context.Context, buf []byte, st *ScanStats) {
	for ctx.Err() == nil {
		c := w.popHand()
		if c == nil {
			return
		}
		w.handOver(ctx, c, buf, st)
	}
}

// handResult is what a hand-over found out; finish applies it under the lock.
type handResult int

const (
	handSettled handResult = iota // the Sink took the unit
	handKnown                     // the Sink knew the unit already
	handChanged                   // the file changed while it was read: not settled after all
	handGone                      // the file vanished or cannot be read
	handNoMatch                   // the file matches its rule no more
	handRetry                     // the Sink failed: try again later
)

// handOver fingerprints a settled candidate (this is where a file is read, once per content),
// asks the Sink whether it is known and hands it over. It runs without the lock: while c is busy
// nobody else changes its fields (finish does, under the lock).
func (w *Watcher) handOver(ctx context.Context, c *cand, buf []byte, st *ScanStats) {
	fp, fpSig, askedSig := c.fp, c.fpSig, c.askedSig
	var err error
	var files []string
	res := func() handResult {
		if !c.folder && fpSig != c.sig {
			fp, err = fileFingerprint(c.path, c.sig, buf)
			switch {
			case errors.Is(err, errChanged):
				return handChanged
			case err != nil:
				return handGone
			}
			fpSig = c.sig
		}
		if askedSig != c.sig { // Known is asked once per content
			known, kerr := w.sink.Known(ctx, c.rule.Name, c.path, fp)
			if kerr != nil {
				err = fmt.Errorf("ask whether unit is known: %w", kerr)
				return handRetry
			}
			if known {
				return handKnown
			}
			askedSig = c.sig
		}
		var m rules.Match
		if c.folder {
			m, files = c.unit.match, c.unit.files
		} else {
			var ok bool
			m, ok, _ = w.set.Match(c.path) // the same answer as when it was found: rules do not change
			if !ok || m.Rule != c.rule {
				return handNoMatch
			}
			files = []string{c.path}
		}
		if serr := w.sink.Settled(ctx, Unit{Rule: c.rule, Match: m, Path: c.path, Files: files, Fingerprint: fp}); serr != nil {
			err = fmt.Errorf("hand over settled unit: %w", serr)
			return handRetry
		}
		return handSettled
	}()

	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.publish()
	c.busy = false
	c.fp, c.fpSig, c.askedSig = fp, fpSig, askedSig
	entry := w.log.WithFields(logrus.Fields{"rule": c.rule.Name, "path": c.path})
	switch res {
	case handChanged:
		c.touched = false
		w.touch(c)
		return
	case handGone:
		entry.WithError(err).Debug("cannot fingerprint pending file; dropped")
		c.touched = false
		w.dropPending(c)
		return
	case handNoMatch:
		entry.Warn("settled file no longer matches its rule; dropped")
		c.touched = false
		w.dropPending(c)
		return
	case handRetry:
		w.sinkFailed(c, entry.WithError(err))
		return
	}
	w.sinkAnswers()
	c.fails = 0
	w.remember(c.root, c.hash, c.sig, false)
	if res == handKnown {
		entry.Debug("unit already ordered")
		if st != nil {
			st.AlreadyOrdered++
		}
	} else {
		entry.WithFields(logrus.Fields{"files": len(files), "fingerprint": fp}).Debug("unit settled")
		w.settled++
		if st != nil {
			st.Settled++
		}
	}
	if c.touched { // something happened while it was handed over: look again (and ask again)
		c.touched, c.askedSig = false, 0
		w.touch(c)
		return
	}
	w.dropPending(c)
}

// sinkFailed schedules a candidate the Sink failed on for another observation and hand-over,
// after its settle time (at least a second), doubled for each further failure in a row up to
// maxRetryDelay. The first failure after a success is a warning, the others Debug. Caller holds mu.
func (w *Watcher) sinkFailed(c *cand, entry *logrus.Entry) {
	w.sinkDown.Failed(entry, "cannot hand a unit to the database; retrying every unit until it answers")
	c.root.errors++
	c.root.lastErr = "hand over " + c.path + ": " + fmt.Sprint(entry.Data[logrus.ErrorKey])
	c.touched = false
	if c.fails < 16 {
		c.fails++
	}
	backoff := retry.Policy{Initial: max(c.settle(), time.Second), Max: maxRetryDelay}
	w.schedule(c, w.now()+int64(backoff.Delay(int(c.fails))))
}

// sinkAnswers notes a successful hand-over (logged once after failures). Caller holds mu.
func (w *Watcher) sinkAnswers() {
	if w.sinkDown.Reset() {
		w.log.Info("the database answers again")
	}
}

// probe is a unit found quiet for its settle, about to be looked up by signature.
type probe struct {
	h      uint64
	path   string
	rule   *rules.Compiled
	size   int64
	mtime  int64
	known  bool
	answer bool // the Sink answered
}

// askSignatures asks the Sink, without the lock, whether each quiet file was ordered with its
// size and mtime already. An error only means "not known yet": the unit becomes a candidate and
// is asked again, with its full fingerprint, when it settles. One walk at a time asks (the others
// go on listing meanwhile), so a start-up on an ordered tree costs the database one connection,
// not one per walker: on SQLite each holds its own page cache.
func (w *Watcher) askSignatures(ctx context.Context, ps []probe) {
	select {
	case w.lookups <- struct{}{}:
		defer func() { <-w.lookups }()
	case <-ctx.Done():
		return
	}
	for i := range ps {
		p := &ps[i]
		if ctx.Err() != nil {
			return
		}
		known, err := w.sink.KnownSignature(ctx, p.rule.Name, p.path, fileSignature(p.size, p.mtime))
		if err != nil {
			w.log.WithError(err).WithFields(logrus.Fields{"rule": p.rule.Name, "path": p.path}).Debug("cannot ask whether unit is known")
			continue
		}
		p.known, p.answer = known, true
	}
}

// applyProbes records the answers of askSignatures. Caller holds mu.
func (w *Watcher) applyProbes(r *root, ps []probe, st *ScanStats) {
	for i := range ps {
		p := &ps[i]
		sig := fileSig(p.size, p.mtime)
		if c := w.pending[p.h]; c != nil && c.path == p.path { // found by an event meanwhile
			w.observedFile(c, p.size, p.mtime)
			continue
		}
		if p.known {
			w.remember(r, p.h, sig, false)
			st.AlreadyOrdered++
			continue
		}
		asked := uint64(0)
		if p.answer {
			asked = sig
		}
		w.newFileCand(r, p.h, p.path, p.rule, p.size, p.mtime, asked)
	}
}
