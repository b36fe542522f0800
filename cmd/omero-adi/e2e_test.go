package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
)

// build is one build of omero-adi per test binary and flavour.
type build struct {
	once sync.Once
	path string
	err  error
}

var builds = map[bool]*build{false: {}, true: {}}

// agentBinary builds omero-adi once per test binary: with the race detector for tests, without it
// where the race detector would distort what is measured (memory).
func agentBinary(t testing.TB, race bool) string {
	t.Helper()
	b := builds[race]
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "omero-adi-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, "omero-adi")
		args := []string{"build", "-o", b.path}
		if race {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}

// world is a data root, a CLI double and a database shared by agent processes.
type world struct {
	t      testing.TB
	url    string
	data   string
	dir    string
	double *omerotest.Double
	store  *db.Store
}

func newWorld(t testing.TB, url string) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, url: url, data: filepath.Join(dir, "data"), dir: dir, double: omerotest.New(t)}
	if err := os.MkdirAll(w.data, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := db.Open(context.Background(), url, db.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	w.store = s
	return w
}

// settings writes a settings file for one agent process.
func (w *world) settings(name, extra string) string {
	w.t.Helper()
	p := filepath.Join(w.dir, name+".toml")
	text := fmt.Sprintf(`base_dir = %q
log_dir = %q
listen = ""
worker_name = %q
max_workers = 8
poll_interval = "200ms"
lease = "3s"
shutdown_timeout = "2s"
%s
[omero]
cli = %q
port = %d
managed_repository = %q
local_tmp_root = %q
session_dir = %q
connect_backoff = "10ms"
`, w.data, filepath.Join(w.dir, "log-"+name), name, extra, w.double.Bin, w.double.Port, w.double.ManagedRepo,
		filepath.Join(w.dir, "inplace"), filepath.Join(w.dir, "sessions-"+name))
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		w.t.Fatal(err)
	}
	return p
}

// agent starts `omero-adi run --role runner` (built with the race detector) as a process.
func (w *world) agent(name, extra string) *exec.Cmd { return w.startAgent(name, extra, true) }

// startAgent starts `omero-adi run --role runner` as a process that is killed when the test ends;
// its log is shown when the test failed.
func (w *world) startAgent(name, extra string, race bool) *exec.Cmd {
	w.t.Helper()
	return w.startRole(name, w.settings(name, extra), "runner", race)
}

// agentWithTables is agent with tables (e.g. a [notify] table) added to its settings file.
func (w *world) agentWithTables(name, tables string) *exec.Cmd {
	w.t.Helper()
	settings := w.settings(name, "")
	f, err := os.OpenFile(settings, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	_, err = f.WriteString(tables)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return w.startRole(name, settings, "runner", true)
}

// startRole starts `omero-adi --config settings run --role role` (see startAgent).
func (w *world) startRole(name, settings, role string, race bool) *exec.Cmd {
	w.t.Helper()
	cmd := exec.Command(agentBinary(w.t, race), "--config", settings, "run", "--role", role)
	cmd.Env = append(os.Environ(), "INGEST_TRACKING_DB_URL="+w.url, "OMERO_PASSWORD=omero")
	cmd.Env = append(cmd.Env, w.double.Env()...)
	logf, err := os.Create(filepath.Join(w.dir, name+".log"))
	if err != nil {
		w.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		logf.Close()
		if w.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			w.t.Logf("end of the log of agent %s:\n%s", name, b)
		}
	})
	return cmd
}

func (w *world) order(rel string) string {
	w.t.Helper()
	p := filepath.Join(w.data, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
		w.t.Fatal(err)
	}
	o, _, err := w.store.CreateOrder(context.Background(), db.NewOrder{Draft: order.Draft{Group: "Demo", User: "alice",
		Target: order.Target{Kind: order.Dataset, ID: 151}, Files: []string{p}, Source: db.SourceSQL}})
	if err != nil {
		w.t.Fatal(err)
	}
	return o.UUID
}

func (w *world) waitStages(uuids []string, timeout time.Duration, final ...string) map[string]db.Order {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	out := map[string]db.Order{}
	for time.Now().Before(deadline) {
		for _, u := range uuids {
			if _, done := out[u]; done {
				continue
			}
			o, err := w.store.Get(context.Background(), u)
			if err != nil {
				w.t.Fatal(err)
			}
			for _, s := range final {
				if o.Stage == s {
					out[u] = o
				}
			}
		}
		if len(out) == len(uuids) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.t.Fatalf("%d of %d orders reached %q within %s", len(out), len(uuids), final, timeout)
	return nil
}

// Two agent processes on one PostgreSQL import 200 orders, each exactly once.
func TestTwoAgentsShareOnePostgres(t *testing.T) {
	w := newWorld(t, pgtest.URL(t))
	var uuids []string
	for i := 0; i < 200; i++ {
		uuids = append(uuids, w.order(fmt.Sprintf("demo/alice/run/f%03d.tif", i)))
	}
	w.agent("a1", "")
	w.agent("a2", "")
	got := w.waitStages(uuids, 3*time.Minute, db.StageCompleted, db.StageFailed)
	workers := map[string]int{}
	for _, o := range got {
		if o.Stage != db.StageCompleted {
			t.Errorf("order %s: %s %s", o.UUID, o.Stage, o.Description)
		}
		if o.Attempt != 1 {
			t.Errorf("order %s ran %d times", o.UUID, o.Attempt)
		}
		hist, err := w.store.History(context.Background(), o.UUID)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range hist {
			if h.Stage == db.StageCompleted {
				workers[h.Worker]++
			}
		}
	}
	st := w.double.State(t)
	seen := map[string]int{}
	for _, imp := range st.Imports {
		for _, p := range imp.Paths {
			seen[p]++
		}
	}
	if len(st.Imports) != 200 {
		t.Errorf("the double saw %d imports, want 200", len(st.Imports))
	}
	for p, n := range seen {
		if n != 1 {
			t.Errorf("%s imported %d times", p, n)
		}
	}
	t.Logf("orders per agent: %v", workers)
	if len(workers) != 2 {
		t.Errorf("orders were not shared by both agents: %v", workers)
	}
}

// kill -9 of an agent during an import: the import's whole process group dies with the agent (the
// guard), and after the lease expires another agent recovers the order — failed as interrupted by
// default, re-run with recover_interrupted = "retry". Either way the order and OMERO agree.
func TestKilledAgentIsRecovered(t *testing.T) {
	for _, mode := range []string{"fail", "retry"} {
		t.Run(mode, func(t *testing.T) {
			w := newWorld(t, pgtest.URL(t))
			w.double.SetFailure(t, omerotest.Failure{Hang: true})
			extra := fmt.Sprintf("recover_interrupted = %q\nretry_backoff = \"100ms\"\n", mode)
			victim := w.agent("victim", extra)
			uuid := w.order("demo/alice/big.tif")
			w.waitStages([]string{uuid}, 30*time.Second, db.StageStarted)
			pids := waitHanging(t, w.double)
			if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_, _ = victim.Process.Wait()
			waitGone(t, pids, 10*time.Second)
			w.double.SetFailure(t, omerotest.Failure{})
			w.agent("rescuer", extra)
			want := db.StageFailed
			if mode == "retry" {
				want = db.StageCompleted
			}
			o := w.waitStages([]string{uuid}, time.Minute, want)[uuid]
			if mode == "fail" && !strings.Contains(o.Description, "interrupted") {
				t.Errorf("description %q does not say it was interrupted", o.Description)
			}
			ok := 0
			for _, imp := range w.double.State(t).Imports {
				if imp.ExitCode == 0 && len(imp.Images) > 0 {
					ok++
				}
			}
			if wantOK := map[string]int{"fail": 0, "retry": 1}[mode]; ok != wantOK {
				t.Errorf("%d successful imports, want %d", ok, wantOK)
			}
		})
	}
}

// kill -9 of an agent whose import would finish a few seconds later: the import dies with it and
// never reaches OMERO, so the order recovery fails as interrupted has no images there.
func TestKilledAgentsImportNeverLands(t *testing.T) {
	w := newWorld(t, pgtest.URL(t))
	w.double.SetFailure(t, omerotest.Failure{ImportDelay: 3 * time.Second})
	victim := w.agent("victim", "")
	uuid := w.order("demo/alice/late.tif")
	w.waitStages([]string{uuid}, 30*time.Second, db.StageStarted)
	waitForImportCall(t, w.double)
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = victim.Process.Wait()
	killed := time.Now()
	w.agent("rescuer", "")
	o := w.waitStages([]string{uuid}, time.Minute, db.StageFailed, db.StageCompleted)[uuid]
	if o.Stage != db.StageFailed || !strings.Contains(o.Description, "interrupted") {
		t.Errorf("order: %s %q, want failed as interrupted", o.Stage, o.Description)
	}
	time.Sleep(time.Until(killed.Add(6 * time.Second))) // twice the import's delay
	st := w.double.State(t)
	if len(st.Imports) != 0 || len(st.Filesets) != 0 || len(st.Images) != 0 {
		t.Errorf("the killed agent's import reached OMERO: %d imports, %d filesets, %d images",
			len(st.Imports), len(st.Filesets), len(st.Images))
	}
}

func waitForImportCall(t *testing.T, d *omerotest.Double) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range d.State(t).Calls {
			if len(c.Argv) > 0 && c.Argv[0] == "import" {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no import started")
}

// waitHanging waits until a hanging import recorded its processes (itself and its child).
func waitHanging(t *testing.T, d *omerotest.Double) []int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if pids := d.State(t).HangPIDs; len(pids) >= 2 {
			return pids
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no hanging import started")
	return nil
}

// waitGone fails the test when one of pids still runs after timeout.
func waitGone(t *testing.T, pids []int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %d of the import outlived its agent by %s", pid, timeout)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// SIGTERM stops claiming, gives the running import shutdown_timeout, then releases its order for
// recovery and exits 0.
func TestSIGTERMReleasesAndExitsZero(t *testing.T) {
	w := newWorld(t, pgtest.SQLiteURL(t))
	w.double.SetFailure(t, omerotest.Failure{Hang: true})
	agent := w.agent("term", "")
	uuid := w.order("demo/alice/slow.tif")
	w.waitStages([]string{uuid}, 30*time.Second, db.StageStarted)
	waitForImportCall(t, w.double)
	start := time.Now()
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent exited with %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not exit within 20s of SIGTERM")
	}
	if d := time.Since(start); d < 2*time.Second {
		t.Errorf("agent exited after %s, before shutdown_timeout (2s) was over", d)
	}
	o, err := w.store.Get(context.Background(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	if o.Stage != db.StageStarted || o.LeaseExpires == nil || o.LeaseExpires.After(time.Now()) {
		t.Errorf("after SIGTERM: stage %q lease %v, want a released Import Started order", o.Stage, o.LeaseExpires)
	}
}
