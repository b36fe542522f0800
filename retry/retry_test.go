package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
)

func TestDelay(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		p    Policy
		want []time.Duration // Delay(1), Delay(2), …
	}{
		{"doubles without bound", Policy{Initial: 10 * ms}, []time.Duration{10 * ms, 20 * ms, 40 * ms, 80 * ms}},
		{"bounded by Max", Policy{Initial: 100 * ms, Max: 250 * ms}, []time.Duration{100 * ms, 200 * ms, 250 * ms, 250 * ms}},
		{"Max below Initial bounds the first wait too", Policy{Initial: 100 * ms, Max: 30 * ms}, []time.Duration{30 * ms, 30 * ms}},
		{"no wait", Policy{}, []time.Duration{0, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i, want := range c.want {
				if got := c.p.Delay(i + 1); got != want {
					t.Errorf("Delay(%d) = %s, want %s", i+1, got, want)
				}
			}
		})
	}
	if d := (Policy{Initial: time.Hour}).Delay(200); d <= 0 {
		t.Errorf("Delay(200) overflowed to %s", d)
	}
}

var (
	errBusy    = errors.New("busy")
	errBad     = errors.New("bad")
	errWrapped = fmt.Errorf("run: %w", Stop(errBad))
)

func TestDo(t *testing.T) {
	us := time.Microsecond
	cases := []struct {
		name      string
		attempts  int
		results   []error // what each try returns; past the end: errBusy
		wantTries int
		wantErr   error
		wantWaits []time.Duration
	}{
		{"first try succeeds", 3, []error{nil}, 1, nil, nil},
		{"succeeds on the third", 5, []error{errBusy, errBusy, nil}, 3, nil, []time.Duration{us, 2 * us}},
		{"attempts spent", 3, nil, 3, errBusy, []time.Duration{us, 2 * us}},
		{"one attempt: no retry", 1, nil, 1, errBusy, nil},
		{"permanent error stops at once", 5, []error{errBusy, Stop(errBad)}, 2, errBad, []time.Duration{us}},
		{"errWrapped permanent error stops too", 5, []error{errWrapped}, 1, errWrapped, nil},
		{"unbounded until success", 0, []error{errBusy, errBusy, errBusy, errBusy, errBusy, nil}, 6, nil, []time.Duration{us, 2 * us, 4 * us, 8 * us, 8 * us}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tries := 0
			var waits []time.Duration
			p := Policy{Attempts: c.attempts, Initial: us, Max: 8 * us, Retrying: func(attempt int, wait time.Duration, err error) {
				if attempt != tries {
					t.Errorf("Retrying(attempt %d) after try %d", attempt, tries)
				}
				if !errors.Is(err, errBusy) {
					t.Errorf("Retrying with %v", err)
				}
				waits = append(waits, wait)
			}}
			err := Do(context.Background(), p, func(attempt int) error {
				tries++
				if attempt != tries {
					t.Errorf("try %d told it is attempt %d", tries, attempt)
				}
				if tries <= len(c.results) {
					return c.results[tries-1]
				}
				return errBusy
			})
			if err != c.wantErr { // the error itself, not a wrapper: callers compare it
				t.Errorf("err = %v, want %v", err, c.wantErr)
			}
			if tries != c.wantTries {
				t.Errorf("%d tries, want %d", tries, c.wantTries)
			}
			if !slices.Equal(waits, c.wantWaits) {
				t.Errorf("waits %v, want %v", waits, c.wantWaits)
			}
		})
	}
}

func TestStopNil(t *testing.T) {
	if err := Stop(nil); err != nil {
		t.Errorf("Stop(nil) = %v, want nil", err)
	}
}

// TestDoCancel: a context that ends during a wait ends Do at once; one that has ended already
// still gets its first try, and no retry.
func TestDoCancel(t *testing.T) {
	cases := []struct {
		name      string
		initial   time.Duration
		cancelAt  int // cancel in the Retrying after this try; 0: before Do
		wantTries int
	}{
		{"cancelled before Do", time.Microsecond, 0, 1},
		{"cancelled during an hour's wait", time.Hour, 1, 1},
		{"cancelled before the third wait", time.Microsecond, 3, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if c.cancelAt == 0 {
				cancel()
			}
			tries := 0
			p := Policy{Initial: c.initial, Retrying: func(attempt int, _ time.Duration, _ error) {
				switch {
				case attempt != c.cancelAt:
				case c.initial >= time.Hour:
					go cancel() // from elsewhere, while Do waits
				default:
					cancel()
				}
			}}
			done := make(chan error, 1)
			go func() {
				done <- Do(ctx, p, func(int) error { tries++; return errBusy })
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Do did not return after its context ended")
			}
			if !errors.Is(err, context.Canceled) || !errors.Is(err, errBusy) {
				t.Errorf("err = %v, want both context.Canceled and the last error", err)
			}
			if tries != c.wantTries {
				t.Errorf("%d tries, want %d", tries, c.wantTries)
			}
		})
	}
}

func TestQuiet(t *testing.T) {
	type step int
	const (
		fail step = iota
		reset
		gaveUp
	)
	cases := []struct {
		name       string
		steps      []step
		wantLevels []logrus.Level
		wantResets []bool // what each reset step reports
	}{
		{"one streak", []step{fail, fail, fail}, []logrus.Level{logrus.WarnLevel, logrus.DebugLevel, logrus.DebugLevel}, nil},
		{"reset starts a new streak", []step{fail, fail, reset, fail, reset, reset},
			[]logrus.Level{logrus.WarnLevel, logrus.DebugLevel, logrus.WarnLevel}, []bool{true, true, false}},
		{"giving up is an Error and ends the streak", []step{fail, fail, gaveUp, fail},
			[]logrus.Level{logrus.WarnLevel, logrus.DebugLevel, logrus.ErrorLevel, logrus.WarnLevel}, nil},
		{"reset without a streak", []step{reset}, nil, []bool{false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, hook := test.NewNullLogger()
			l.SetOutput(io.Discard)
			l.SetLevel(logrus.DebugLevel)
			var q Quiet
			var resets []bool
			for _, s := range c.steps {
				switch s {
				case fail:
					if first := q.Failed(logrus.NewEntry(l), "down"); first != (len(hook.AllEntries()) > 0 && hook.LastEntry().Level == logrus.WarnLevel) {
						t.Errorf("Failed reported first=%v for a %s entry", first, hook.LastEntry().Level)
					}
				case gaveUp:
					q.GaveUp(logrus.NewEntry(l), "gave up")
				case reset:
					resets = append(resets, q.Reset())
				}
			}
			var levels []logrus.Level
			for _, e := range hook.AllEntries() {
				levels = append(levels, e.Level)
			}
			if !slices.Equal(levels, c.wantLevels) {
				t.Errorf("levels %v, want %v", levels, c.wantLevels)
			}
			if !slices.Equal(resets, c.wantResets) {
				t.Errorf("resets %v, want %v", resets, c.wantResets)
			}
		})
	}
}
