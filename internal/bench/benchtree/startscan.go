package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/bench/opencount"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/watcher"
)

// unsettled is the settle of the start-scan rules: longer than the age of any file of the tree,
// so that no unit settles and none may be read.
const unsettled = 100000 * time.Hour

// runStartScan measures, on a tree whose units have not settled, the agent's start scan (a
// watcher in events mode, in this process: watches on every folder, until Health reports the
// root scanned) and `omero-adi scan` (the real binary, wall time, empty SQLite database) against
// `find DIR -printf '%s %T@ %p\n' >/dev/null`, alternated in one run: the ratio of each run is
// taken against the find right before it, and the median ratio is reported. Separately, an
// inotify instance watching every folder of the tree for IN_OPEN counts the files (not folders)
// opened by one start scan and by one `omero-adi scan`.
func runStartScan(args []string) error {
	fs := flag.NewFlagSet("startscan", flag.ExitOnError)
	tf := addTreeFlags(fs)
	bin := fs.String("bin", "bin/omero-adi", "the omero-adi binary (make build)")
	runs := fs.Int("runs", 7, "timed runs of each")
	target := fs.Float64("target", 1.5, "target: at most this ratio to find")
	fs.Parse(args)
	root, err := tf.ensure()
	if err != nil {
		return err
	}
	binPath, err := filepath.Abs(*bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(root), "omero-adi-bench-startscan-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	settings := filepath.Join(work, "settings.toml")
	text := fmt.Sprintf(`ingest_tracking_db = "sqlite:///%s/adi.db"
base_dir = %q
log_dir = %q
listen = ""
[groups.Bench]
roots = [%q]
[[rules]]
name = "bench"
group = "Bench"
path = %q
user = "bench"
include = ["**/*.tif"]
settle = %q
destination = "Dataset:1"
`, work, filepath.Dir(root), filepath.Join(work, "log"), filepath.Dir(root), root, unsettled.String())
	if err := os.WriteFile(settings, []byte(text), 0o644); err != nil {
		return err
	}
	set, err := rules.Compile([]rules.Rule{{
		Name: "bench", Group: "Bench", Path: root, User: "bench", Include: []string{"**/*.tif"},
		Settle: unsettled, Destination: "Dataset:1",
	}}, filepath.Dir(root), nil)
	if err != nil {
		return err
	}
	scanCmd := func() (time.Duration, error) {
		cmd := exec.Command(binPath, "--config", settings, "scan", "--json")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		start := time.Now()
		out, err := cmd.Output()
		took := time.Since(start)
		if err != nil {
			return 0, fmt.Errorf("omero-adi scan: %w: %s", err, stderr.String())
		}
		var st struct{ Seen, Pending, Settled int }
		if err := json.Unmarshal(out, &st); err != nil {
			return 0, fmt.Errorf("omero-adi scan: %w (%s)", err, out)
		}
		if st.Seen != *tf.files || st.Pending != *tf.files || st.Settled != 0 {
			return 0, fmt.Errorf("omero-adi scan: %s, want %d seen and pending", out, *tf.files)
		}
		return took, nil
	}
	startScan := func() (time.Duration, error) { return agentStartScan(set, root, *tf.files) }
	findOnce := func() (time.Duration, error) { return timeFind(root) }

	if _, err := findOnce(); err != nil { // warm the page cache
		return err
	}
	opensStart, err := countOpens(root, func() error { _, err := startScan(); return err })
	if err != nil {
		return err
	}
	opensScan, err := countOpens(root, func() error { _, err := scanCmd(); return err })
	if err != nil {
		return err
	}
	var finds, starts, scans []time.Duration
	var rStart, rScan []float64
	for i := 0; i < *runs; i++ {
		f1, err := findOnce()
		if err != nil {
			return err
		}
		s, err := startScan()
		if err != nil {
			return err
		}
		f2, err := findOnce()
		if err != nil {
			return err
		}
		c, err := scanCmd()
		if err != nil {
			return err
		}
		finds = append(finds, f1, f2)
		starts, scans = append(starts, s), append(scans, c)
		rStart, rScan = append(rStart, float64(s)/float64(f1)), append(rScan, float64(c)/float64(f2))
		fmt.Printf("run %d: find %v, start scan %v (%.2fx); find %v, omero-adi scan %v (%.2fx)\n", i+1,
			f1.Round(time.Millisecond), s.Round(time.Millisecond), rStart[i], f2.Round(time.Millisecond), c.Round(time.Millisecond), rScan[i])
	}
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, m := range []struct {
		what   string
		ratios []float64
		times  []time.Duration
	}{
		{fmt.Sprintf("agent start scan, %d unsettled files", *tf.files), rStart, starts},
		{fmt.Sprintf("omero-adi scan, %d unsettled files", *tf.files), rScan, scans},
	} {
		r := medianF(m.ratios)
		summary(m.what, fmt.Sprintf("%.2fx find", r), r <= *target, fmt.Sprintf("<= %.2fx", *target),
			fmt.Sprintf("median of %d alternated runs; median %s, find median %s", *runs, ms(median(m.times)), ms(median(finds))))
	}
	for _, o := range []struct {
		what string
		n    int
	}{{"files opened by the agent's start scan, unsettled", opensStart}, {"files opened by omero-adi scan, unsettled", opensScan}} {
		summary(o.what, fmt.Sprint(o.n), o.n == 0, "0", fmt.Sprintf("IN_OPEN of non-folders under %d folders", *tf.folders))
	}
	return nil
}

// agentStartScan runs a watcher the way the agent does (events mode: a watch on every folder)
// until its start scan of root is done, and returns how long that scan took.
func agentStartScan(set *rules.Set, root string, files int) (time.Duration, error) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := watcher.New(watchConfig(watcher.ModeEvents), set, knownSink{}, logrus.NewEntry(log))
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		h := w.Health()
		if r := h.Roots[0]; !r.LastScan.IsZero() {
			if r.Errors > 0 || h.Pending != files {
				return 0, fmt.Errorf("start scan: %+v, want %d pending", h, files)
			}
			return r.LastScanDuration, nil
		}
		if time.Now().After(deadline) {
			return 0, errors.New("start scan: not done within 5 minutes")
		}
		select {
		case err := <-done:
			return 0, fmt.Errorf("watcher stopped: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func timeFind(root string) (time.Duration, error) {
	cmd := exec.Command("find", root, "-printf", `%s %T@ %p\n`)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	cmd.Stdout = devnull
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("find: %w", err)
	}
	return time.Since(start), nil
}

// countOpens runs fn while an opencount.Counter watches the tree, and returns how many files
// (not folders) were opened.
func countOpens(root string, fn func() error) (int, error) {
	c, err := opencount.Start(root)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := fn(); err != nil {
		return 0, err
	}
	c.Settle()
	opens, err := c.Opens()
	n := 0
	for _, k := range opens {
		n += k
	}
	return n, err
}

func medianF(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}
