// Command benchtree compares a full watcher Scan of a tree with
// `find DIR -printf '%s %T@ %p\n' >/dev/null` on the same tree and prints the medians and their
// ratio. It builds the tree first when DIR does not exist yet.
//
//	go run ./watcher/benchtree -dir /tmp/adi-bench -files 200000 -folders 20000 -runs 5
//
// The scan measured is a rescan of an unchanged tree (every file already known: list and stat
// only), the daemon's steady state. The first (cold) scan, which also matches every path against
// the rules, fingerprints every new file and asks the Sink about it, is printed too.
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
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/rules"
	"github.com/omero-adi/omero-adi/watcher"
	"github.com/omero-adi/omero-adi/watcher/internal/treegen"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchtree:", err)
		os.Exit(1)
	}
}

// knownSink says every unit is new, and remembers nothing: the watcher's own cache does.
type knownSink struct{}

func (knownSink) Known(context.Context, string, string, string) (bool, error) { return false, nil }
func (knownSink) Settled(context.Context, watcher.Unit) error                 { return nil }

func run() error {
	dir := flag.String("dir", filepath.Join(os.TempDir(), "adi-benchtree"), "tree to scan (built when missing)")
	files := flag.Int("files", 200000, "files to build")
	folders := flag.Int("folders", 20000, "folders to build")
	runs := flag.Int("runs", 5, "timed runs of each")
	flag.Parse()

	if _, err := os.Stat(*dir); os.IsNotExist(err) {
		start := time.Now()
		if err := treegen.Build(*dir, *files, *folders); err != nil {
			return err
		}
		fmt.Printf("built %d files in %d folders under %s in %v\n", *files, *folders, *dir, time.Since(start).Round(time.Millisecond))
	}
	root, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	set, err := rules.Compile([]rules.Rule{{
		Name: "bench", Group: "Bench", Path: root, User: "bench", Include: []string{"**/*.tif"},
		Settle: rules.Duration{Duration: time.Nanosecond}, Destination: "Dataset:1",
	}}, filepath.Dir(root), nil)
	if err != nil {
		return err
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	w, err := watcher.New(watcher.Config{Mode: watcher.ModePoll}, set, knownSink{}, logrus.NewEntry(log))
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
	fmt.Printf("find median %v, scan median %v over %d runs: scan/find = %.2f\n",
		mf.Round(time.Millisecond), ms.Round(time.Millisecond), *runs, float64(ms)/float64(mf))
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
