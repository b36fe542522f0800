package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// runIntegrity measures the integrity check (package integrity) of 200,000 recorded links, one
// per file of the benchmark tree, in a ManagedRepository-like folder built once beside the tree
// (<tree>.links, symlinks to the files):
//   - time: the check without hashing and without pacing vs `find -L LINKS -printf '%s %T@ %p\n'`,
//     which follows every link and stats its target, alternated, warm cache, medians;
//   - memory: the peak Go heap during a check of the same links recorded as 2,000 orders of 100
//     links and as 20,000 orders of 10 (flat: the second within 1.5x the first, plus 4 MB);
//   - CPU: utime+stime of this process over wall time while a periodic check paces itself at the
//     default max_stat_per_s over -cpu-links links (the real pace of 200,000 links a day is
//     slower still).
func runIntegrity(args []string) error {
	fs := flag.NewFlagSet("integrity", flag.ExitOnError)
	tf := addTreeFlags(fs)
	runs := fs.Int("runs", 5, "timed runs of each")
	target := fs.Float64("target", 1.5, "target: at most this ratio check/find")
	cpuLinks := fs.Int("cpu-links", 2000, "links of the paced CPU run")
	fs.Parse(args)
	root, err := tf.ensure()
	if err != nil {
		return err
	}
	links := root + ".links"
	files, err := ensureLinks(root, links)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "omero-adi-integrity-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	ctx := context.Background()
	start := time.Now()
	few, err := linkedStore(ctx, filepath.Join(work, "few.db"), files, 100)
	if err != nil {
		return err
	}
	defer few.Close()
	many, err := linkedStore(ctx, filepath.Join(work, "many.db"), files, 10)
	if err != nil {
		return err
	}
	defer many.Close()
	fmt.Printf("recorded %d links as 2 databases (%d and %d orders) in %v\n", len(files), (len(files)+99)/100, (len(files)+9)/10,
		time.Since(start).Round(time.Millisecond))

	check := func(s *db.Store, opts integrity.Options) (integrity.Report, error) {
		c, err := integrity.New(integrity.DefaultConfig(), integrity.Deps{Store: s, ManagedRepo: links,
			Roots: order.Roots{BaseDir: filepath.Dir(root)}, Log: quietEntry()})
		if err != nil {
			return integrity.Report{}, err
		}
		rep, err := c.Check(ctx, opts, nil)
		if err == nil && (rep.Links != len(files) && opts.Rate == 0 || rep.Broken != 0) {
			err = fmt.Errorf("check: %+v, want %d intact links", rep, len(files))
		}
		return rep, err
	}
	findOnce := func() (time.Duration, error) {
		cmd := exec.Command("find", "-L", links, "-printf", `%s %T@ %p\n`)
		cmd.Stdout = io.Discard
		t := time.Now()
		err := cmd.Run()
		return time.Since(t), err
	}
	if _, err := findOnce(); err != nil { // warm the caches
		return fmt.Errorf("find -L: %w", err)
	}
	if prof := os.Getenv("BENCH_CPUPROFILE"); prof != "" {
		pf, err := os.Create(prof)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(pf)
		_, err = check(few, integrity.Options{})
		pprof.StopCPUProfile()
		pf.Close()
		if err != nil {
			return err
		}
	}
	if _, err := check(few, integrity.Options{}); err != nil {
		return err
	}
	var finds, checks []time.Duration
	for i := 0; i < *runs; i++ {
		d, err := findOnce()
		if err != nil {
			return fmt.Errorf("find -L: %w", err)
		}
		finds = append(finds, d)
		rep, err := check(few, integrity.Options{})
		if err != nil {
			return err
		}
		checks = append(checks, rep.Duration)
	}
	mf, mc := median(finds), median(checks)
	ratio := float64(mc) / float64(mf)
	fmt.Printf("find -L median %v, check median %v over %d runs: check/find = %.2f\n", mf.Round(time.Millisecond), mc.Round(time.Millisecond), *runs, ratio)
	summary(fmt.Sprintf("integrity check of %d links, no hashing", len(files)), fmt.Sprintf("%.2fx find -L", ratio), ratio <= *target,
		fmt.Sprintf("<= %.2fx", *target), fmt.Sprintf("check median %v, find -L median %v, %d runs", mc.Round(time.Millisecond), mf.Round(time.Millisecond), *runs))

	// peak is the most the Go heap grew above what the benchmark itself holds (the 200,000
	// targets) during one check.
	peak := func(s *db.Store) (uint64, error) {
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		stop, got := make(chan struct{}), make(chan uint64)
		go func() {
			var m runtime.MemStats
			var max uint64
			t := time.NewTicker(20 * time.Millisecond)
			defer t.Stop()
			for {
				runtime.ReadMemStats(&m)
				max = maxU(max, m.HeapInuse)
				select {
				case <-stop:
					got <- max
					return
				case <-t.C:
				}
			}
		}()
		_, err := check(s, integrity.Options{})
		close(stop)
		v := <-got
		return v - min(base.HeapInuse, v), err
	}
	pFew, err := peak(few)
	if err != nil {
		return err
	}
	pMany, err := peak(many)
	if err != nil {
		return err
	}
	mb := func(b uint64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }
	flat := float64(pMany) <= 1.5*float64(pFew)+4<<20
	summary("integrity check peak heap, 20,000 vs 2,000 orders", mb(pMany)+" vs "+mb(pFew), flat, "flat",
		fmt.Sprintf("same %d links; 10 vs 100 links per order", len(files)))

	small, err := linkedStore(ctx, filepath.Join(work, "cpu.db"), files[:min(*cpuLinks, len(files))], 100)
	if err != nil {
		return err
	}
	defer small.Close()
	rate := integrity.DefaultConfig().MaxStatPerS
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	rep, err := check(small, integrity.Options{Rate: rate})
	if err != nil {
		return err
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	pct := 100 * cpu.Seconds() / rep.Duration.Seconds()
	summary(fmt.Sprintf("periodic check CPU at %d files/s", rate), fmt.Sprintf("%.2f %%", pct), pct < 1, "< 1 %",
		fmt.Sprintf("%v CPU over %v, %d links", cpu.Round(time.Millisecond), rep.Duration.Round(time.Millisecond), rep.Links))
	return nil
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func quietEntry() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// target is one file of the tree, as recorded for its link.
type target struct {
	link, path string
	size       int64
	mtime      time.Time
	dev, ino   uint64
}

// ensureLinks builds, when missing, one symlink per file of the tree below links
// (links/tNNNN/fNNNNN/imgNNNNN.tif -> the file, as an ln_s import lays them out) and returns the
// links with their targets' size and time, sorted.
func ensureLinks(root, links string) ([]target, error) {
	build := false
	if _, err := os.Stat(links); os.IsNotExist(err) {
		build = true
	}
	tmp := links
	if build {
		tmp = fmt.Sprintf("%s.partial-%d", links, os.Getpid())
	}
	start := time.Now()
	var out []target
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root+"/")
		l := filepath.Join(tmp, rel)
		if build {
			if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(p, l); err != nil {
				return err
			}
		}
		dev, ino := redirect.FileID(fi)
		out = append(out, target{link: filepath.Join(links, rel), path: p, size: fi.Size(), mtime: fi.ModTime(), dev: dev, ino: ino})
		return nil
	})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("build links: %w", err)
	}
	if build {
		if err := os.Rename(tmp, links); err != nil {
			return nil, fmt.Errorf("build links: %w", err)
		}
		fmt.Printf("built %d links under %s in %v\n", len(out), links, time.Since(start).Round(time.Millisecond))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].link < out[j].link })
	return out, nil
}

// linkedStore is a migrated SQLite database at path holding completed orders of perOrder links
// each, written in one transaction (the runner's fenced path costs a claim per order, which only
// the setup would pay).
func linkedStore(ctx context.Context, path string, files []target, perOrder int) (*db.Store, error) {
	s, err := db.Open(ctx, "sqlite:///"+path, db.Options{Logger: quietEntry(), Worker: "bench"})
	if err != nil {
		return nil, err
	}
	if _, err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	tx, err := s.DB().BeginTx(ctx, nil)
	if err != nil {
		s.Close()
		return nil, err
	}
	defer tx.Rollback()
	ord, err := tx.PrepareContext(ctx, `INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid,
		files, source, attempt, result) VALUES ('Bench', 'bench', '1', 'Dataset', 'Import Completed', $1, '[]', 'bench', 1, $2)`)
	if err != nil {
		s.Close()
		return nil, err
	}
	lnk, err := tx.PrepareContext(ctx, `INSERT INTO adi_links (uuid, fileset_id, link, target, is_dir, size, mtime_ns, dev, ino)
		VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $8)`)
	if err != nil {
		s.Close()
		return nil, err
	}
	for i := 0; i < len(files); i += perOrder {
		n := i / perOrder
		uuid := fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)
		if err := execAll(ctx, ord, uuid, fmt.Sprintf(`{"filesets":[%d],"images":[%d]}`, n+1, n+1)); err != nil {
			s.Close()
			return nil, err
		}
		for _, f := range files[i:min(i+perOrder, len(files))] {
			if err := execAll(ctx, lnk, uuid, n+1, f.link, f.path, f.size, f.mtime.UnixNano(), int64(f.dev), int64(f.ino)); err != nil {
				s.Close()
				return nil, err
			}
		}
	}
	if err := tx.Commit(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func execAll(ctx context.Context, st *sql.Stmt, args ...any) error {
	_, err := st.ExecContext(ctx, args...)
	return err
}
