package retention

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/rules"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type fixture struct {
	t                  *testing.T
	store              *db.Store
	data, hold, folder string
	set                *rules.Set
}

func setup(t *testing.T, url func(testing.TB) string) *fixture {
	t.Helper()
	ctx := context.Background()
	l := logrus.New()
	l.SetOutput(io.Discard)
	s, err := db.Open(ctx, url(t), db.Options{Logger: logrus.NewEntry(l), Worker: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	f := &fixture{t: t, store: s, data: filepath.Join(base, "data"), hold: filepath.Join(base, "data", "holding")}
	f.folder = filepath.Join(f.data, "demo", "alice", "dropbox")
	set, err := rules.Compile([]rules.Rule{{Name: "demo", Group: "Demo", Path: filepath.Join(f.data, "demo", "{user}", "dropbox"),
		Users: []string{"alice"}, Include: []string{"**/*.tif"}, Destination: "Dataset:151",
		Retention: &rules.Retention{HoldingFolder: f.hold, IgnoredDays: 30, FailedDays: 30, OriginalsDays: 30}}}, f.data, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.set = set
	return f
}

func (f *fixture) retention() *Retention {
	r, err := New(Deps{Store: f.store, Rules: f.set, BaseDir: f.data, ProcessedFolder: ".processed"})
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

// file writes rel below the rule's folder, changed age days ago.
func (f *fixture) file(rel string, age int) string {
	f.t.Helper()
	p := filepath.Join(f.folder, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
		f.t.Fatal(err)
	}
	at := time.Now().AddDate(0, 0, -age)
	if err := os.Chtimes(p, at, at); err != nil {
		f.t.Fatal(err)
	}
	return p
}

// order stores an order of the rule that ended in stage age days ago, linking links (targets) when
// it completed; pre gives it a preprocessing step.
func (f *fixture) order(stage string, age int, pre bool, files []string, links ...string) string {
	f.t.Helper()
	ctx := context.Background()
	d := order.Draft{Group: "Demo", User: "alice", Target: order.Target{Kind: order.Dataset, ID: 151}, Files: files, Source: "demo"}
	if pre {
		d.Preprocessing = &order.Preprocessing{Container: "conv:1", InputFile: "{Files}", OutputFolder: "/data"}
	}
	o, _, err := f.store.CreateOrder(ctx, db.NewOrder{Draft: d})
	if err != nil {
		f.t.Fatal(err)
	}
	if stage == db.StagePending {
		return o.UUID
	}
	c, err := f.store.Claim(ctx, "test", 1, time.Minute)
	if err != nil || len(c) != 1 {
		f.t.Fatalf("claim: %v %v", c, err)
	}
	var recorded []db.Link
	for i, tg := range links {
		recorded = append(recorded, db.Link{FilesetID: 1, Path: filepath.Join("/OMERO/ManagedRepository", o.UUID, string(rune('a'+i))), Target: tg, Size: 1, ModTime: time.Now()})
	}
	if err := f.store.SetLinks(ctx, c[0].Lease(), recorded); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.Finish(ctx, c[0].Lease(), stage, "test"); err != nil {
		f.t.Fatal(err)
	}
	at := time.Now().AddDate(0, 0, -age).UTC().Format("2006-01-02 15:04:05.000")
	if _, err := f.store.DB().Exec(f.store.DB().Rebind("UPDATE imports SET timestamp = ? WHERE uuid = ?"), at, o.UUID); err != nil {
		f.t.Fatal(err)
	}
	return o.UUID
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// Retention moves old failed and ignored drops and used-up originals to the holding folder, with
// a journal line each, and never a file an OMERO link points at (here: one file of two orders, one
// completed and linking it, the other failed long ago), nor one a pending order needs, nor young
// files, nor .processed.
func TestRetention(t *testing.T) {
	for _, e := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		t.Run(e.name, func(t *testing.T) {
			f := setup(t, e.url)
			ctx := context.Background()
			shared := f.file("shared.tif", 40)
			f.order(db.StageCompleted, 1, false, []string{shared}, shared)
			f.order(db.StageFailed, 40, false, []string{shared})
			failedOld := f.file("failed-old.tif", 40)
			oldUUID := f.order(db.StageFailed, 40, false, []string{failedOld})
			failedYoung := f.file("failed-young.tif", 40)
			f.order(db.StageFailed, 5, false, []string{failedYoung})
			inUnit := f.file("unit/inside.txt", 40)                                                    // an ignored drop, inside a folder OMERO links to
			f.order(db.StageCompleted, 1, false, []string{filepath.Dir(inUnit)}, filepath.Dir(inUnit)) // a folder link
			ignoredOld := f.file("notes.txt", 40)
			ignoredYoung := f.file("fresh.txt", 2)
			converted := f.file(".processed/conv/x.ome.tiff", 40)
			original := f.file("raw.lif.tif", 40)
			origUUID := f.order(db.StageCompleted, 40, true, []string{original}, converted)
			stillLinked := f.file("raw2.tif", 40)
			f.order(db.StageCompleted, 40, true, []string{stillLinked}, stillLinked)
			pending := f.file("waiting.txt", 40)
			f.order(db.StagePending, 0, false, []string{pending}) // last: f.order claims the oldest pending order

			r := f.retention()
			plan, err := r.Plan(ctx)
			if err != nil {
				t.Fatal(err)
			}
			moves := map[string]Move{}
			for _, m := range plan.Moves {
				moves[m.Source] = m
			}
			want := map[string]string{failedOld: "failed more than 30 days", ignoredOld: "ignored drop", original: "original of order " + origUUID}
			if len(moves) != len(want) {
				t.Errorf("plan moves %d files, want %d: %+v", len(moves), len(want), plan.Moves)
			}
			for src, reason := range want {
				if m, ok := moves[src]; !ok || !strings.Contains(m.Reason, reason) || !strings.HasPrefix(m.Destination, filepath.Join(f.hold, "demo")+"/") {
					t.Errorf("plan for %s: %+v, want a move to the holding folder because %q", src, m, reason)
				}
			}
			if moves[failedOld].UUID != oldUUID {
				t.Errorf("move of %s names order %q, want %s", failedOld, moves[failedOld].UUID, oldUUID)
			}
			kept := map[string]string{}
			for _, k := range plan.Kept {
				kept[k.Path] = k.Reason
			}
			for _, p := range []string{shared, inUnit, stillLinked} {
				if !strings.Contains(kept[p], "OMERO links to it") {
					t.Errorf("%s kept for %q, want: OMERO links to it", p, kept[p])
				}
			}
			if !strings.Contains(kept[pending], "has not ended") {
				t.Errorf("%s kept for %q, want: an order that has not ended names it", pending, kept[pending])
			}
			if !exists(shared) || !exists(failedOld) {
				t.Fatal("planning moved files")
			}

			done, late, err := r.Apply(ctx, plan)
			if err != nil || len(done) != len(want) || len(late) != 0 {
				t.Fatalf("Apply: %d moved, kept %+v, %v", len(done), late, err)
			}
			for _, m := range done {
				if exists(m.Source) || !exists(m.Destination) {
					t.Errorf("%s -> %s: not moved", m.Source, m.Destination)
				}
			}
			for _, p := range []string{shared, inUnit, stillLinked, pending, failedYoung, ignoredYoung, converted} {
				if !exists(p) {
					t.Errorf("%s was moved", p)
				}
			}
			journal, err := f.store.Moves(ctx)
			if err != nil || len(journal) != len(want) {
				t.Fatalf("journal %+v, %v; want %d lines", journal, err, len(want))
			}
			for _, j := range journal {
				if want[j.Source] == "" || !strings.Contains(j.Reason, want[j.Source]) || j.Rule != "demo" || j.Destination == "" {
					t.Errorf("journal line %+v", j)
				}
			}
			// A second run finds nothing more to move.
			if again, err := r.Plan(ctx); err != nil || len(again.Moves) != 0 {
				t.Errorf("second plan: %+v, %v", again.Moves, err)
			}
		})
	}
}

// A file that becomes linked between the plan and the move stays.
func TestApplyChecksAgain(t *testing.T) {
	f := setup(t, pgtest.SQLiteURL)
	ctx := context.Background()
	p := f.file("late.tif", 40)
	f.order(db.StageFailed, 40, false, []string{p})
	r := f.retention()
	plan, err := r.Plan(ctx)
	if err != nil || len(plan.Moves) != 1 {
		t.Fatalf("plan %+v, %v", plan, err)
	}
	f.order(db.StageCompleted, 0, false, []string{p}, p)
	done, kept, err := r.Apply(ctx, plan)
	if err != nil || len(done) != 0 || len(kept) != 1 || !exists(p) {
		t.Fatalf("Apply after the file got linked: moved %+v, kept %+v, %v", done, kept, err)
	}
	if j, _ := f.store.Moves(ctx); len(j) != 0 {
		t.Errorf("journal %+v, want nothing", j)
	}
}

func TestLinkedOnServer(t *testing.T) {
	targets := []string{"/data/a/x.tif", "/data/b/dir", "/data/c/sub/y.tif"}
	for _, tc := range []struct{ path, want string }{
		{"/data/a/x.tif", "/data/a/x.tif"},
		{"/data/a", "/data/a/x.tif"},
		{"/data/b/dir/inside.tif", "/data/b/dir"},
		{"/data/c", "/data/c/sub/y.tif"},
		{"/data/a/x.tif2", ""},
		{"/data/b/di", ""},
		{"/data/d", ""},
	} {
		if got := linkedOnServer(targets, tc.path); got != tc.want {
			t.Errorf("linkedOnServer(%s) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

// Run applies the plan every interval until its context ends.
func TestRunMovesEveryInterval(t *testing.T) {
	f := setup(t, pgtest.SQLiteURL)
	old := f.file("notes.txt", 40)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.retention().Run(ctx, 50*time.Millisecond) }()
	deadline := time.After(10 * time.Second)
	for exists(old) {
		select {
		case <-deadline:
			t.Fatalf("%s was not moved by the periodic run", old)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !anyFile(t, f.hold) {
		t.Fatalf("the holding folder %s holds nothing", f.hold)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil after its context ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func anyFile(t *testing.T, dir string) bool {
	t.Helper()
	found := false
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, _ error) error {
		if d != nil && !d.IsDir() {
			found = true
		}
		return nil
	})
	return found
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		want     string
	}{{0, ""}, {time.Hour, ""}, {time.Second, `interval: must be 0s (only the omero-adi retention command moves files) or at least 1m, got "1s"`}} {
		err := Config{Interval: tc.interval}.Validate()
		if (tc.want == "" && err != nil) || (tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want))) {
			t.Errorf("Validate(%s) = %v, want %q", tc.interval, err, tc.want)
		}
	}
}
