package runner_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// fakeImporter is an in-process OMERO that answers at once, for measuring the runner itself. Its
// func fields, when set, are called first; Import links each path into the ManagedRepository as an
// in-place import does, so the runner reads real links afterwards.
type fakeImporter struct {
	repo    string
	nextID  atomic.Int64
	onLogin func(orderUUID string)
}

var _ runner.Importer = (*fakeImporter)(nil)

func (f *fakeImporter) LoginFinding(ctx context.Context, orderUUID, user, group string, _ []string) (*omero.Session, omero.Found, error, error) {
	s, err := f.Login(ctx, orderUUID, user, group)
	return s, omero.Found{}, nil, err
}

func (f *fakeImporter) Login(_ context.Context, orderUUID, user, group string) (*omero.Session, error) {
	if f.onLogin != nil {
		f.onLogin(orderUUID)
	}
	return &omero.Session{Key: "key-" + orderUUID, User: user, Group: group}, nil
}

func (f *fakeImporter) LoginArgs(user, group string) ([]string, string) {
	return []string{"omero", "load"}, "login -u " + user + " -g " + group + "\n"
}

func (f *fakeImporter) Close(context.Context, *omero.Session) {}

func (f *fakeImporter) ImportArgs(_ *omero.Session, req omero.ImportRequest) []string {
	return append([]string{"omero", "import"}, req.Paths...)
}

func (f *fakeImporter) Import(_ context.Context, _ *omero.Session, req omero.ImportRequest) (omero.ImportResult, error) {
	var res omero.ImportResult
	for _, p := range req.Paths {
		id := f.nextID.Add(2)
		dir := filepath.Join(f.repo, f.prefix(id))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return res, err
		}
		if err := os.Symlink(p, filepath.Join(dir, filepath.Base(p))); err != nil {
			return res, err
		}
		res.Filesets = append(res.Filesets, omero.Fileset{ID: id, Images: []int64{id + 1}})
	}
	return res, nil
}

func (f *fakeImporter) prefix(id int64) string { return fmt.Sprintf("fake/%d/", id) }

func (f *fakeImporter) Prepare(_ context.Context, _ *omero.Session, ids []int64, _ string, targets []string) (omero.Prepared, error) {
	out := omero.Prepared{Prefixes: make(map[int64]string, len(ids)), Annotations: make(map[string]string, len(targets))}
	for _, id := range ids {
		out.Prefixes[id] = f.prefix(id)
	}
	for _, t := range targets {
		out.Annotations[t] = fmt.Sprintf("MapAnnotation:%d", f.nextID.Add(1))
	}
	return out, nil
}

func (f *fakeImporter) Finish(context.Context, *omero.Session, omero.Write) error { return nil }

func (f *fakeImporter) Known(string) (omero.Person, bool) { return omero.Person{}, false }

// startWith runs a runner with imp as its importer until the test or benchmark ends.
func (e *env) startWith(imp runner.Importer) {
	e.t.Helper()
	r, err := runner.New(e.cfg, e.store, imp, e.pre, quietLog())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() { e.done <- r.Run(ctx) }()
	e.t.Cleanup(e.stop)
}

// insertMany inserts n pending orders of batch, one file each (made by insertFiles), in one
// transaction of hand-written INSERTs.
func (e *env) insertMany(batch, n int) {
	e.t.Helper()
	tx, err := e.store.DB().Beginx()
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	q := tx.Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
		VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', ?, ?)`)
	for i := 0; i < n; i++ {
		f := filepath.Join(e.data, fmt.Sprintf("demo/alice/b%d/f%05d.tif", batch, i))
		uuid := fmt.Sprintf("00000000-0000-4000-8000-%07d%05d", batch, i)
		if _, err := tx.Exec(q, uuid, fmt.Sprintf("[%q]", f)); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

// waitFinished polls until no order is pending or running and returns how many completed.
func (e *env) waitFinished(n int, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	q := e.store.DB().Rebind(`SELECT
		COUNT(*) FILTER (WHERE stage = ?), COUNT(*) FILTER (WHERE stage IN (?, ?, ?)) FROM imports`)
	for {
		var done, finished int
		if err := e.store.DB().QueryRow(q, db.StageCompleted, db.StageCompleted, db.StageFailed, db.StageCancelled).Scan(&done, &finished); err != nil {
			e.t.Fatal(err)
		}
		if finished >= n {
			if done != finished {
				var desc string
				_ = e.store.DB().QueryRow(e.store.DB().Rebind(`SELECT description FROM imports WHERE stage <> ? LIMIT 1`), db.StageCompleted).Scan(&desc)
				e.t.Fatalf("%d of %d orders failed, e.g.: %s", finished-done, finished, desc)
			}
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d of %d orders finished within %s", finished, n, timeout)
		}
		<-tick.C
	}
}

func forEachEngineB(b *testing.B, f func(b *testing.B, url func(testing.TB) string)) {
	for _, e := range []string{"postgres", "sqlite"} {
		for _, en := range engines {
			if en.name == e {
				b.Run(e, func(b *testing.B) { f(b, en.url) })
			}
		}
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(p*float64(len(sorted)-1) + 0.5)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkRunnerPickupLatency: a hand-written INSERT of one order until a worker starts it (logs
// in to OMERO, right after the claim set it Import Started), 100 orders one at a time, each after
// the previous finished and the runner went idle. The poll interval is 5 s, so what wakes the
// runner is PostgreSQL's NOTIFY or SQLite's data_version check (Options.NotifyPoll, 20 ms).
// Targets: <= 50 ms PostgreSQL, <= 500 ms SQLite.
func BenchmarkRunnerPickupLatency(b *testing.B) {
	forEachEngineB(b, func(b *testing.B, url func(testing.TB) string) {
		const n = 100
		e := setup(b, url, withConfig(func(c *runner.Config) { c.PollInterval = 5 * time.Second; c.MaxWorkers = 8 }))
		started := make(chan string, 1)
		e.startWith(&fakeImporter{repo: e.double.ManagedRepo, onLogin: func(u string) { started <- u }})
		q := e.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
			VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', ?, ?)`)
		var lat []time.Duration
		for i := 0; i < b.N; i++ {
			lat = lat[:0]
			for k := 0; k < n; k++ {
				f := e.file(fmt.Sprintf("demo/alice/lat%d/f%03d.tif", i, k), "pixels")
				uuid := fmt.Sprintf("00000000-0000-4000-8000-%04d%08d", i, k)
				// Orders arrive apart: the previous one finished and the runner waits on its
				// notifications, not on a worker that just freed up.
				<-time.After(30 * time.Millisecond)
				t0 := time.Now()
				if _, err := e.store.DB().Exec(q, uuid, fmt.Sprintf("[%q]", f)); err != nil {
					b.Fatal(err)
				}
				select {
				case got := <-started:
					lat = append(lat, time.Since(t0))
					if got != uuid {
						b.Fatalf("started %s, want %s", got, uuid)
					}
				case <-time.After(10 * time.Second):
					b.Fatalf("order %d not started within 10s", k)
				}
				e.wait(uuid, 10*time.Second, db.StageCompleted)
			}
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(ms(percentile(lat, 0.5)), "ms-median")
		b.ReportMetric(ms(percentile(lat, 0.9)), "ms-p90")
	})
}

// BenchmarkRunnerEndToEnd: 400 orders inserted at once, drained by 8 workers through the omero CLI
// double (a process per call, as with the real CLI): orders per second from the INSERT to the last
// Import Completed.
func BenchmarkRunnerEndToEnd(b *testing.B) {
	forEachEngineB(b, func(b *testing.B, url func(testing.TB) string) {
		e := setup(b, url, withConfig(func(c *runner.Config) { c.MaxWorkers = 8; c.Lease = 30 * time.Second }))
		e.start()
		throughput(b, e, 400)
	})
}

// BenchmarkRunnerOverhead: as BenchmarkRunnerEndToEnd with an in-process OMERO that answers at
// once: what the agent itself costs per order (database round trips, validation, logs, links).
// ms/order is wall time per order with 8 workers; cpu-ms/order the benchmark process's CPU time
// per order (SQLite runs inside it, PostgreSQL does not); allocs/order the heap allocations.
func BenchmarkRunnerOverhead(b *testing.B) {
	forEachEngineB(b, func(b *testing.B, url func(testing.TB) string) {
		e := setup(b, url, withConfig(func(c *runner.Config) { c.MaxWorkers = 8; c.Lease = 30 * time.Second }))
		e.startWith(&fakeImporter{repo: e.double.ManagedRepo})
		throughput(b, e, 2000)
	})
}

func throughput(b *testing.B, e *env, n int) {
	var elapsed, cpu time.Duration
	var mallocs uint64
	total := 0
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// Files first, so that creating them is not measured; then the rows in one transaction.
		e.insertFiles(i, n)
		var ms0 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		cpu0 := cpuTime()
		b.StartTimer()
		t0 := time.Now()
		e.insertMany(i, n)
		total += n
		e.waitFinished(total, 10*time.Minute)
		elapsed += time.Since(t0)
		b.StopTimer()
		cpu += cpuTime() - cpu0
		var ms1 runtime.MemStats
		runtime.ReadMemStats(&ms1)
		mallocs += ms1.Mallocs - ms0.Mallocs
	}
	orders := float64(n * b.N)
	b.ReportMetric(orders/elapsed.Seconds(), "orders/s")
	b.ReportMetric(ms(elapsed)/orders, "ms/order")
	b.ReportMetric(ms(cpu)/orders, "cpu-ms/order")
	b.ReportMetric(float64(mallocs)/orders, "allocs/order")
}

// insertFiles creates the files insertMany will name.
func (e *env) insertFiles(batch, n int) {
	for i := 0; i < n; i++ {
		e.file(fmt.Sprintf("demo/alice/b%d/f%05d.tif", batch, i), "pixels")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCLIStarts: omero CLI processes started per order, through the double (a process per
// call, as with the real CLI, each about a second of Python and a session join on a real host),
// for an order of 1 file, of 10 files, of one 384-image plate imported into a Screen, and of one
// OME-Zarr registered into a Dataset; each also with notifications on (-notify: the login reads
// the requester's address too).
func BenchmarkCLIStarts(b *testing.B) {
	cases := []cliCase{
		{"1-file", []string{"one.tif"}, "151", "Dataset", 1},
		{"10-files", []string{"f0.tif", "f1.tif", "f2.tif", "f3.tif", "f4.tif", "f5.tif", "f6.tif", "f7.tif", "f8.tif", "f9.tif"}, "151", "Dataset", 10},
		{"384-image-plate", []string{"wells__series_384.plate"}, "201", "Screen", 384},
		// An OME-Zarr registered in place (omero zarr import), a bioformats2raw.layout of 2 series.
		{"zarr-registered", []string{"cells.ome.zarr/"}, "151", "Dataset", 2},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) { c.run(b) })
		b.Run(c.name+"-notify", func(b *testing.B) { c.run(b, withNotify(b)) })
	}
	// A partial order: the second of 3 filesets fails (rc 2, the third is not tried); the order is
	// verified in its annotation batch, then retried, and the retry imports the 2 missing files.
	b.Run("3-files-partial-then-retry", func(b *testing.B) {
		e := setup(b, engines[0].url)
		e.start()
		partial, again := 0, 0
		for i := 0; i < b.N; i++ {
			var paths []string
			for _, f := range []string{"a.tif", "b.tif", "c.tif"} {
				paths = append(paths, e.file(fmt.Sprintf("demo/alice/p%d/%s", i, f), "pixels"))
			}
			e.double.SetFailure(b, omerotest.Failure{ImportFail: []int{1}})
			before := len(e.double.State(b).Calls)
			uuid := e.insert("alice", "Demo", "151", "Dataset", paths)
			if o := e.expect(uuid, db.StageFailed, 2*time.Minute); o.Result == nil || o.Result.Outcome != db.OutcomePartial {
				b.Fatalf("partial order: result %+v", o.Result)
			}
			mid := len(e.double.State(b).Calls)
			partial += mid - before
			e.double.SetFailure(b, omerotest.Failure{})
			if _, err := e.store.Retry(context.Background(), uuid); err != nil {
				b.Fatal(err)
			}
			o := e.expect(uuid, db.StageCompleted, 2*time.Minute)
			again += len(e.double.State(b).Calls) - mid
			if len(o.Result.Images) != 3 || o.Result.Outcome != db.OutcomeComplete {
				b.Fatalf("retried order: result %+v", o.Result)
			}
		}
		b.ReportMetric(float64(partial)/float64(b.N), "starts/partial-order")
		b.ReportMetric(float64(again)/float64(b.N), "starts/retry")
	})
}

type cliCase struct {
	name      string
	files     []string
	destID    string
	destType  string
	wantImage int
}

func (c cliCase) run(b *testing.B, opts ...option) {
	e := setup(b, engines[0].url, opts...)
	e.start()
	starts, elapsed := 0, time.Duration(0)
	for i := 0; i < b.N; i++ {
		var paths []string
		for _, f := range c.files {
			rel := fmt.Sprintf("demo/alice/%d/%s", i, f)
			if strings.HasSuffix(f, "/") {
				paths = append(paths, e.zarr(rel, omerotest.ZarrSeries))
				continue
			}
			paths = append(paths, e.file(rel, "pixels"))
		}
		before := len(e.double.State(b).Calls)
		t0 := time.Now()
		o := e.expect(e.insert("alice", "Demo", c.destID, c.destType, paths), db.StageCompleted, 2*time.Minute)
		elapsed += time.Since(t0)
		starts += len(e.double.State(b).Calls) - before
		if o.Result == nil || len(o.Result.Images) != c.wantImage {
			b.Fatalf("result %+v, want %d images", o.Result, c.wantImage)
		}
	}
	b.ReportMetric(float64(starts)/float64(b.N), "starts/order")
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/order")
}
