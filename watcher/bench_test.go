package watcher

// Benchmarks. Tree sizes come from the environment so that `make bench` can run the full size:
//
//	ADI_BENCH_FILES=200000 ADI_BENCH_FOLDERS=20000 go test -run '^$' -bench . -benchtime 5x ./watcher
//
// Defaults (20,000 files in 2,000 folders) keep `go test -bench` quick. Compare a scan with find on
// the same tree with `go run ./internal/bench/benchtree`.

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/bench/treegen"
	"github.com/omero-adi/omero-adi/rules"
)

var benchTrees struct {
	sync.Mutex
	dirs map[string]string
}

// TestMain removes the benchmark trees, which live for the whole process (a benchmark function
// runs several times with growing b.N and must not rebuild its tree each time).
func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range benchTrees.dirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchTree returns a tree of files files in folders folders, built once per process.
func benchTree(b *testing.B, files, folders int) string {
	b.Helper()
	key := fmt.Sprintf("%d/%d", files, folders)
	benchTrees.Lock()
	defer benchTrees.Unlock()
	if d, ok := benchTrees.dirs[key]; ok {
		return d
	}
	d, err := os.MkdirTemp("", "adi-bench-")
	if err != nil {
		b.Fatal(err)
	}
	if err := treegen.Build(d+"/tree", files, folders); err != nil {
		os.RemoveAll(d)
		b.Fatal(err)
	}
	if benchTrees.dirs == nil {
		benchTrees.dirs = map[string]string{}
	}
	benchTrees.dirs[key] = d
	return d
}

func benchLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

func benchRule(dataRoot string, settle time.Duration) rules.Rule {
	return rules.Rule{
		Name: "bench", Group: "Bench", Path: dataRoot + "/tree", User: "bench", Include: []string{"**/*.tif"},
		Settle: settle, Destination: "Dataset:1",
	}
}

// BenchmarkRescanUnchanged measures a full scan of a tree whose files are all known already.
func BenchmarkRescanUnchanged(b *testing.B) {
	files := envInt("ADI_BENCH_FILES", 20000)
	folders := envInt("ADI_BENCH_FOLDERS", files/10)
	data := benchTree(b, files, folders)
	sink := &fakeSink{
		known:   func(context.Context, string, string, string) (bool, error) { return false, nil },
		settled: func(context.Context, Unit) error { return nil },
	}
	w, err := New(testConfig(Config{Mode: ModePoll}), compile(b, data, benchRule(data, time.Nanosecond)), sink, benchLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 2; i++ { // observe, then settle: everything known
		if _, err := w.Scan(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		st, err := w.Scan(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if st.AlreadyOrdered != files {
			b.Fatalf("rescan %+v, want %d already ordered", st, files)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(files), "ns/file")
}

// BenchmarkWatchRegistration measures walking 20,000 folders and adding an inotify watch to each.
func BenchmarkWatchRegistration(b *testing.B) {
	folders := envInt("ADI_BENCH_WATCH_FOLDERS", 20000)
	data := benchTree(b, 0, folders)
	sink := &fakeSink{
		known:   func(context.Context, string, string, string) (bool, error) { return false, nil },
		settled: func(context.Context, Unit) error { return nil },
	}
	w, err := New(testConfig(Config{Mode: ModeEvents}), compile(b, data, benchRule(data, time.Second)), sink, benchLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		fsw, err := fsnotify.NewWatcher()
		if err != nil {
			b.Fatal(err)
		}
		w.mu.Lock()
		w.fsw = fsw
		w.watched = map[string]*root{}
		r := w.roots[0]
		r.watches = 0
		w.mu.Unlock()
		b.StartTimer()
		var st ScanStats
		err = w.scanRoot(ctx, r, walkOpts{watch: true, probe: true, workers: scanWorkers}, &st)
		b.StopTimer()
		w.mu.Lock()
		watches := r.watches
		w.mu.Unlock()
		fsw.Close()
		if err != nil {
			b.Fatal(err)
		}
		// the tree's folders, its top-level folders and the root
		if want := folders + (folders+99)/100 + 1; watches != want || r.mode != ModeEvents {
			b.Fatalf("%d watches (mode %s), want %d", watches, r.mode, want)
		}
		b.StartTimer()
	}
}

// BenchmarkDropToSettled measures the time from writing a file to its settled unit with settle=1s.
func BenchmarkDropToSettled(b *testing.B) {
	data := b.TempDir()
	if err := os.MkdirAll(data+"/tree", 0o755); err != nil {
		b.Fatal(err)
	}
	got := make(chan Unit, 16)
	sink := &fakeSink{
		known:   func(context.Context, string, string, string) (bool, error) { return false, nil },
		settled: func(_ context.Context, u Unit) error { got <- u; return nil },
	}
	w, err := New(testConfig(Config{}), compile(b, data, benchRule(data, time.Second)), sink, benchLog())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for w.Health().Roots[0].LastScan.IsZero() {
		select {
		case <-time.After(5 * time.Millisecond):
		case err := <-done:
			b.Fatalf("Run: %v", err)
		}
	}
	i := 0
	for b.Loop() {
		i++
		path := fmt.Sprintf("%s/tree/f%06d.tif", data, i)
		if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
			b.Fatal(err)
		}
		select {
		case u := <-got:
			if u.Path != path {
				b.Fatalf("unit %s, want %s", u.Path, path)
			}
		case <-time.After(10 * time.Second):
			b.Fatal("file not settled")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/unit")
}

// BenchmarkStartScan measures the start-up scan of the daemon (empty cache) on a tree whose files
// are all quiet (settle 1ns, shorter than their age), so each is looked up by signature, unread:
// "ordered" (the Sink knows every file: no candidate is kept) and "new" (nothing is known: every
// file is a pending candidate until its second observation). live-B/file is the heap still in use
// after the scan (after a GC), per file: what the pending candidates cost.
func BenchmarkStartScan(b *testing.B) {
	files := envInt("ADI_BENCH_FILES", 20000)
	folders := envInt("ADI_BENCH_FOLDERS", files/10)
	data := benchTree(b, files, folders)
	for _, bc := range []struct {
		name    string
		known   bool
		pending int
	}{{"ordered", true, 0}, {"new", false, files}} {
		b.Run(bc.name, func(b *testing.B) {
			sink := &fakeSink{
				knownSig: func(context.Context, string, string, string) (bool, error) { return bc.known, nil },
				known:    func(context.Context, string, string, string) (bool, error) { return bc.known, nil },
				settled:  func(context.Context, Unit) error { return nil },
			}
			set := compile(b, data, benchRule(data, time.Nanosecond))
			var live float64
			b.ReportAllocs()
			for b.Loop() {
				w, err := New(testConfig(Config{Mode: ModePoll}), set, sink, benchLog())
				if err != nil {
					b.Fatal(err)
				}
				var ms runtime.MemStats
				b.StopTimer()
				runtime.GC()
				runtime.ReadMemStats(&ms)
				before := ms.HeapAlloc
				b.StartTimer()
				var st ScanStats
				err = w.scanRoot(context.Background(), w.roots[0], walkOpts{probe: true, workers: scanWorkers}, &st)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				if len(w.pending) != bc.pending {
					b.Fatalf("%d pending after the start scan, want %d", len(w.pending), bc.pending)
				}
				runtime.GC()
				runtime.ReadMemStats(&ms)
				live = float64(int64(ms.HeapAlloc)-int64(before)) / float64(files)
				runtime.KeepAlive(w)
				b.StartTimer()
			}
			b.ReportMetric(live, "live-B/file")
		})
	}
}
