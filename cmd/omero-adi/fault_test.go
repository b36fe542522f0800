package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/order"
)

// EnvSoak sets the fault suite's duration (a Go duration); make soak sets 10m. Without it the
// suite runs its short version inside make test.
const EnvSoak = "ADI_SOAK"

// TestFaultSuite runs two agents (watcher and runner) on one PostgreSQL with the CLI double and
// podman preprocessing, one watched root on local disk and one behind bindfs, while files drop at
// random moments, SQL orders (a tenth bad) arrive, failed orders are retried by the documented
// UPDATE and some orders are cancelled — and faults strike: kill -9 of an agent (restarted),
// PostgreSQL stopped and started, the CLI double failing transiently and hanging, a container
// failing, the ManagedRepository read-only for a while and one agent's log_dir on a full tmpfs.
// Then it checks that nothing was lost or done twice and prints a summary.
func TestFaultSuite(t *testing.T) {
	dur := time.Minute
	if v := os.Getenv(EnvSoak); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: want a duration such as 10m: %v", EnvSoak, v, err)
		}
		dur = d
	}
	testenv.Root(t, "mounts bindfs, a read-only bind mount and a tmpfs")
	bindfs := testenv.LookPath(t, "bindfs", "apt-get install bindfs fuse3")
	image := convtest.Image(t)
	pg := pgtest.Own(t)
	s := newSuite(t, pg, bindfs, image, dur)
	s.run()
	if t.Failed() {
		s.keepLogs()
	}
}

// keepLogs copies the agents' logs out of the test's folder, which is removed, and says where.
func (s *suite) keepLogs() {
	dir, err := os.MkdirTemp("", "adi-faultsuite-")
	if err != nil {
		return
	}
	for _, n := range []string{"a1.log", "a2.log", "a1.toml", "a2.toml"} {
		if b, err := os.ReadFile(filepath.Join(s.w.dir, n)); err == nil {
			_ = os.WriteFile(filepath.Join(dir, n), b, 0o644)
		}
	}
	if b, err := os.ReadFile(s.w.double.StatePath + ".journal"); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "double.journal"), b, 0o644)
	}
	s.t.Logf("agent logs and the double's journal kept in %s", dir)
}

// fault is one fault in the timeline: what, which agent (if any), when.
type fault struct {
	name, agent string
	from, to    time.Time
}

// expectation is what the suite knows of an order or a dropped unit.
type expectation struct {
	path      string   // the file or folder of the unit (watch units, good SQL orders)
	files     []string // the files imported for it (a folder unit's files; else path)
	uuid      string   // SQL orders: known at once; watch orders: found later
	bad       bool     // must end Import Failed with a description
	cancelled bool     // cancelled on purpose: imported at most once
	preproc   bool     // converted first: its import paths are the converter's results
	why       string   // what makes it bad or special
}

type agentProc struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	warmRSS int64 // kB, measured once warmed up
}

type suite struct {
	t        *testing.T
	w        *world
	pg       *pgtest.Cluster
	image    string
	dur      time.Duration
	mnt      string     // bindfs mount point inside the data root
	src      string     // what bindfs shows
	logFull  string     // tmpfs log_dir of agent a2
	rngMu    sync.Mutex // guards rng: the load goroutines draw from it concurrently
	rng      *rand.Rand
	mu       sync.Mutex
	faults   []fault
	expect   []*expectation
	hashes   map[string]string // original -> sha256 at drop time
	agents   map[string]*agentProc
	retries  int
	dropped  int
	sqlCount int
}

// intn and int63 draw from the suite's random source; the load goroutines share it.
func (s *suite) intn(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Intn(n)
}

func (s *suite) int63() int64 {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.Int63()
}

func newSuite(t *testing.T, pg *pgtest.Cluster, bindfs, image string, dur time.Duration) *suite {
	w := newWorld(t, pg.URL(t))
	s := &suite{t: t, w: w, pg: pg, image: image, dur: dur, rng: rand.New(rand.NewSource(time.Now().UnixNano())),
		hashes: map[string]string{}, agents: map[string]*agentProc{}}
	s.src = filepath.Join(w.dir, "share-src")
	s.mnt = filepath.Join(w.data, "share")
	for _, d := range []string{s.src + "/demo/alice/dropbox", s.src + "/demo/bob/dropbox", s.mnt,
		w.data + "/demo/alice/dropbox/burst", w.data + "/demo/bob/dropbox", w.data + "/demo/alice/leica",
		w.data + "/demo/plates/alice", w.data + "/demo/alice/sql", w.data + "/other"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mount(t, bindfs, s.src, s.mnt)
	// a2's log_dir: a small tmpfs, filled up.
	s.logFull = filepath.Join(w.dir, "log-full")
	if err := os.MkdirAll(s.logFull, 0o755); err != nil {
		t.Fatal(err)
	}
	mount(t, "mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", s.logFull)
	// The ManagedRepository is its own bind mount so that it can turn read-only, even for root.
	mount(t, "mount", "--bind", w.double.ManagedRepo, w.double.ManagedRepo)
	return s
}

// mount runs a mount command and unmounts its target when the test ends.
func mount(t *testing.T, prog string, args ...string) {
	t.Helper()
	if out, err := exec.Command(prog, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", prog, strings.Join(args, " "), err, out)
	}
	target := args[len(args)-1]
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", target).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", target, err, out)
		}
	})
}

// settings writes agent name's settings: both roles, the three rules, podman preprocessing.
func (s *suite) settings(name string) string {
	w := s.w
	logDir := filepath.Join(w.dir, "log-"+name)
	if name == "a2" {
		logDir = s.logFull
	}
	var extra []string
	for _, a := range convtest.PodmanArgs() {
		extra = append(extra, strconv.Quote(a))
	}
	text := fmt.Sprintf(`base_dir = %q
log_dir = %q
listen = ""
worker_name = %q
max_workers = 4
poll_interval = "200ms"
lease = "5s"
shutdown_timeout = "2s"

[omero]
cli = %q
port = %d
managed_repository = %q
local_tmp_root = %q
session_dir = %q
connect_backoff = "100ms"
connect_retries = 5
import_timeout = "8s"

[preprocessing]
runtime = "podman"
extra_args = [%s]
timeout = "60s"

[groups.Demo]
roots = [%q, %q]

[watch]
mode = "auto"
rescan_interval = "3s"
poll_interval = "500ms"

[[rules]]
name = "local-dropbox"
group = "Demo"
path = %q
users = ["alice", "bob"]
include = ["**/*.tif"]
unit = "file"
settle = "1s"
destination = "Dataset:151"

[[rules]]
name = "share-dropbox"
group = "Demo"
path = %q
users = ["alice", "bob"]
include = ["**/*.tif"]
unit = "file"
settle = "1s"
destination = "Dataset:152"

[[rules]]
name = "plates"
group = "Demo"
path = %q
users = ["alice"]
include = ["**/*"]
unit = "folder"
settle = "20s"
marker = "transfer.done"
destination = "Screen:201"

[[rules]]
name = "leica"
group = "Demo"
path = %q
users = ["alice"]
include = ["**/*.lif"]
unit = "file"
settle = "1s"
destination = "Dataset:151"

[rules.preprocessing]
container = %q
input_file = "{Files}"
output_folder = "/data"
alt_output_folder = "/out"
`, w.data, logDir, name, w.double.Bin, w.double.Port, w.double.ManagedRepo, filepath.Join(w.dir, "inplace"),
		filepath.Join(w.dir, "sessions-"+name), strings.Join(extra, ", "),
		filepath.Join(w.data, "demo"), filepath.Join(s.mnt, "demo"),
		filepath.Join(w.data, "demo/{user}/dropbox"), filepath.Join(s.mnt, "demo/{user}/dropbox"),
		filepath.Join(w.data, "demo/plates/{user}"), filepath.Join(w.data, "demo/{user}/leica"), s.image)
	p := filepath.Join(w.dir, name+".toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return p
}

// start starts agent name (plain build: its memory is measured) with both roles.
func (s *suite) start(name string) {
	w := s.w
	cmd := exec.Command(agentBinary(s.t, false), "--config", s.settings(name), "run")
	cmd.Env = append(os.Environ(), "INGEST_TRACKING_DB_URL="+w.url, "OMERO_PASSWORD=omero")
	cmd.Env = append(cmd.Env, w.double.Env()...)
	logf, err := os.OpenFile(filepath.Join(w.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	logf.Close()
	s.mu.Lock()
	s.agents[name] = &agentProc{name: name, cmd: cmd, started: time.Now()}
	s.mu.Unlock()
	s.t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
}

func (s *suite) kill(name string) {
	s.mu.Lock()
	a := s.agents[name]
	s.mu.Unlock()
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = a.cmd.Process.Wait()
}

func (s *suite) note(f fault) {
	s.mu.Lock()
	s.faults = append(s.faults, f)
	s.mu.Unlock()
	s.t.Logf("fault %-28s agent %-3s %s .. %s", f.name, f.agent, f.from.Format("15:04:05.0"), f.to.Format("15:04:05.0"))
}

func (s *suite) add(e *expectation) {
	s.mu.Lock()
	s.expect = append(s.expect, e)
	s.mu.Unlock()
}

// write creates an original file, slowly when slow (three chunks, 400 ms apart), and remembers
// its hash.
func (s *suite) write(p string, slow bool) {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Error(err)
		return
	}
	content := []byte(fmt.Sprintf("pixels of %s %d\n", p, s.int63()))
	f, err := os.Create(p)
	if err != nil {
		s.t.Error(err)
		return
	}
	chunks := 1
	if slow {
		chunks = 3
	}
	for i := 0; i < chunks; i++ {
		_, _ = f.Write(content)
		if slow {
			time.Sleep(400 * time.Millisecond)
		}
	}
	f.Close()
	b, _ := os.ReadFile(p)
	sum := sha256.Sum256(b)
	s.mu.Lock()
	s.hashes[p] = hex.EncodeToString(sum[:])
	s.mu.Unlock()
}

// drops puts files, folder units and .lif files into the watched roots at random moments.
func (s *suite) drops(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	for i := 0; ctx.Err() == nil; i++ {
		user := []string{"alice", "bob"}[i%2]
		switch k := s.intn(20); {
		case k < 8:
			p := filepath.Join(s.w.data, "demo", user, "dropbox", fmt.Sprintf("d%04d.tif", i))
			s.write(p, k < 2)
			s.add(&expectation{path: p})
		case k < 15:
			name := fmt.Sprintf("s%04d.tif", i)
			s.write(filepath.Join(s.src, "demo", user, "dropbox", name), k < 10)
			s.add(&expectation{path: filepath.Join(s.mnt, "demo", user, "dropbox", name)})
		case k < 17:
			dir := filepath.Join(s.w.data, "demo/plates/alice", fmt.Sprintf("plate%04d", i))
			for j := 0; j < 3; j++ {
				s.write(filepath.Join(dir, fmt.Sprintf("well%d.tif", j)), false)
			}
			if err := os.WriteFile(filepath.Join(dir, "transfer.done"), nil, 0o644); err != nil {
				s.t.Error(err)
			}
			e := &expectation{path: dir}
			for j := 0; j < 3; j++ {
				e.files = append(e.files, filepath.Join(dir, fmt.Sprintf("well%d.tif", j)))
			}
			s.add(e)
		default:
			p := filepath.Join(s.w.data, "demo/alice/leica", fmt.Sprintf("l%04d.lif", i))
			s.write(p, false)
			s.add(&expectation{path: p, preproc: true})
		}
		s.mu.Lock()
		s.dropped++
		s.mu.Unlock()
		sleep(ctx, time.Duration(300+s.intn(900))*time.Millisecond)
	}
}

// badOrders are SQL rows the agent must refuse, each with what makes it bad.
func (s *suite) badOrder(i int) (files, destType, destID, why string) {
	good := filepath.Join(s.w.data, "demo/alice/sql/exists.tif")
	switch i % 7 {
	case 0:
		return `["relative/a.tif"]`, "Dataset", "151", "relative path"
	case 1:
		return fmt.Sprintf(`[%q]`, filepath.Join(s.w.data, "demo/alice/sql/missing.tif")), "Dataset", "151", "missing file"
	case 2:
		return fmt.Sprintf(`[%q]`, filepath.Join(s.w.data, "other/x.tif")), "Dataset", "151", "outside the group's roots"
	case 3:
		return fmt.Sprintf(`[%q]`, good), "Project", "151", "unknown destination type"
	case 4:
		return fmt.Sprintf(`{"file": %q}`, good), "Dataset", "151", "files not a list"
	case 5:
		return fmt.Sprintf(`[%q]`, s.w.data+"/demo/alice/sql/../../../../etc/passwd"), "Dataset", "151", "'..' out of the data root"
	default:
		return fmt.Sprintf(`[%q]`, good), "Dataset", "not-a-number", "bad destination id"
	}
}

// sqlOrders inserts hand-written orders: a tenth bad, one in ten cancelled at once, one failing
// container.
func (s *suite) sqlOrders(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	s.write(filepath.Join(s.w.data, "demo/alice/sql/exists.tif"), false)
	if err := os.WriteFile(filepath.Join(s.w.data, "other/x.tif"), []byte("x"), 0o644); err != nil {
		s.t.Error(err)
	}
	q := s.w.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files, preprocessing_id)
		VALUES ('Demo', 'alice', ?, ?, 'Import Pending', ?, ?, ?)`)
	for i := 0; ctx.Err() == nil; i++ {
		uuid := fmt.Sprintf("5a1e0000-0000-4000-8000-%012d", i)
		e := &expectation{uuid: uuid}
		files, destType, destID := "", "Dataset", "151"
		var pre any
		switch {
		case i%10 == 9:
			files, destType, destID, e.why = s.badOrder(i / 10)
			e.bad = true
		case i == 5:
			// A container that fails: the order must fail with its description.
			p := filepath.Join(s.w.data, "demo/alice/sql", fmt.Sprintf("q%04d.lif", i))
			s.write(p, false)
			var id int64
			err := s.w.store.DB().QueryRow(`INSERT INTO imports_preprocessing (container, input_file, output_folder, alt_output_folder, extra_params)
				VALUES ($1, '{Files}', '/data', '/out', '{"fail": "exit"}') RETURNING id`, s.image).Scan(&id)
			if err != nil {
				s.t.Errorf("insert preprocessing: %v", err)
				continue
			}
			files, pre, e.bad, e.why = fmt.Sprintf("[%q]", p), id, true, "container exits non-zero"
		default:
			p := filepath.Join(s.w.data, "demo/alice/sql", fmt.Sprintf("q%04d.tif", i))
			s.write(p, false)
			files, e.path = fmt.Sprintf("[%q]", p), p
		}
		if _, err := s.w.store.DB().ExecContext(ctx, q, destID, destType, uuid, files, pre); err != nil {
			if ctx.Err() == nil {
				// The database may be stopped: this order was never placed.
				sleep(ctx, time.Second)
			}
			continue
		}
		if !e.bad && i%10 == 3 {
			e.cancelled = true
			_, _ = s.w.store.Cancel(ctx, uuid)
		}
		s.add(e)
		s.mu.Lock()
		s.sqlCount++
		s.mu.Unlock()
		sleep(ctx, time.Duration(400+s.intn(800))*time.Millisecond)
	}
}

// faultsAt plays the faults over the run.
func (s *suite) faultsAt(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	at := func(frac float64) bool {
		return sleep(ctx, time.Until(s.begin().Add(time.Duration(frac*float64(s.dur)))))
	}
	outage := min(30*time.Second, s.dur/8)
	for _, step := range []struct {
		frac float64
		do   func()
	}{
		{0.12, func() { s.killAndRestart("a1") }},
		{0.20, func() {
			from := time.Now()
			s.w.double.SetFailure(s.t, omerotest.Failure{ConnectionRefused: 3})
			s.note(fault{name: "cli refuses 3 calls", from: from, to: from.Add(5 * time.Second)})
		}},
		{0.30, func() {
			from := time.Now()
			s.pg.Stop()
			sleep(ctx, outage)
			s.pg.Start(s.t)
			s.note(fault{name: "postgresql stopped", from: from, to: time.Now()})
		}},
		{0.35, func() {
			from := time.Now()
			filler, err := os.Create(filepath.Join(s.logFull, "filler"))
			if err != nil {
				s.t.Error(err)
				return
			}
			_, _ = filler.Write(make([]byte, 8<<20)) // stops at ENOSPC
			filler.Close()
			sleep(ctx, max(4*time.Second, s.dur/10))
			_ = os.Remove(filler.Name())
			s.note(fault{name: "log_dir full", agent: "a2", from: from, to: time.Now()})
		}},
		{0.42, func() { s.overflow() }},
		{0.50, func() { s.killAndRestart("a2") }},
		{0.55, func() {
			from := time.Now()
			s.w.double.SetFailure(s.t, omerotest.Failure{Hang: true})
			sleep(ctx, time.Second)
			s.w.double.SetFailure(s.t, omerotest.Failure{})
			s.note(fault{name: "cli hangs", from: from, to: time.Now().Add(10 * time.Second)})
		}},
		{0.65, func() {
			from := time.Now()
			repo := s.w.double.ManagedRepo
			if out, err := exec.Command("mount", "-o", "remount,bind,ro", repo).CombinedOutput(); err != nil {
				s.t.Errorf("remount ManagedRepository read-only: %v: %s", err, out)
			}
			sleep(ctx, max(3*time.Second, s.dur/20))
			if out, err := exec.Command("mount", "-o", "remount,bind,rw", repo).CombinedOutput(); err != nil {
				s.t.Errorf("remount ManagedRepository writable: %v: %s", err, out)
			}
			s.note(fault{name: "ManagedRepository read-only", from: from, to: time.Now()})
		}},
		{0.75, func() { s.killAndRestart("a1") }},
	} {
		if !at(step.frac) {
			return
		}
		step.do()
	}
}

// overflow makes agent a1's inotify queue overflow: a1 is stopped (SIGSTOP, for less than the
// lease minus a heartbeat interval)
// while thousands of files that match no rule appear and go in a watched folder, with two good
// files among them; the kernel drops events past its queue (16,384 by default) and a1 must rescan.
func (s *suite) overflow() {
	for try := 1; ; try++ {
		seen := s.overflowsSeen()
		s.burst(try)
		// a1 logs the overflow once it runs again; a burst it missed (on a loaded machine, a1 may
		// still be starting after a kill, before its watches exist) is made once more.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) && s.overflowsSeen() == seen {
			time.Sleep(200 * time.Millisecond)
		}
		if s.overflowsSeen() > seen || try == 2 {
			return
		}
		s.t.Logf("agent a1 logged no overflow after burst %d: making another", try)
	}
}

// overflowsSeen counts the overflows agent a1 has logged so far.
func (s *suite) overflowsSeen() int {
	b, _ := os.ReadFile(filepath.Join(s.w.dir, "a1.log"))
	return strings.Count(string(b), "inotify event queue overflowed")
}

// burst is one try of overflow.
func (s *suite) burst(try int) {
	s.mu.Lock()
	a := s.agents["a1"]
	s.mu.Unlock()
	from := time.Now()
	dir := filepath.Join(s.w.data, "demo/alice/dropbox/burst") // watched since the start
	_ = a.cmd.Process.Signal(syscall.SIGSTOP)
	for i := 0; i < 2; i++ {
		p := filepath.Join(dir, fmt.Sprintf("b%d-%d.tif", try, i))
		s.write(p, false)
		s.add(&expectation{path: p})
	}
	// Each file makes six events or more (create, modify, attrib, moved from, moved to, delete):
	// more than the kernel's queue holds even when the time limit cuts the loop short.
	queue := 16384
	if b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events"); err == nil {
		queue, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	// Alternating chmods of two ignored files make one event per system call (the kernel merges
	// only an event identical to the one queued last), so the queue overflows even on a loaded
	// machine where the file loop below gets through few files before the time limit.
	pair := [2]string{filepath.Join(dir, "a.part"), filepath.Join(dir, "b.part")}
	for _, p := range pair {
		_ = os.WriteFile(p, []byte("x"), 0o644)
	}
	chmods := 0
	for ; chmods < queue+4000 && time.Since(from) < 1500*time.Millisecond; chmods++ {
		_ = os.Chmod(pair[chmods%2], os.FileMode(0o600|(chmods/2%2)<<2))
	}
	for _, p := range pair {
		_ = os.Remove(p)
	}
	n := 0
	for ; n < queue/3+2000 && time.Since(from) < 2500*time.Millisecond; n++ {
		p := filepath.Join(dir, fmt.Sprintf("n%06d.part", n))
		_ = os.WriteFile(p, []byte("x"), 0o644)
		_ = os.Chmod(p, 0o600)
		_ = os.Rename(p, p+"~")
		_ = os.Remove(p + "~")
	}
	_ = a.cmd.Process.Signal(syscall.SIGCONT)
	s.note(fault{name: fmt.Sprintf("inotify overflow (%d chmods, %d files)", chmods, n), agent: "a1", from: from, to: time.Now()})
}

func (s *suite) killAndRestart(name string) {
	from := time.Now()
	s.kill(name)
	time.Sleep(2 * time.Second)
	s.start(name)
	s.note(fault{name: "kill -9", agent: name, from: from, to: time.Now()})
}

var beginOnce sync.Once
var beginAt time.Time

func (s *suite) begin() time.Time {
	beginOnce.Do(func() { beginAt = time.Now() })
	return beginAt
}

// sleep waits d or until ctx ends; it reports whether the full time passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// importsOf counts the successful imports (journal) and filesets (state) per client path.
func importsOf(st omerotest.State) (imports map[string]int, filesets map[string]int) {
	imports, filesets = map[string]int{}, map[string]int{}
	for _, imp := range st.Imports {
		if imp.ExitCode != 0 || len(imp.Filesets) == 0 {
			continue
		}
		for _, p := range imp.Paths {
			imports[p]++
		}
	}
	for _, fs := range st.Filesets {
		for _, p := range fs.ClientPaths {
			filesets[p]++
		}
	}
	return imports, filesets
}

// touched reports whether anything of path (a file, or a folder's files) reached OMERO.
func touched(path string, imports, filesets map[string]int) int {
	n := imports[path]
	for p, c := range filesets {
		if p == path || strings.HasPrefix(p, path+"/") {
			n += c
		}
	}
	return n
}

// retryFailed is the admin: a failed good order with nothing in OMERO is retried with the
// documented UPDATE.
func (s *suite) retryFailed(ctx context.Context) {
	orders, err := s.w.store.List(ctx, db.Filter{Stage: db.StageFailed})
	if err != nil {
		return
	}
	imports, filesets := importsOf(s.w.double.State(s.t))
	good := s.goodByUUID(orders)
	for _, o := range orders {
		e, ok := good[o.UUID]
		if !ok || e.bad || o.Result != nil && len(o.Result.Filesets) > 0 {
			continue // in OMERO already (its result names filesets): a retry would import it twice
		}
		if e.path != "" && touched(e.path, imports, filesets) > 0 {
			continue // in OMERO already: a retry would import it twice
		}
		q := s.w.store.DB().Rebind(`UPDATE imports SET stage = 'Import Pending' WHERE uuid = ?`)
		if _, err := s.w.store.DB().ExecContext(ctx, q, o.UUID); err == nil {
			s.mu.Lock()
			s.retries++
			s.mu.Unlock()
			s.t.Logf("retry %s (%s): %s", o.UUID, e.path, o.Description)
		}
	}
}

// goodByUUID links watch orders to the dropped units they came from (by their files) and returns
// every expectation by order uuid.
func (s *suite) goodByUUID(orders []db.Order) map[string]*expectation {
	s.mu.Lock()
	defer s.mu.Unlock()
	byPath := map[string]*expectation{}
	out := map[string]*expectation{}
	for _, e := range s.expect {
		if e.uuid != "" {
			out[e.uuid] = e
		} else {
			byPath[e.path] = e
		}
	}
	for _, o := range orders {
		if _, ok := out[o.UUID]; ok {
			continue
		}
		files, _ := o.FileList()
		for _, f := range files {
			if e, ok := byPath[f]; ok {
				out[o.UUID] = e
			} else if e, ok := byPath[filepath.Dir(f)]; ok {
				out[o.UUID] = e // a folder unit's order lists its files
			}
		}
	}
	return out
}

func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func (s *suite) run() {
	t := s.t
	s.begin()
	s.start("a1")
	s.start("a2")
	ctx, cancel := context.WithTimeout(context.Background(), s.dur)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(3)
	go s.drops(ctx, &wg)
	go s.sqlOrders(ctx, &wg)
	go s.faultsAt(ctx, &wg)
	// Warm-up memory of each agent process, 10 s after it started; failed orders retried.
	tick := time.NewTicker(2 * time.Second)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			s.measureWarm()
			s.retryFailed(ctx)
		}
	}
	tick.Stop()
	wg.Wait()
	t.Logf("load over: %d units dropped, %d SQL orders; draining", s.dropped, s.sqlCount)

	// Drain: every unit becomes an order and every order ends; failed good ones are retried. A
	// slow machine gets as long as orders keep finishing; two minutes without one is a failure.
	const stall = 2 * time.Minute
	lastFinal, lastProgress := -1, time.Now()
	for {
		s.measureWarm()
		drainCtx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.retryFailed(drainCtx)
		done, final := s.settled(drainCtx)
		dcancel()
		if done {
			break
		}
		if final != lastFinal {
			lastFinal, lastProgress = final, time.Now()
		}
		if time.Since(lastProgress) > stall {
			t.Errorf("no order finished for %s while orders are still pending or running, or units have no order", stall)
			break
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("drained in %s", time.Since(s.begin().Add(s.dur)).Round(time.Second))
	s.check()
}

func (s *suite) measureWarm() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.agents {
		if a.warmRSS == 0 && time.Since(a.started) > 10*time.Second {
			a.warmRSS = rss(a.cmd.Process.Pid)
		}
	}
}

// settled reports whether every order is final and every expectation has an order, and how many
// orders are final.
func (s *suite) settled(ctx context.Context) (bool, int) {
	orders, err := s.w.store.List(ctx, db.Filter{})
	if err != nil {
		return false, -1
	}
	final, done := 0, true
	for _, o := range orders {
		switch o.Stage {
		case db.StagePending, db.StageStarted, db.StagePreprocessing:
			done = false
		default:
			final++
		}
	}
	if !done {
		return false, final
	}
	good := s.goodByUUID(orders)
	seen := map[*expectation]bool{}
	for _, e := range good {
		seen[e] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.expect {
		if !seen[e] {
			return false, final
		}
	}
	return true, final
}

// check verifies the end state and prints the summary; each failure names the order, the faults
// during its life and the agents in its history.
func (s *suite) check() {
	t := s.t
	ctx := context.Background()
	orders, err := s.w.store.List(ctx, db.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	st := s.w.double.State(t)
	imports, filesets := importsOf(st)
	good := s.goodByUUID(orders)
	byUUID := map[string]db.Order{}
	for _, o := range orders {
		byUUID[o.UUID] = o
	}
	failures := 0
	fail := func(o db.Order, format string, args ...any) {
		failures++
		t.Errorf("order %s (%s): %s\n\t%s", o.UUID, o.Stage, order.Clip(fmt.Sprintf(format, args...), 400), s.context(ctx, o))
	}
	counts := map[string]int{}
	honest := 0
	var ordersOf = map[*expectation][]db.Order{}
	for _, o := range orders {
		counts[o.Stage]++
		e, ok := good[o.UUID]
		if !ok {
			fail(o, "an order the suite did not place or drop (files %s)", o.Files)
			continue
		}
		ordersOf[e] = append(ordersOf[e], o)
		switch {
		case o.Stage == db.StagePending || o.Stage == db.StageStarted || o.Stage == db.StagePreprocessing:
			fail(o, "left running or pending")
		case e.bad && (o.Stage != db.StageFailed || o.Description == ""):
			fail(o, "bad order (%s) ended %q with description %q, want Import Failed with a description", e.why, o.Stage, o.Description)
		case !e.bad && !e.cancelled && o.Stage == db.StageFailed && strings.Contains(o.Description, "in OMERO") &&
			(touched(e.path, imports, filesets) > 0 || o.Result != nil && len(o.Result.Filesets) > 0):
			// Interrupted after its import reached OMERO (an agent killed at that moment): failed
			// honestly, never retried, counted below.
			honest++
		case !e.bad && !e.cancelled && o.Stage != db.StageCompleted:
			fail(o, "good order ended %q: %s", o.Stage, o.Description)
		}
		if o.Stage == db.StageFailed && e.path != "" && touched(e.path, imports, filesets) > 0 && !strings.Contains(o.Description, "in OMERO") {
			fail(o, "failed, but %s is in OMERO and the description does not say so: %s", e.path, o.Description)
		}
	}
	s.mu.Lock()
	expect := append([]*expectation(nil), s.expect...)
	s.mu.Unlock()
	for _, e := range expect {
		got := ordersOf[e]
		if len(got) == 0 {
			failures++
			t.Errorf("unit %s (%s) became no order", e.path, e.uuid)
			continue
		}
		if len(got) > 1 {
			fail(got[0], "unit %s became %d orders", e.path, len(got))
		}
		if e.bad || e.preproc || e.path == "" {
			continue
		}
		files := e.files
		if len(files) == 0 {
			files = []string{e.path}
		}
		for _, f := range files {
			switch n := imports[f]; {
			case e.cancelled && n > 1:
				fail(got[0], "cancelled unit's %s imported %d times", f, n)
			case !e.cancelled && n != 1:
				fail(got[0], "%s imported %d times (the double's journal), want exactly once", f, n)
			}
		}
	}
	// Preprocessed orders: exactly one import of results per completed order.
	for _, o := range orders {
		if e := good[o.UUID]; e != nil && e.preproc && o.Stage == db.StageCompleted && (o.Result == nil || len(o.Result.Filesets) == 0) {
			fail(o, "preprocessed order completed without a result")
		}
	}
	// Originals unchanged.
	changed := 0
	s.mu.Lock()
	for p, h := range s.hashes {
		b, err := os.ReadFile(p)
		sum := sha256.Sum256(b)
		if err != nil || hex.EncodeToString(sum[:]) != h {
			changed++
			t.Errorf("original %s changed or gone: %v", p, err)
		}
	}
	originals := len(s.hashes)
	s.mu.Unlock()
	// No dangling link in the ManagedRepository.
	links, dangling := 0, 0
	_ = filepath.WalkDir(s.w.double.ManagedRepo, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type()&os.ModeSymlink != 0 {
			links++
			if _, err := os.Stat(p); err != nil {
				dangling++
				t.Errorf("dangling link %s: %v", p, err)
			}
		}
		return nil
	})
	// No temp folder left except ones a description or history names.
	var named strings.Builder
	for _, o := range orders {
		named.WriteString(o.Description)
		if h, err := s.w.store.History(ctx, o.UUID); err == nil {
			for _, e := range h {
				named.WriteString(e.Description)
			}
		}
	}
	temps, _ := filepath.Glob(filepath.Join(s.w.dir, "inplace", "*"))
	leftTemps := 0
	for _, d := range temps {
		if !strings.Contains(named.String(), d) {
			leftTemps++
			t.Errorf("temp folder %s left and named by no order", d)
		}
	}
	// Memory of each agent: end within 1.5x of warm-up.
	s.mu.Lock()
	var mem []string
	for _, name := range []string{"a1", "a2"} {
		a := s.agents[name]
		end := rss(a.cmd.Process.Pid)
		mem = append(mem, fmt.Sprintf("%s %d -> %d kB", name, a.warmRSS, end))
		if a.warmRSS == 0 || end == 0 {
			t.Errorf("agent %s: memory not measured (warm %d kB, end %d kB; exited?)", name, a.warmRSS, end)
		} else if float64(end) > 1.5*float64(a.warmRSS) {
			t.Errorf("agent %s: resident memory %d kB at the end, more than 1.5x the %d kB after warm-up", name, end, a.warmRSS)
		}
	}
	faults := append([]fault(nil), s.faults...)
	retries, dropped, sqlCount := s.retries, s.dropped, s.sqlCount
	logA1, _ := os.ReadFile(filepath.Join(s.w.dir, "a1.log"))
	overflows := strings.Count(string(logA1), "inotify event queue overflowed")
	if overflows == 0 {
		t.Errorf("agent a1 never reported an inotify overflow: the overflow fault did not happen")
	}
	s.mu.Unlock()

	stages := make([]string, 0, len(counts))
	for k, v := range counts {
		stages = append(stages, fmt.Sprintf("%s=%d", strings.TrimPrefix(k, "Import "), v))
	}
	sort.Strings(stages)
	names := make([]string, len(faults))
	for i, f := range faults {
		names[i] = f.name
		if f.agent != "" {
			names[i] += "(" + f.agent + ")"
		}
	}
	t.Logf("summary: duration %s; units dropped %d, SQL orders %d, orders %d (%s; failed after reaching OMERO, saying so: %d); retries by UPDATE %d; "+
		"faults %d: %s; imports in the double %d; originals %d (changed %d); ManagedRepository links %d (dangling %d); "+
		"temp folders left unnamed %d; memory %s; inotify overflows seen by a1 %d; failures %d",
		s.dur, dropped, sqlCount, len(orders), strings.Join(stages, " "), honest, retries, len(faults), strings.Join(names, ", "),
		len(st.Imports), originals, changed, links, dangling, leftTemps, strings.Join(mem, ", "), overflows, failures)
}

// context describes an order for a failure: the faults during its life and its history's agents.
func (s *suite) context(ctx context.Context, o db.Order) string {
	h, _ := s.w.store.History(ctx, o.UUID)
	var from, to time.Time
	agents := map[string]bool{}
	var lines []string
	for _, e := range h {
		if from.IsZero() || e.At.Before(from) {
			from = e.At
		}
		if e.At.After(to) {
			to = e.At
		}
		agents[e.Worker] = true
		lines = append(lines, fmt.Sprintf("%s %s %s: %s", e.At.Format("15:04:05.000"), e.Worker, e.Stage, order.Clip(e.Description, 240)))
	}
	var during []string
	s.mu.Lock()
	for _, f := range s.faults {
		if !f.to.Before(from.Add(-5*time.Second)) && !f.from.After(to) {
			during = append(during, fmt.Sprintf("%s %s (%s..%s)", f.name, f.agent, f.from.Format("15:04:05"), f.to.Format("15:04:05")))
		}
	}
	s.mu.Unlock()
	names := make([]string, 0, len(agents))
	for a := range agents {
		names = append(names, a)
	}
	sort.Strings(names)
	b, _ := json.Marshal(lines)
	return fmt.Sprintf("agents %v; faults during its life %v; history %s", names, during, b)
}
