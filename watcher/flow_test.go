package watcher

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/bench/opencount"
	"github.com/omero-adi/omero-adi/rules"
)

// Tests of what issue 11 asked for: no data file is read before its unit settles, events flow
// during a long start scan, a slow Sink stalls only its own units, and an unreachable one loses
// none. Opens are counted by an independent inotify instance (IN_OPEN on every folder).

// oldFile writes a file whose mtime lies age in the past.
func oldFile(t *testing.T, path string, size int, age time.Duration) {
	t.Helper()
	writeFile(t, path, size)
	old := time.Now().Add(-age)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

// openedFiles returns the files the counter saw opened, failing the test on an overflow.
func openedFiles(t *testing.T, c *opencount.Counter) map[string]int {
	t.Helper()
	c.Settle()
	opens, err := c.Opens()
	if err != nil {
		t.Fatal(err)
	}
	return opens
}

func TestNoFileReadBeforeSettling(t *testing.T) {
	data := t.TempDir()
	box := data + "/demo/alice/dropbox"
	for i := 0; i < 20; i++ {
		writeFile(t, fmt.Sprintf("%s/new/f%02d.tif", box, i), 3000)            // fresh: not settled
		oldFile(t, fmt.Sprintf("%s/old/f%02d.tif", box, i), 3000, 2*time.Hour) // quiet, never ordered
	}
	oldFile(t, data+"/plates/p1/a.tif", 3000, 2*time.Hour) // a quiet folder unit
	writeFile(t, data+"/plates/p2/a.tif", 3000)            // a fresh one
	mkdir(t, data+"/fast")
	fast := rules.Rule{Name: "fast", Group: "Demo", Path: data + "/fast", User: "robot", Include: []string{"*.tif"},
		Settle: 100 * time.Millisecond, Destination: "Dataset:2"}
	set := compile(t, data, userRule(data, time.Hour), folderRule(data, time.Hour, ""), fast)
	counter, err := opencount.Start(data)
	if err != nil {
		t.Fatal(err)
	}
	defer counter.Close()

	// the one-shot scan, then the daemon's start scan and a rescan
	rec := newRecorder()
	st, err := must(New(testConfig(Config{}), set, rec.sink(), testLog(t))).Scan(context.Background())
	if err != nil || st.Seen != 42 || st.Pending != 42 || st.Settled != 0 {
		t.Fatalf("scan %+v, %v; want 42 units seen and pending", st, err)
	}
	w := must(New(testConfig(Config{}), set, rec.sink(), testLog(t)))
	start(t, w)
	if h := w.Health(); h.Pending != 42 {
		t.Fatalf("%d pending after the start scan, want 42", h.Pending)
	}
	if _, err := w.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if opens := openedFiles(t, counter); len(opens) != 0 {
		t.Fatalf("files opened before their units settled: %v", opens)
	}
	// Looked up without being read: the 20 quiet files and the quiet folder unit, by the one-shot
	// scan and by the daemon's start scan (its rescan finds them pending).
	rec.mu.Lock()
	calls := rec.knownCalls
	rec.mu.Unlock()
	if calls != 2*21 {
		t.Fatalf("the Sink was asked %d times, want 42", calls)
	}

	// The counter sees reads: a unit that settles is read once, to fingerprint it.
	writeFile(t, data+"/fast/x.tif", 3000)
	counter.Settle()
	counter.Reset() // the write itself opened it
	if u := rec.next(t, 5*time.Second); u.Path != data+"/fast/x.tif" {
		t.Fatalf("unit %s", u.Path)
	}
	if opens := openedFiles(t, counter); len(opens) != 1 || opens[data+"/fast/x.tif"] != 1 {
		t.Fatalf("opens when fast/x.tif settled: %v, want it read once", opens)
	}
}

// The Sink answers KnownSignature for rule "slow" only once released, so that the start scan of
// that rule's root (30 quiet files, looked up at sight) lasts as long as the test wants.
func TestEventsFlowDuringStartScan(t *testing.T) {
	data := t.TempDir()
	for i := 0; i < 30; i++ {
		oldFile(t, fmt.Sprintf("%s/slow/d%02d/f.tif", data, i), 100, time.Hour)
	}
	mkdir(t, data+"/drop")
	slow := rules.Rule{Name: "slow", Group: "Demo", Path: data + "/slow", User: "robot", Include: []string{"**/*.tif"},
		Settle: time.Minute, Destination: "Dataset:1"}
	drop := rules.Rule{Name: "drop", Group: "Demo", Path: data + "/drop", User: "robot", Include: []string{"**/*.tif"},
		Settle: 300 * time.Millisecond, Destination: "Dataset:2"}
	release := make(chan struct{})
	var asked atomic.Int32
	rec := newRecorder()
	sink := rec.sink()
	known := sink.knownSig
	sink.knownSig = func(ctx context.Context, rule, path, sig string) (bool, error) {
		if rule == "slow" {
			asked.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		return known(ctx, rule, path, sig)
	}
	w := must(New(testConfig(Config{}), compile(t, data, slow, drop), sink, testLog(t)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, 10*time.Second, "the drop folder's start scan", func() bool {
		return !rootHealth(t, w, data+"/drop").LastScan.IsZero() && asked.Load() > 0
	})
	for i := 0; i < 3; i++ {
		path := fmt.Sprintf("%s/drop/sub%d/f.tif", data, i) // a new folder, then the file
		writeFile(t, path, 1000)
		dropped := time.Now()
		u := rec.next(t, 10*time.Second)
		if u.Path != path {
			t.Fatalf("unit %s, want %s", u.Path, path)
		}
		if took, limit := time.Since(dropped), 300*time.Millisecond+time.Second; took > limit {
			t.Errorf("%s settled %v after it was written, want within settle + 1 s (%v)", path, took, limit)
		}
	}
	if h := rootHealth(t, w, data+"/slow"); !h.LastScan.IsZero() {
		t.Fatalf("the slow root's start scan ended (%+v): the test did not test anything", h)
	}
	close(release)
	waitFor(t, 10*time.Second, "the slow root's start scan", func() bool {
		return !rootHealth(t, w, data+"/slow").LastScan.IsZero()
	})
	if h := w.Health(); h.Pending != 30 {
		t.Fatalf("%d pending after both start scans, want the 30 files of the slow root", h.Pending)
	}
}

func TestSlowSinkDelaysOnlyItsUnits(t *testing.T) {
	const call = 2 * time.Second
	const settle = 200 * time.Millisecond
	data := t.TempDir()
	mkdir(t, data+"/demo/alice/dropbox")
	started := make(chan string, 10) // paths whose Known call started
	rec := newRecorder()
	sink := rec.sink()
	known, settled := sink.known, sink.settled
	sink.known = func(ctx context.Context, rule, path, fp string) (bool, error) {
		started <- path
		time.Sleep(call)
		return known(ctx, rule, path, fp)
	}
	sink.settled = func(ctx context.Context, u Unit) error {
		time.Sleep(call)
		return settled(ctx, u)
	}
	w := must(New(testConfig(Config{}), compile(t, data, userRule(data, settle)), sink, testLog(t)))
	start(t, w)

	a, b := data+"/demo/alice/dropbox/a.tif", data+"/demo/alice/dropbox/b.tif"
	writeFile(t, a, 1000)
	select {
	case p := <-started:
		if p != a {
			t.Fatalf("Known asked about %s, want %s", p, a)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a.tif never handed to the Sink")
	}
	// a.tif now waits 4 s on the Sink; b.tif must not wait for it.
	writeFile(t, b, 1000)
	dropped := time.Now()
	waitFor(t, 500*time.Millisecond, "b.tif to be pending (events handled)", func() bool { return w.Health().Pending == 2 })
	select {
	case p := <-started:
		if p != b {
			t.Fatalf("Known asked about %s, want %s", p, b)
		}
		if took := time.Since(dropped); took > settle+time.Second {
			t.Fatalf("b.tif handed to the Sink %v after it was written, want within settle + 1 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b.tif never handed to the Sink while a.tif was")
	}
	got := rec.collect(t, 2, 10*time.Second)
	if _, ok := got[b]; !ok {
		t.Fatalf("units %v", keys(got))
	}
	rec.mu.Lock()
	gap := rec.at[1].Sub(rec.at[0])
	rec.mu.Unlock()
	if gap > 2*call {
		t.Fatalf("b.tif settled %v after a.tif: handed over one after the other", gap)
	}
}

func TestUnreachableSinkLosesNoUnit(t *testing.T) {
	data := t.TempDir()
	box := data + "/demo/alice/dropbox"
	mkdir(t, box)
	mkdir(t, data+"/plates")
	var down atomic.Bool
	down.Store(true)
	unreachable := errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	rec := newRecorder()
	sink := rec.sink()
	known, knownSig, settled := sink.known, sink.knownSig, sink.settled
	sink.known = func(ctx context.Context, rule, path, fp string) (bool, error) {
		if down.Load() {
			return false, unreachable
		}
		return known(ctx, rule, path, fp)
	}
	sink.knownSig = func(ctx context.Context, rule, path, sig string) (bool, error) {
		if down.Load() {
			return false, unreachable
		}
		return knownSig(ctx, rule, path, sig)
	}
	sink.settled = func(ctx context.Context, u Unit) error {
		if down.Load() {
			return unreachable
		}
		return settled(ctx, u)
	}
	log, hook := testLogHook(t)
	set := compile(t, data, userRule(data, 100*time.Millisecond), folderRule(data, 100*time.Millisecond, ""))
	w := must(New(testConfig(Config{}), set, sink, log))
	start(t, w)
	for i := 0; i < 20; i++ {
		writeFile(t, fmt.Sprintf("%s/f%02d.tif", box, i), 100)
	}
	writeFile(t, data+"/plates/p1/x.tif", 100)
	waitFor(t, 10*time.Second, "hand-overs to fail", func() bool { return rootHealth(t, w, data+"/demo").Errors >= 20 })
	<-time.After(1500 * time.Millisecond) // retried at least once meanwhile
	if n := rec.count(); n != 0 {
		t.Fatalf("%d units while the Sink was down", n)
	}
	down.Store(false)
	got := rec.collect(t, 21, 30*time.Second)
	if _, ok := got[data+"/plates/p1"]; !ok {
		t.Fatalf("units %v, missing the folder unit", keys(got))
	}
	rec.none(t, 500*time.Millisecond)
	if h := w.Health(); h.Pending != 0 {
		t.Fatalf("%d still pending", h.Pending)
	}
	if warns := warnings(hook, "cannot hand a unit to the database; retrying every unit until it answers"); len(warns) != 1 {
		t.Fatalf("%d warnings about the unreachable Sink, want one", len(warns))
	}
	back := 0
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.InfoLevel && e.Message == "the database answers again" {
			back++
		}
	}
	if back != 1 {
		t.Fatalf("%d notes that the database answers again, want one", back)
	}
}

// The roots take turns at the Sink workers: a unit dropped into one root is handed over while
// another root's backlog (a start-up ordering a whole tree) is still being worked off.
func TestBacklogOfOneRootDoesNotHoldBackAnother(t *testing.T) {
	const settle = 200 * time.Millisecond
	data := t.TempDir()
	for i := 0; i < 200; i++ {
		writeFile(t, fmt.Sprintf("%s/big/d%02d/f%03d.tif", data, i%20, i), 100)
	}
	mkdir(t, data+"/drop")
	rule := func(name string) rules.Rule {
		return rules.Rule{Name: name, Group: "Demo", Path: data + "/" + name, User: "robot", Include: []string{"**/*.tif"},
			Settle: settle, Destination: "Dataset:1"}
	}
	rec := newRecorder()
	sink := rec.sink()
	settled := sink.settled
	var big atomic.Int32
	sink.settled = func(ctx context.Context, u Unit) error {
		if u.Rule.Name == "big" {
			time.Sleep(50 * time.Millisecond) // 200 units, 4 workers: a backlog of 2.5 s
			big.Add(1)
		}
		return settled(ctx, u)
	}
	w := must(New(testConfig(Config{}), compile(t, data, rule("big"), rule("drop")), sink, testLog(t)))
	start(t, w)
	waitFor(t, 10*time.Second, "the big root's backlog to start", func() bool { return big.Load() > 0 })
	path := data + "/drop/x.tif"
	writeFile(t, path, 100)
	dropped := time.Now()
	for {
		u := rec.next(t, 10*time.Second)
		if u.Path != path {
			continue
		}
		if took := time.Since(dropped); took > settle+time.Second {
			t.Fatalf("%s handed over %v after it was written, want within settle + 1 s", path, took)
		}
		break
	}
	if n := big.Load(); n >= 200 {
		t.Fatalf("the big root's backlog was done (%d units) before the drop: the test did not test anything", n)
	}
	waitFor(t, 30*time.Second, "the big root's backlog", func() bool { return big.Load() == 200 })
}
