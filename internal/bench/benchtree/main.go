// Command benchtree holds the watcher's numbers for `make bench` (scripts/bench.sh). Each
// subcommand measures against a reference taken in the same run and prints a "summary:" line with
// the number, its target and the reference.
//
//	benchtree [rescan] -dir D -runs 7        full rescan of an unchanged tree vs find on the same tree
//	benchtree build -dir D                   only build the tree (when missing)
//	benchtree rss -runs 3 -- CMD ARGS...     peak resident memory (max RSS) of a command
//	benchtree agent -bin bin/omero-adi -dir D  idle CPU and drop -> order latency of the real agent
//	benchtree startscan -bin bin/omero-adi -dir D -runs 7  start scan and scan of unsettled units vs find
//	benchtree slowsink -delay 2s             event and drop -> order latency in front of a slow database
//
// The tree (-files 200000 in -folders 20000 by default) is built when DIR does not exist yet,
// under a temporary name renamed at the end, so an interrupted build is never reused.
//
// rescan: the scan measured is a rescan of an unchanged tree (every file already known: list and
// stat only), the daemon's steady state, against `find DIR -printf '%s %T@ %p\n' >/dev/null`
// (warm cache). The first (cold) scan, which also matches every path against the rules,
// fingerprints every new file and asks the Sink about it, is printed too.
package main

import (
	"context"
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

	"github.com/omero-adi/omero-adi/internal/bench/treegen"
	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/watcher"
)

func main() {
	args := os.Args[1:]
	cmd := "rescan"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "rescan":
		err = runRescan(args)
	case "build":
		err = runBuild(args)
	case "rss":
		err = runRSS(args)
	case "agent":
		err = runAgent(args)
	case "startscan":
		err = runStartScan(args)
	case "slowsink":
		err = runSlowSink(args)
	case "integrity":
		err = runIntegrity(args)
	default:
		err = fmt.Errorf("unknown subcommand %q (rescan, startscan, slowsink, integrity, build, rss or agent)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtree:", err)
		os.Exit(1)
	}
}

// treeFlags are the flags that name and size the benchmark tree.
type treeFlags struct {
	dir            *string
	files, folders *int
}

func addTreeFlags(fs *flag.FlagSet) treeFlags {
	return treeFlags{
		dir:     fs.String("dir", filepath.Join(os.TempDir(), "omero-adi-bench-tree"), "the tree (built when missing)"),
		files:   fs.Int("files", 200000, "files to build"),
		folders: fs.Int("folders", 20000, "folders to build"),
	}
}

// ensure builds the tree when it is missing and returns its absolute path. The build goes to a
// temporary name first; the orders database cached for it (see runAgent) is dropped.
func (t treeFlags) ensure() (string, error) {
	root, err := filepath.Abs(*t.dir)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(root); err == nil {
		return root, nil
	} else if !os.IsNotExist(err) {
		return "", err
	}
	start := time.Now()
	tmp := fmt.Sprintf("%s.partial-%d", root, os.Getpid())
	if err := treegen.Build(tmp, *t.files, *t.folders); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, root); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("build tree: %w", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm", ".lock"} {
		os.Remove(cachedDB(root) + suffix)
	}
	fmt.Printf("built %d files in %d folders under %s in %v\n", *t.files, *t.folders, root, time.Since(start).Round(time.Millisecond))
	return root, nil
}

func runBuild(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	tf := addTreeFlags(fs)
	fs.Parse(args)
	root, err := tf.ensure()
	if err == nil {
		fmt.Printf("tree %s\n", root)
	}
	return err
}

// knownSink says every unit is new, and remembers nothing: the watcher's own cache does.
type knownSink struct{}

func (knownSink) KnownSignature(context.Context, string, string, string) (bool, error) {
	return false, nil
}
func (knownSink) Known(context.Context, string, string, string) (bool, error) { return false, nil }
func (knownSink) Settled(context.Context, watcher.Unit) error                 { return nil }

func runRescan(args []string) error {
	fs := flag.NewFlagSet("rescan", flag.ExitOnError)
	tf := addTreeFlags(fs)
	runs := fs.Int("runs", 7, "timed runs of each")
	target := fs.Float64("target", 1.3, "target: at most this ratio scan/find")
	fs.Parse(args)
	root, err := tf.ensure()
	if err != nil {
		return err
	}
	set, err := rules.Compile([]rules.Rule{{
		Name: "bench", Group: "Bench", Path: root, User: "bench", Include: []string{"**/*.tif"},
		Settle: time.Nanosecond, Destination: "Dataset:1",
	}}, filepath.Dir(root), nil)
	if err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := watcher.New(watchConfig(watcher.ModePoll), set, knownSink{}, logrus.NewEntry(log))
	if err != nil {
		return err
	}
	ctx := context.Background()
	findOnce := func() (time.Duration, error) {
		cmd := exec.Command("find", root, "-printf", `%s %T@ %p\n`)
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return 0, err
		}
		defer devnull.Close()
		cmd.Stdout = devnull
		start := time.Now()
		err = cmd.Run()
		return time.Since(start), err
	}
	if _, err := findOnce(); err != nil { // warm the page cache
		return fmt.Errorf("find: %w", err)
	}
	cold, err := w.Scan(ctx)
	if err != nil {
		return err
	}
	settle, err := w.Scan(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("cold scan: %v (seen %d, pending %d); settling scan: %v (settled %d)\n",
		cold.Duration.Round(time.Millisecond), cold.Seen, cold.Pending, settle.Duration.Round(time.Millisecond), settle.Settled)

	var finds, scans []time.Duration
	for i := 0; i < *runs; i++ {
		d, err := findOnce()
		if err != nil {
			return fmt.Errorf("find: %w", err)
		}
		finds = append(finds, d)
		st, err := w.Scan(ctx)
		if err != nil {
			return err
		}
		if st.AlreadyOrdered != cold.Seen || st.Settled != 0 {
			return fmt.Errorf("rescan of an unchanged tree: %+v, want %d already ordered", st, cold.Seen)
		}
		scans = append(scans, st.Duration)
	}
	mf, ms := median(finds), median(scans)
	ratio := float64(ms) / float64(mf)
	fmt.Printf("find median %v, scan median %v over %d runs: scan/find = %.2f\n",
		mf.Round(time.Millisecond), ms.Round(time.Millisecond), *runs, ratio)
	summary(fmt.Sprintf("rescan of the unchanged tree, %d files", cold.Seen),
		fmt.Sprintf("%.2fx find", ratio), ratio <= *target, fmt.Sprintf("<= %.2fx", *target),
		fmt.Sprintf("scan median %v, find median %v, %d runs", ms.Round(time.Millisecond), mf.Round(time.Millisecond), *runs))
	return nil
}

// summary prints one result line for the harness's summary table.
func summary(what, value string, ok bool, target, reference string) {
	verdict := "ok"
	if !ok {
		verdict = "MISSED"
	}
	fmt.Printf("summary: %-52s %-16s target %-10s %-6s (%s)\n", what, value, target, verdict, reference)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// watchConfig is the watcher's default settings in the given mode.
func watchConfig(mode string) watcher.Config {
	c := watcher.DefaultConfig()
	c.Mode = mode
	return c
}
