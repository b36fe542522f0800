package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
)

// cachedDB is where runAgent keeps the orders database of a fully ordered tree between runs (next
// to the tree; dropped when the tree is rebuilt), so that the agent starts in its steady state
// instead of creating 200,000 orders first.
func cachedDB(root string) string { return root + ".orders.db" }

// runAgent measures the real agent (`omero-adi run --role watcher`, SQLite, listen="") watching
// the tree and an empty drop folder, both with settle = 1s:
//   - idle CPU: utime+stime of the agent (/proc/PID/stat) over -idle with no changes, once the
//     start-up scan is done ("root scanned" for both roots) and the CPU use has calmed down (the
//     start-up scan's candidates settle, are fingerprinted and looked up, or ordered on the first
//     run);
//   - drop -> order latency: files written one at a time into the drop folder; the latency of each
//     is the order's creation time in the database (adi_watch_items.created) minus the time its
//     write finished.
func runAgent(args []string) error {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	tf := addTreeFlags(fs)
	bin := fs.String("bin", "bin/omero-adi", "the omero-adi binary (make build)")
	idle := fs.Duration("idle", 60*time.Second, "idle CPU measurement window")
	drops := fs.Int("drops", 20, "files dropped one at a time for the latency")
	settle := fs.Duration("settle", time.Second, "settle of both rules")
	cpuTarget := fs.Float64("cpu-target", 1, "target: idle CPU under this percentage of one core")
	latTarget := fs.Duration("latency-target", 250*time.Millisecond, "target: median latency at most settle plus this")
	rssTarget := fs.Float64("rss-target-mb", 60, "target: peak RSS (VmHWM) of the agent starting on the ordered tree at most this many MB (10^6 bytes), start-up included")
	rssFirstTarget := fs.Float64("rss-first-target-mb", 200, "the same target for the first run, which orders the whole tree")
	startupEvery := fs.Duration("startup-every", 100*time.Millisecond, "time between two drops during the tree's start scan")
	calmTimeout := fs.Duration("calm-timeout", 10*time.Minute, "how long to wait for the start-up work to finish")
	keep := fs.Bool("keep", false, "keep the work folder (settings, database, agent.log)")
	fs.Parse(args)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := tf.ensure()
	if err != nil {
		return err
	}
	binPath, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(binPath); err != nil {
		return fmt.Errorf("agent binary: %w (run make build)", err)
	}
	// The work folder sits next to the tree: base_dir is their common parent.
	base := filepath.Dir(root)
	work, err := os.MkdirTemp(base, "omero-adi-bench-agent-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Printf("work folder %s\n", work)
	} else {
		defer os.RemoveAll(work)
	}
	drop := filepath.Join(work, "drop")
	if err := os.MkdirAll(drop, 0o755); err != nil {
		return err
	}
	dbPath := filepath.Join(work, "adi.db")
	cached := false
	if _, err := os.Stat(cachedDB(root)); err == nil {
		if err := copyFile(cachedDB(root), dbPath); err != nil {
			return err
		}
		cached = true
	}
	settings := filepath.Join(work, "settings.toml")
	text := fmt.Sprintf(`ingest_tracking_db = "sqlite:///%s"
base_dir = %q
log_dir = %q
listen = ""

[groups.Bench]
roots = [%q]

[watch]
mode = "events"

[[rules]]
name = "bench"
group = "Bench"
path = %q
user = "bench"
include = ["**/*.tif"]
settle = %q
destination = "Dataset:1"

[[rules]]
name = "drop"
group = "Bench"
path = %q
user = "bench"
include = ["**/*.tif"]
settle = %q
destination = "Dataset:2"
`, dbPath, base, filepath.Join(work, "log"), base, root, settle.String(), drop, settle.String())
	if err := os.WriteFile(settings, []byte(text), 0o644); err != nil {
		return err
	}

	logFile, err := os.Create(filepath.Join(work, "agent.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.CommandContext(ctx, binPath, "--config", settings, "run", "--role", "watcher")
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	pid := cmd.Process.Pid
	scanned := make(chan string, 4)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if strings.Contains(line, `msg="root scanned"`) {
				select {
				case scanned <- line:
				default:
				}
			}
		}
	}()
	exited := make(chan struct{}) // closed when the agent has exited; then waitErr is set
	var waitErr error
	go func() {
		<-logDone
		waitErr = cmd.Wait()
		close(exited)
	}()
	stopAgent := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			return waitErr
		case <-time.After(40 * time.Second):
			_ = cmd.Process.Kill()
			return fmt.Errorf("agent did not stop within 40s of SIGTERM")
		}
	}
	defer stopAgent() //nolint:errcheck // the error path already has an error to report
	fail := func(err error) error {
		_ = stopAgent()
		return fmt.Errorf("%w (agent log: %s)", err, logTail(filepath.Join(work, "agent.log")))
	}

	// 1. start-up: both roots scanned, then the CPU use calms down. Once the drop folder is
	// scanned and while the tree's start scan still runs, a file is dropped every -startup-every:
	// events must flow during a start scan.
	deadline := time.After(*calmTimeout)
	var startupDrops []string
	var startupWritten []time.Time
	dropTick := time.NewTicker(*startupEvery)
	defer dropTick.Stop()
	dropping, treeDone := false, false
	for n := 0; n < 2; {
		select {
		case line := <-scanned:
			n++
			fmt.Printf("agent: %s\n", strings.TrimSpace(line[strings.Index(line, "msg="):]))
			if strings.Contains(line, "root="+drop+" ") || strings.HasSuffix(line, "root="+drop) {
				dropping = !treeDone
			} else {
				treeDone, dropping = true, false
			}
		case <-dropTick.C:
			if !dropping {
				continue
			}
			path := filepath.Join(drop, fmt.Sprintf("s%04d.tif", len(startupDrops)))
			data := []byte(fmt.Sprintf("start-up drop %d %d\n%s", len(startupDrops), time.Now().UnixNano(), strings.Repeat("s", 4000)))
			if err := os.WriteFile(path, data, 0o644); err != nil {
				return fail(err)
			}
			startupDrops, startupWritten = append(startupDrops, path), append(startupWritten, time.Now())
		case <-exited:
			return fail(fmt.Errorf("agent exited during start-up: %v", waitErr))
		case <-deadline:
			return fail(fmt.Errorf("no 'root scanned' within %v", *calmTimeout))
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
	dropTick.Stop()
	scannedAt := time.Since(start)
	if err := waitCalm(ctx, pid, exited, deadline); err != nil {
		return fail(err)
	}
	startRSS, startHWM := memStatus(pid)
	fmt.Printf("agent: start-up done (both roots scanned after %v, calm after %v; orders database %s); RSS %s, peak %s\n",
		scannedAt.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
		map[bool]string{true: "from the cache", false: "empty: the tree was ordered first"}[cached], startRSS, startHWM)

	store, err := db.Open(ctx, "sqlite:///"+dbPath, db.Options{Logger: quietLog()})
	if err != nil {
		return fail(err)
	}
	defer store.Close()
	before, err := countItems(ctx, store.DB().DB, "bench")
	if err != nil {
		return fail(err)
	}
	var startLats []time.Duration
	for i, path := range startupDrops {
		created, err := orderTime(ctx, store.DB().DB, path)
		if err != nil {
			return fail(err)
		}
		startLats = append(startLats, created.Sub(startupWritten[i]))
	}

	// 2. idle CPU over the window.
	t0, err := cpuTicks(pid)
	if err != nil {
		return fail(err)
	}
	w0 := time.Now()
	select {
	case <-time.After(*idle):
	case <-exited:
		return fail(fmt.Errorf("agent exited while idle: %v", waitErr))
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	t1, err := cpuTicks(pid)
	if err != nil {
		return fail(err)
	}
	window := time.Since(w0)
	cpu := float64(t1-t0) / float64(clockTicks()) / window.Seconds() * 100
	rss, hwm := memStatus(pid)
	after, err := countItems(ctx, store.DB().DB, "bench")
	if err != nil {
		return fail(err)
	}
	fmt.Printf("idle: %d clock ticks in %v = %.3f %% of one core; agent RSS %s (peak %s); tree orders %d before, %d after\n",
		t1-t0, window.Round(time.Millisecond), cpu, rss, hwm, before, after)
	if after != before {
		fmt.Printf("idle: WARNING: the agent ordered %d files of the unchanged tree during the window\n", after-before)
	}

	// 3. drop -> order latency.
	var lats, visible []time.Duration
	q := `SELECT created FROM adi_watch_items WHERE rule = 'drop' AND path = ?`
	for i := 0; i < *drops; i++ {
		path := filepath.Join(drop, fmt.Sprintf("f%04d.tif", i))
		data := []byte(fmt.Sprintf("bench drop %d %d\n%s", i, time.Now().UnixNano(), strings.Repeat("x", 4000)))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fail(err)
		}
		written := time.Now()
		var created time.Time
		for {
			var raw string
			err := store.DB().QueryRowContext(ctx, q, path).Scan(&raw)
			if err == nil {
				visible = append(visible, time.Since(written))
				created, err = time.ParseInLocation("2006-01-02 15:04:05.999", raw, time.UTC)
				if err != nil {
					return fail(fmt.Errorf("order time %q of %s: %w", raw, path, err))
				}
				break
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return fail(fmt.Errorf("look up order of %s: %w", path, err))
			}
			if time.Since(written) > 10**settle+10*time.Second {
				return fail(fmt.Errorf("no order for %s after %v", path, time.Since(written).Round(time.Millisecond)))
			}
			select {
			case <-time.After(10 * time.Millisecond):
			case <-exited:
				return fail(fmt.Errorf("agent exited: %v", waitErr))
			case <-ctx.Done():
				return fail(ctx.Err())
			}
		}
		lats = append(lats, created.Sub(written))
	}
	if err := stopAgent(); err != nil {
		return fmt.Errorf("stop agent: %w", err)
	}
	store.Close()

	sorted := append([]time.Duration(nil), lats...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	med := medianOf(lats)
	ms := func(d time.Duration) string { return strconv.FormatInt(d.Milliseconds(), 10) }
	all := make([]string, len(lats))
	for i, l := range lats {
		all[i] = ms(l)
	}
	fmt.Printf("drop -> order latencies (ms, in order): %s\n", strings.Join(all, " "))
	fmt.Printf("drop -> order visible to a reader polling every 10 ms: median %s ms\n", ms(medianOf(visible)))

	// A tree that the agent ordered completely is cached for the next run.
	if !cached && after == int64(*tf.files) {
		if err := copyFile(dbPath, cachedDB(root)+".tmp"); err == nil {
			if err := os.Rename(cachedDB(root)+".tmp", cachedDB(root)); err == nil {
				fmt.Printf("cached the orders database of the tree at %s\n", cachedDB(root))
			}
		}
	}

	if kib, err := strconv.ParseInt(strings.TrimSuffix(startHWM, " kB"), 10, 64); err == nil {
		what, target := "peak RSS of the agent starting on the ordered tree", *rssTarget
		if !cached {
			what, target = "peak RSS of the agent ordering the whole tree", *rssFirstTarget
		}
		summary(what, fmt.Sprintf("%.1f MB", mb(kib)), mb(kib) <= target, fmt.Sprintf("<= %.0f MB", target),
			fmt.Sprintf("VmHWM once calm; RSS then %s, after the idle window %s", startRSS, rss))
	}
	if len(startLats) == 0 {
		summary("drop -> order latency during the tree's start scan", "no drops", false, "", "the start scan ended before the drop folder's")
	} else {
		top := maxOf(startLats)
		summary(fmt.Sprintf("drop -> order latency during the tree's start scan, settle %v", *settle), fmt.Sprintf("%s ms", ms(medianOf(startLats))),
			top <= *settle+time.Second, fmt.Sprintf("max <= %s ms", ms(*settle+time.Second)),
			fmt.Sprintf("median of %d files dropped every %v while the tree was scanned, max %s ms", len(startLats), *startupEvery, ms(top)))
	}
	summary("idle CPU of the agent watching the tree, no changes", fmt.Sprintf("%.2f %%", cpu), cpu < *cpuTarget,
		fmt.Sprintf("< %g %%", *cpuTarget), fmt.Sprintf("%d clock ticks over %v", t1-t0, window.Round(time.Second)))
	summary(fmt.Sprintf("drop -> order latency, inotify, settle %v", *settle), fmt.Sprintf("%s ms", ms(med)),
		med <= *settle+*latTarget, fmt.Sprintf("<= %s ms", ms(*settle+*latTarget)),
		fmt.Sprintf("median of %d files, min %s ms, max %s ms, 1 ms resolution; reference: settle %s ms", len(lats), ms(sorted[0]), ms(sorted[len(sorted)-1]), ms(*settle)))
	return nil
}

// medianOf returns the median (the mean of the middle two for an even count).
func medianOf(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// waitCalm waits until the process used under 2 % of one core over 5 consecutive seconds.
func waitCalm(ctx context.Context, pid int, exited <-chan struct{}, deadline <-chan time.Time) error {
	const window = 5
	var samples []int64
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t, err := cpuTicks(pid)
		if err != nil {
			return err
		}
		samples = append(samples, t)
		if n := len(samples); n > window {
			used := float64(samples[n-1]-samples[n-1-window]) / float64(clockTicks()) / window
			if used < 0.02 {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-exited:
			return fmt.Errorf("agent exited during start-up")
		case <-deadline:
			return fmt.Errorf("the agent's CPU use did not calm down in time")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// cpuTicks returns utime+stime of pid in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	// after "pid (comm)": state is field 3, utime 14, stime 15 (man 5 proc)
	if len(f) < 13 {
		return 0, fmt.Errorf("read process stat: short line %q", s)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read process stat: %w", err)
	}
	return u + st, nil
}

var clkTck int64

// clockTicks is sysconf(_SC_CLK_TCK), from getconf (100 when that fails, as on every Linux).
func clockTicks() int64 {
	if clkTck == 0 {
		clkTck = 100
		if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && v > 0 {
				clkTck = v
			}
		}
	}
	return clkTck
}

// memStatus returns VmRSS and VmHWM of pid as printed by the kernel.
func memStatus(pid int) (rss, hwm string) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?", "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		switch k {
		case "VmRSS":
			rss = strings.TrimSpace(v)
		case "VmHWM":
			hwm = strings.TrimSpace(v)
		}
	}
	return rss, hwm
}

// orderTime returns the creation time of the order of the drop folder's file path.
func orderTime(ctx context.Context, q *sql.DB, path string) (time.Time, error) {
	var raw string
	if err := q.QueryRowContext(ctx, `SELECT created FROM adi_watch_items WHERE rule = 'drop' AND path = ?`, path).Scan(&raw); err != nil {
		return time.Time{}, fmt.Errorf("order of %s: %w", path, err)
	}
	t, err := time.ParseInLocation("2006-01-02 15:04:05.999", raw, time.UTC)
	if err != nil {
		return time.Time{}, fmt.Errorf("order time %q of %s: %w", raw, path, err)
	}
	return t, nil
}

func countItems(ctx context.Context, q *sql.DB, rule string) (int64, error) {
	var n int64
	if err := q.QueryRowContext(ctx, `SELECT count(*) FROM adi_watch_items WHERE rule = ?`, rule).Scan(&n); err != nil {
		return 0, fmt.Errorf("count orders of rule %s: %w", rule, err)
	}
	return n, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}

// logTail returns the last lines of the agent's log, for error messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}
