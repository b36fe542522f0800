// Package retry holds the one backoff loop of the agent and the one way a streak of failures is
// logged: a retried failure at Warn once, then at Debug, giving up at Error.
//
// Do retries a call that blocks its caller (the OMERO login, a container run whose bind source
// is busy, an order's final database writes); Policy.Delay alone serves a caller that schedules
// its own retries (the watcher's hand-over of a unit). Quiet logs a streak of failures, however
// it is retried. There is no jitter: each loop retries one thing of one agent.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Policy says how often and how patiently a call is retried. The wait after the n-th failed try
// is Initial·2^(n-1), bounded by Max.
type Policy struct {
	// Attempts bounds the tries in all (the first one included); 0 or less: no bound, Do
	// retries until the call succeeds, fails permanently or its context ends.
	Attempts int
	// Initial is the wait after the first failed try.
	Initial time.Duration
	// Max bounds every wait; 0: no bound.
	Max time.Duration
	// Retrying, if set, is called after a failed try that will be retried, before the wait:
	// attempt is the number of the failed try (from 1), wait how long Do waits before the next.
	// Callers log here (with a Quiet) and undo what the failed try left behind.
	Retrying func(attempt int, wait time.Duration, err error)
}

// Delay is the wait after the attempt-th failed try (attempt from 1).
func (p Policy) Delay(attempt int) time.Duration {
	d := p.Initial
	for i := 1; i < attempt && d > 0 && (p.Max <= 0 || d < p.Max); i++ {
		if d > math.MaxInt64/2 {
			d = math.MaxInt64
			break
		}
		d *= 2
	}
	if p.Max > 0 {
		d = min(d, p.Max)
	}
	return d
}

// Do calls try (with the number of the try, from 1) until it returns nil or a Stop error, the
// policy's attempts are spent, or ctx ends. The first try is always made, even when ctx has
// ended already; ctx only ends the waits between tries.
//
// It returns nil; the error given to Stop (or the error that wraps a Stop); the last error once
// the attempts are spent; or, when ctx ends before the next try, an error that wraps both
// ctx.Err() and the last error of try.
func Do(ctx context.Context, p Policy, try func(attempt int) error) error {
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return nil
		}
		if s, ok := err.(*stop); ok {
			return s.err
		}
		if s := (*stop)(nil); errors.As(err, &s) {
			return err // a Stop inside a wrapping error: keep the wrapping
		}
		if p.Attempts > 0 && attempt >= p.Attempts {
			return err
		}
		if ctx.Err() != nil {
			return stopped(ctx, err)
		}
		wait := p.Delay(attempt)
		if p.Retrying != nil {
			p.Retrying(attempt, wait, err)
		}
		if serr := Sleep(ctx, wait); serr != nil {
			return stopped(ctx, err)
		}
	}
}

// stopped is Do's error when ctx ended before the next try.
func stopped(ctx context.Context, last error) error {
	return fmt.Errorf("%w (last try: %w)", ctx.Err(), last)
}

// Sleep waits d, or until ctx ends (then it returns ctx.Err()).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Stop marks err as not worth retrying: Do returns err at once. Stop(nil) is nil.
func Stop(err error) error {
	if err == nil {
		return nil
	}
	return &stop{err}
}

type stop struct{ err error }

func (s *stop) Error() string { return s.err.Error() }
func (s *stop) Unwrap() error { return s.err }

// Quiet logs a streak of failures of one thing: the first failure at Warn, the others at
// Debug, until Reset ends the streak. Its zero value is ready; it is safe for concurrent use
// (one streak shared by every caller).
type Quiet struct{ failing atomic.Bool }

// Failed logs one failure with msg on entry: at Warn if it starts a streak, else at Debug. It
// reports whether it started one.
func (q *Quiet) Failed(entry *logrus.Entry, msg string) (first bool) {
	if q.failing.CompareAndSwap(false, true) {
		entry.Warn(msg)
		return true
	}
	entry.Debug(msg)
	return false
}

// GaveUp logs at Error that the failing thing is not retried any more, and ends the streak.
func (q *Quiet) GaveUp(entry *logrus.Entry, msg string) {
	q.failing.Store(false)
	entry.Error(msg)
}

// Reset ends the streak after a success; it reports whether there was one, so that the caller
// can say once that the thing works again.
func (q *Quiet) Reset() bool {
	return q.failing.Swap(false)
}
