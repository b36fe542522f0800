package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"syscall"
)

// runRSS runs a command -runs times and prints its peak resident memory (getrusage's ru_maxrss
// of the child, which the kernel reports in KiB on Linux): every run, the median and the maximum.
func runRSS(args []string) error {
	fs := flag.NewFlagSet("rss", flag.ExitOnError)
	runs := fs.Int("runs", 3, "runs of the command")
	target := fs.Float64("target-mb", 150, "target: at most this many MB (10^6 bytes) of peak RSS")
	name := fs.String("name", "peak RSS", "what is measured, for the summary line")
	fs.Parse(args)
	argv := fs.Args()
	if len(argv) == 0 {
		return fmt.Errorf("rss: give the command after the flags (rss -runs 3 -- CMD ARGS...)")
	}
	var kib []int64
	for i := 0; i < *runs; i++ {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("rss: run %q: %w", argv, err)
		}
		ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		if !ok {
			return fmt.Errorf("rss: no rusage on this system")
		}
		kib = append(kib, ru.Maxrss)
		fmt.Printf("run %d: max RSS %.1f MB, took %v\n", i+1, mb(ru.Maxrss), cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime())
	}
	sort.Slice(kib, func(i, j int) bool { return kib[i] < kib[j] })
	med, top := kib[len(kib)/2], kib[len(kib)-1]
	summary(*name, fmt.Sprintf("%.1f MB", mb(med)), mb(top) <= *target, fmt.Sprintf("<= %.0f MB", *target),
		fmt.Sprintf("median of %d runs, max %.1f MB", len(kib), mb(top)))
	return nil
}

func mb(kib int64) float64 { return float64(kib) * 1024 / 1e6 }
