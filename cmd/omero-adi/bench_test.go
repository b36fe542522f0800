package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// rssMB reads a process's resident set size from /proc.
func rssMB(pid int) (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// cpuMS returns a process's own CPU time and that of its waited-for children (the CLI calls), from
// /proc/<pid>/stat (utime+stime, cutime+cstime).
func cpuMS(pid int) (self, children float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 15 {
		return 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	var ticks [4]float64
	for i := range ticks {
		if ticks[i], err = strconv.ParseFloat(f[11+i], 64); err != nil {
			return 0, 0, err
		}
	}
	const msPerTick = 10 // USER_HZ is 100 on Linux
	return (ticks[0] + ticks[1]) * msPerTick, (ticks[2] + ticks[3]) * msPerTick, nil
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkAgentMemory runs the agent binary (no race detector) with 8 workers on PostgreSQL and
// the omero CLI double, feeds it ADI_BENCH_AGENT_ORDERS orders (default 10,000) in batches of 500
// while it drains them, and samples its VmRSS after each quarter has completed. MB-rss-max is the
// largest sample, MB-rss-growth the last minus the second (after warm-up). Target: <= 100 MB and
// flat. agent-cpu-ms/order and cli-cpu-ms/order split the CPU time between the agent and the CLI
// processes it ran (the double; each order runs seven). The double keeps only its newest 100 objects of each kind (State.Retain) so that each CLI
// call costs the same at order 10,000 as at order 1; the agent never looks at older ones.
func BenchmarkAgentMemory(b *testing.B) {
	total := envInt("ADI_BENCH_AGENT_ORDERS", 10000)
	const batch = 500
	for i := 0; i < b.N; i++ {
		url := pgtest.URL(b)
		w := newWorld(b, url)
		w.double.Update(b, func(s *omerotest.State) { s.Retain = 100 })
		data, store := w.data, w.store
		for k := 0; k < total; k++ {
			p := filepath.Join(data, "demo", "alice", fmt.Sprintf("d%03d", k/1000), fmt.Sprintf("f%05d.tif", k))
			if k%1000 == 0 {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					b.Fatal(err)
				}
			}
			if err := os.WriteFile(p, []byte("pixels"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		start := time.Now()
		cmd := w.startAgent("bench", "", false)

		ins := store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
			VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', ?, ?)`)
		count := store.DB().Rebind(`SELECT COUNT(*) FILTER (WHERE stage = 'Import Pending'),
			COUNT(*) FILTER (WHERE stage = ?), COUNT(*) FILTER (WHERE stage IN (?, ?)) FROM imports`)
		inserted := 0
		var samples []float64
		tick := time.NewTicker(50 * time.Millisecond)
		for len(samples) < 4 {
			var pending, completed, failed int
			if err := store.DB().QueryRow(count, db.StageCompleted, db.StageFailed, db.StageCancelled).Scan(&pending, &completed, &failed); err != nil {
				b.Fatal(err)
			}
			if failed > 0 {
				var desc string
				_ = store.DB().QueryRow(`SELECT description FROM imports WHERE stage = 'Import Failed' LIMIT 1`).Scan(&desc)
				b.Fatalf("%d orders failed, e.g.: %s", failed, desc)
			}
			for len(samples) < 4 && completed >= total*(len(samples)+1)/4 {
				mb, err := rssMB(cmd.Process.Pid)
				if err != nil {
					b.Fatal(err)
				}
				samples = append(samples, mb)
				b.Logf("%d orders completed after %s: VmRSS %.1f MB", completed, time.Since(start).Round(time.Second), mb)
			}
			if pending < batch/2 && inserted < total {
				tx, err := store.DB().Begin()
				if err != nil {
					b.Fatal(err)
				}
				for k := inserted; k < inserted+batch && k < total; k++ {
					p := filepath.Join(data, "demo", "alice", fmt.Sprintf("d%03d", k/1000), fmt.Sprintf("f%05d.tif", k))
					uuid := fmt.Sprintf("00000000-0000-4000-8000-%012d", k)
					if _, err := tx.Exec(ins, uuid, fmt.Sprintf("[%q]", p)); err != nil {
						_ = tx.Rollback()
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
				inserted = min(inserted+batch, total)
			}
			if time.Since(start) > 30*time.Minute {
				b.Fatalf("only %d of %d orders completed in 30 minutes", completed, total)
			}
			<-tick.C
		}
		tick.Stop()
		elapsed := time.Since(start)
		self, children, err := cpuMS(cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		maxMB := 0.0
		for _, s := range samples {
			maxMB = max(maxMB, s)
		}
		b.ReportMetric(maxMB, "MB-rss-max")
		b.ReportMetric(samples[3]-samples[1], "MB-rss-growth")
		b.ReportMetric(float64(total)/elapsed.Seconds(), "orders/s")
		b.ReportMetric(self/float64(total), "agent-cpu-ms/order")
		b.ReportMetric(children/float64(total), "cli-cpu-ms/order")
	}
}
