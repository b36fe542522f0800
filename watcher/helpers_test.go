package watcher

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/omero-adi/omero-adi/rules"
)

// fakeSink is a hand-written Sink with func fields.
type fakeSink struct {
	knownSig func(ctx context.Context, rule, path, signature string) (bool, error) // nil: never known
	known    func(ctx context.Context, rule, path, fingerprint string) (bool, error)
	settled  func(ctx context.Context, u Unit) error
}

var _ Sink = (*fakeSink)(nil)

func (f *fakeSink) KnownSignature(ctx context.Context, rule, path, sig string) (bool, error) {
	if f.knownSig == nil {
		return false, nil
	}
	return f.knownSig(ctx, rule, path, sig)
}
func (f *fakeSink) Known(ctx context.Context, rule, path, fp string) (bool, error) {
	return f.known(ctx, rule, path, fp)
}
func (f *fakeSink) Settled(ctx context.Context, u Unit) error { return f.settled(ctx, u) }

// recorder backs a fakeSink with a map, like the database would: a settled unit becomes known.
type recorder struct {
	mu         sync.Mutex
	known      map[string]bool // rule \x00 path \x00 fingerprint
	units      []Unit
	at         []time.Time
	knownCalls int // Known and KnownSignature
	ch         chan Unit
}

func newRecorder() *recorder {
	return &recorder{known: map[string]bool{}, ch: make(chan Unit, 100000)}
}

func (r *recorder) sink() *fakeSink {
	return &fakeSink{
		knownSig: func(_ context.Context, rule, path, sig string) (bool, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.knownCalls++
			prefix := rule + "\x00" + path + "\x00" + sig
			for k := range r.known {
				if strings.HasPrefix(k, prefix) {
					return true, nil
				}
			}
			return false, nil
		},
		known: func(_ context.Context, rule, path, fp string) (bool, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.knownCalls++
			return r.known[rule+"\x00"+path+"\x00"+fp], nil
		},
		settled: func(_ context.Context, u Unit) error {
			r.mu.Lock()
			r.known[u.Rule.Name+"\x00"+u.Path+"\x00"+u.Fingerprint] = true
			r.units = append(r.units, u)
			r.at = append(r.at, time.Now())
			r.mu.Unlock()
			r.ch <- u
			return nil
		},
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.units)
}

// next waits for the next settled unit.
func (r *recorder) next(t *testing.T, timeout time.Duration) Unit {
	t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-time.After(timeout):
		t.Fatalf("no unit settled within %v", timeout)
		return Unit{}
	}
}

// none asserts that no unit settles within d.
func (r *recorder) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case u := <-r.ch:
		t.Fatalf("unexpected settled unit %s (rule %s, files %v)", u.Path, u.Rule.Name, u.Files)
	case <-time.After(d):
	}
}

// collect waits for n units and returns them by path; more than n is a failure checked by the
// caller with none().
func (r *recorder) collect(t *testing.T, n int, timeout time.Duration) map[string]Unit {
	t.Helper()
	got := map[string]Unit{}
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case u := <-r.ch:
			if _, dup := got[u.Path]; dup {
				t.Fatalf("unit %s settled twice", u.Path)
			}
			got[u.Path] = u
		case <-deadline:
			t.Fatalf("only %d of %d units settled within %v", len(got), n, timeout)
		}
	}
	return got
}

func testLog(t *testing.T) *logrus.Entry {
	e, _ := testLogHook(t)
	return e
}

// testLogHook returns a logger whose entries the hook records (ADI_TEST_LOG=1 also prints them).
func testLogHook(t *testing.T) (*logrus.Entry, *logtest.Hook) {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.DebugLevel)
	if os.Getenv("ADI_TEST_LOG") != "" {
		l.SetOutput(os.Stderr)
	}
	return logrus.NewEntry(l).WithField("test", t.Name()), logtest.NewLocal(l)
}

// warnings returns the Warn entries with message msg.
func warnings(h *logtest.Hook, msg string) []*logrus.Entry {
	var out []*logrus.Entry
	for _, e := range h.AllEntries() {
		if e.Level == logrus.WarnLevel && e.Message == msg {
			out = append(out, e)
		}
	}
	return out
}

// compile builds a rule set rooted at dataRoot.
func compile(t testing.TB, dataRoot string, rs ...rules.Rule) *rules.Set {
	t.Helper()
	set, err := rules.Compile(rs, dataRoot, nil)
	if err != nil {
		t.Fatalf("compile rules: %v", err)
	}
	return set
}

// userRule: {user} captured, file units, settle as given.
func userRule(dataRoot string, settle time.Duration) rules.Rule {
	return rules.Rule{
		Name: "demo", Group: "Demo", Path: dataRoot + "/demo/{user}/dropbox", Users: []string{"alice", "bob"},
		Include: []string{"**/*.tif"}, Settle: settle, Destination: "Dataset:1",
	}
}

// start runs w in the background until the test ends and waits for its first scan.
func start(t *testing.T, w *Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	waitFor(t, 10*time.Second, "first scan", func() bool {
		h := w.Health()
		for _, r := range h.Roots {
			if r.LastScan.IsZero() && r.Errors == 0 {
				return false
			}
		}
		return h.Running
	})
}

// waitFor polls cond on a ticker until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

func writeFile(t testing.TB, path string, size int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(path))
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

func rootHealth(t *testing.T, w *Watcher, path string) RootHealth {
	t.Helper()
	for _, r := range w.Health().Roots {
		if r.Path == path {
			return r
		}
	}
	t.Fatalf("no root %s in health %+v", path, w.Health())
	return RootHealth{}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}

// testConfig fills the zero fields of c from DefaultConfig, so that a test names only what it tunes.
func testConfig(c Config) Config {
	d := DefaultConfig()
	if c.Mode == "" {
		c.Mode = d.Mode
	}
	if c.RescanInterval == 0 {
		c.RescanInterval = d.RescanInterval
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = d.EventBuffer
	}
	return c
}
