package integrity

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var engines = []struct {
	name string
	url  func(testing.TB) string
}{
	{"sqlite", pgtest.SQLiteURL},
	{"postgres", pgtest.URL},
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// fixture is a data root, a ManagedRepository and a migrated store.
type fixture struct {
	t     testing.TB
	store *db.Store
	data  string
	repo  string
	n     int
}

func setup(t testing.TB, url func(testing.TB) string) *fixture {
	t.Helper()
	base := t.TempDir()
	return setupIn(t, url, filepath.Join(base, "data"), filepath.Join(base, "ManagedRepository"))
}

func setupIn(t testing.TB, url func(testing.TB) string, data, repo string) *fixture {
	t.Helper()
	ctx := context.Background()
	s, err := db.Open(ctx, url(t), db.Options{Logger: quietLog(), Worker: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{data, repo} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &fixture{t: t, store: s, data: data, repo: repo}
}

func (f *fixture) checker(d Deps) *Checker {
	f.t.Helper()
	d.Store, d.ManagedRepo, d.Roots, d.Log = f.store, f.repo, order.Roots{BaseDir: f.data}, quietLog()
	c, err := New(DefaultConfig(), d)
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// file writes content to rel below the data root.
func (f *fixture) file(rel, content string) string {
	f.t.Helper()
	p := filepath.Join(f.data, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// order links targets from a fresh fileset folder, as an ln_s import does, and stores a
// completed order that recorded them (through redirect.Links, as the runner does).
func (f *fixture) order(targets ...string) string {
	f.t.Helper()
	f.n++
	prefix := filepath.Join("alice_5", "2026-01", "02", time.Now().Format("15-04-05.000")+"-"+string(rune('a'+f.n))) + "/"
	for _, tg := range targets {
		l := filepath.Join(f.repo, prefix, filepath.Base(tg))
		if err := os.MkdirAll(filepath.Dir(l), 0o755); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Symlink(tg, l); err != nil {
			f.t.Fatal(err)
		}
	}
	found, err := redirect.Links(f.repo, prefix)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.complete(found, int64(f.n))
}

// complete stores a completed order with links recorded in fileset fsID.
func (f *fixture) complete(found []redirect.Link, fsID int64) string {
	f.t.Helper()
	ctx := context.Background()
	o, _, err := f.store.CreateOrder(ctx, db.NewOrder{Draft: order.Draft{Group: "Demo", User: "alice",
		Target: order.Target{Kind: order.Dataset, ID: 151}, Files: []string{f.data + "/x"}}})
	if err != nil {
		f.t.Fatal(err)
	}
	claimed, err := f.store.Claim(ctx, "test", 1, time.Minute)
	if err != nil || len(claimed) != 1 || claimed[0].UUID != o.UUID {
		f.t.Fatalf("claim: %+v, %v", claimed, err)
	}
	l := claimed[0].Lease()
	var links []db.Link
	for _, k := range found {
		links = append(links, db.Link{FilesetID: fsID, Path: k.Path, Target: k.Target, Dir: k.Dir, Size: k.Size, ModTime: k.ModTime, Dev: k.Dev, Ino: k.Ino})
	}
	if err := f.store.SetLinks(ctx, l, links); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.SetResult(ctx, l, db.Result{Filesets: []int64{fsID}, Images: []int64{100 + fsID}}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.Finish(ctx, l, db.StageCompleted, ""); err != nil {
		f.t.Fatal(err)
	}
	return o.UUID
}

// check runs one check and returns the broken orders by uuid.
func (f *fixture) check(c *Checker, opts Options) (Report, map[string]Broken) {
	f.t.Helper()
	got := map[string]Broken{}
	rep, err := c.Check(context.Background(), opts, func(b Broken) { got[b.UUID] = b })
	if err != nil {
		f.t.Fatal(err)
	}
	return rep, got
}

func mustDo(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Every kind of damage is detected, named and described, and stored with the order; an intact
// order is not reported.
func TestDamage(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			f := setup(t, e.url)
			later := time.Now().Add(time.Hour)
			cases := []struct {
				name    string
				files   []string
				damage  func(targets []string)
				kind    string
				movedTo string // relative to the data root
				detail  string
				links   int // damaged links, 1 when 0
			}{
				{name: "move", files: []string{"demo/a/m.tif"}, kind: Moved, movedTo: "demo/elsewhere/m.tif", detail: "same size",
					damage: func(tg []string) { mkdirRename(t, tg[0], filepath.Join(f.data, "demo/elsewhere/m.tif")) }},
				{name: "rename", files: []string{"demo/r/r.tif"}, kind: Renamed, movedTo: "demo/r/renamed.tif", detail: "same size",
					damage: func(tg []string) { mkdirRename(t, tg[0], filepath.Join(f.data, "demo/r/renamed.tif")) }},
				{name: "delete", files: []string{"demo/d/d.tif"}, kind: Deleted, detail: "put it back",
					damage: func(tg []string) { mustDo(t, os.Remove(tg[0])) }},
				{name: "truncate", files: []string{"demo/t/t.tif"}, kind: Truncated, detail: "bytes",
					damage: func(tg []string) { mustDo(t, os.Truncate(tg[0], 3)) }},
				{name: "same-size overwrite", files: []string{"demo/o/o.tif"}, kind: Replaced, detail: "same size",
					damage: func(tg []string) {
						mustDo(t, os.WriteFile(tg[0], []byte(strings.Repeat("X", len("PIXELS of same-size overwrite"))), 0o644))
						mustDo(t, os.Chtimes(tg[0], later, later))
					}},
				{name: "dangling .processed link", files: []string{"demo/p/.processed/ord/p.ome.tiff"}, kind: Deleted, detail: "gone",
					damage: func(tg []string) { mustDo(t, os.RemoveAll(filepath.Dir(tg[0]))) }},
				{name: "folder unit with one file gone", files: []string{"demo/u/unit/1.tif", "demo/u/unit/2.tif", "demo/u/unit/3.tif"}, kind: Deleted,
					damage: func(tg []string) { mustDo(t, os.Remove(tg[1])) }},
				{name: "link repointed", files: []string{"demo/l/l.tif"}, kind: Repointed, detail: "points at",
					damage: func(tg []string) {
						links, _ := filepath.Glob(filepath.Join(f.repo, "*/*/*/*/l.tif"))
						mustDo(t, os.Remove(links[0]))
						mustDo(t, os.Symlink(f.file("demo/l/other.tif", "x"), links[0]))
					}},
				{name: "link gone", files: []string{"demo/g/g.tif"}, kind: Unlinked, detail: "ManagedRepository",
					damage: func(tg []string) {
						links, _ := filepath.Glob(filepath.Join(f.repo, "*/*/*/*/g.tif"))
						mustDo(t, os.Remove(links[0]))
					}},
			}
			uuids := map[string]string{}
			targets := map[string][]string{}
			for _, tc := range cases {
				for _, rel := range tc.files {
					targets[tc.name] = append(targets[tc.name], f.file(rel, "PIXELS of "+tc.name))
				}
				uuids[tc.name] = f.order(targets[tc.name]...)
			}
			intact := f.order(f.file("demo/ok/ok.tif", "fine"))
			c := f.checker(Deps{})
			if rep, got := f.check(c, Options{}); rep.Broken != 0 || len(got) != 0 || rep.Orders != len(cases)+1 {
				t.Fatalf("before any damage: %+v, %v", rep, got)
			}
			for _, tc := range cases {
				tc.damage(targets[tc.name])
			}
			rep, got := f.check(c, Options{})
			if rep.Broken != len(cases) || rep.Orders != len(cases)+1 {
				t.Errorf("report %+v, want %d broken of %d", rep, len(cases), len(cases)+1)
			}
			if _, ok := got[intact]; ok {
				t.Errorf("intact order reported broken: %+v", got[intact])
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					b, ok := got[uuids[tc.name]]
					if !ok {
						t.Fatalf("not reported broken")
					}
					if len(b.Damage) != 1 || b.Damage[0].Kind != tc.kind || !strings.Contains(b.Damage[0].Detail, tc.detail) || !b.New ||
						len(b.Images) != 1 {
						t.Fatalf("broken %+v, want one %s link (%q), new, with its image", b, tc.kind, tc.detail)
					}
					if want := ""; tc.movedTo != "" {
						want = filepath.Join(f.data, tc.movedTo)
						if b.Damage[0].MovedTo != want {
							t.Errorf("moved to %q, want %q", b.Damage[0].MovedTo, want)
						}
					} else if b.Damage[0].MovedTo != want {
						t.Errorf("moved to %q, want none", b.Damage[0].MovedTo)
					}
					if !strings.Contains(b.Summary(), "1 "+tc.kind) {
						t.Errorf("summary %q", b.Summary())
					}
					in, err := f.store.GetIntegrity(context.Background(), b.UUID)
					if err != nil || in == nil || !in.Broken || len(in.Damage) != 1 || in.Damage[0].Kind != tc.kind {
						t.Errorf("stored integrity %+v, %v", in, err)
					}
				})
			}
			// The same damage a second time is not new: the reporter is not called again.
			_, again := f.check(c, Options{})
			for uuid, b := range again {
				if b.New {
					t.Errorf("order %s reported new at the second check", uuid)
				}
			}
		})
	}
}

func mkdirRename(t testing.TB, from, to string) {
	t.Helper()
	mustDo(t, os.MkdirAll(filepath.Dir(to), 0o755))
	mustDo(t, os.Rename(from, to))
}

// The check paces itself: 20 links at 50 a second take about 0.4 s.
func TestRate(t *testing.T) {
	f := setup(t, pgtest.SQLiteURL)
	var targets []string
	for i := 0; i < 20; i++ {
		targets = append(targets, f.file("demo/rate/"+string(rune('a'+i))+".tif", "x"))
	}
	f.order(targets...)
	rep, _ := f.check(f.checker(Deps{}), Options{Rate: 50})
	if rep.Duration < 300*time.Millisecond || rep.Links != 20 {
		t.Errorf("20 links at 50/s took %s (%+v), want about 0.4s", rep.Duration, rep)
	}
	c := f.checker(Deps{})
	c.cfg.Interval = 24 * time.Hour
	if r := c.Rate(200_000); r != 5 {
		t.Errorf("Rate(200000) over a day = %d, want 5", r)
	}
	if r := c.Rate(1e9); r != c.cfg.MaxStatPerS {
		t.Errorf("Rate(1e9) = %d, want max_stat_per_s", r)
	}
}

// Links read through a FUSE mount (bindfs, as an NFS or SMB share behaves) are checked, and damage
// done behind the mount's back is found.
func TestBindfs(t *testing.T) {
	testenv.Root(t, "mounts a FUSE filesystem")
	bindfs := testenv.LookPath(t, "bindfs", "apt-get install bindfs fuse3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse", "apt-get install fuse3 (and a kernel with FUSE)")
	}
	src, mnt := t.TempDir(), t.TempDir()
	if out, err := exec.Command(bindfs, src, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bindfs %s %s: %v: %s", src, mnt, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	f := setupIn(t, pgtest.SQLiteURL, filepath.Join(mnt, "data"), filepath.Join(mnt, "ManagedRepository"))
	a, b := f.file("demo/a.tif", "aaaa"), f.file("demo/b.tif", "bbbb")
	uuid := f.order(a, b)
	c := f.checker(Deps{})
	if rep, got := f.check(c, Options{}); rep.Links != 2 || len(got) != 0 {
		t.Fatalf("before damage: %+v, %v", rep, got)
	}
	mustDo(t, os.Truncate(filepath.Join(src, "data", "demo", "b.tif"), 1))
	// The kernel caches a FUSE file's attributes for a second (as NFS clients do): the check sees
	// the change once the cache expires.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		_, got := f.check(c, Options{})
		if d := got[uuid].Damage; len(d) == 1 && d[0].Kind == Truncated && d[0].Target == b {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after truncating behind the mount: %+v, want b.tif truncated", got)
		}
		<-tick.C
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		key  string
	}{
		{"defaults", func(*Config) {}, ""},
		{"off", func(c *Config) { c.Interval = 0 }, ""},
		{"interval too short", func(c *Config) { c.Interval = time.Millisecond }, "interval"},
		{"rate zero", func(c *Config) { c.MaxStatPerS = 0 }, "max_stat_per_s"},
		{"hash mode", func(c *Config) { c.Hash = "some" }, "hash"},
		{"sample", func(c *Config) { c.Sample = 0 }, "sample"},
		{"cli starts", func(c *Config) { c.MaxCLIStarts = -1 }, "max_cli_starts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.key+": ") {
				t.Fatalf("Validate = %v, want an error about %s", err, tc.key)
			}
		})
	}
}
