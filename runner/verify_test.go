package runner_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// The three ways a real import leaves files out (omero-blitz ImportLibrary.importCandidates,
// ImportCandidates, CommandLineImporter.start), each through the double: the order knows per file
// what is in OMERO with which ids, ends Import Failed saying so, and a retry imports only the
// missing files (counted in the filesets the double holds), by `orders retry` and by the SQL of
// orders-db.md alike.
func TestPartialImportsAndRetry(t *testing.T) {
	cases := []struct {
		name    string
		failure omerotest.Failure
		cont    bool // -c
		states  []string
		reason  []string // in the reason of each file, "" for none
		retry   string   // "store" or "sql"
	}{
		{"a fileset fails: rc 2 stops the run", omerotest.Failure{ImportFail: []int{1}}, false,
			[]string{db.FileImported, db.FileFailed, db.FileNotTried}, []string{"", "INTERNAL_EXCEPTION", "stopped at an earlier failure"}, "store"},
		{"a fileset fails with -c: rc 0", omerotest.Failure{ImportFail: []int{1}}, true,
			[]string{db.FileImported, db.FileFailed, db.FileImported}, []string{"", "INTERNAL_EXCEPTION", ""}, "sql"},
		{"a file fails while scanned: dropped, rc 0", omerotest.Failure{ScanFail: []int{0}}, false,
			[]string{db.FileFailed, db.FileImported, db.FileImported}, []string{"FILE_EXCEPTION", "", ""}, "store"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
				e := setup(t, url, withOMERO(func(c *omero.Config) { c.ContinueOnError = tc.cont; c.ParallelFilesets = 1 }))
				e.double.SetFailure(t, tc.failure)
				e.start()
				files := []string{e.file("demo/alice/a.tif", "a"), e.file("demo/alice/b.tif", "b"), e.file("demo/alice/c.tif", "c")}
				uuid := e.insert("alice", "Demo", "151", "Dataset", files)
				o := e.expect(uuid, db.StageFailed, 30*time.Second)
				st := e.double.State(t)
				checkFiles(t, o, files, tc.states, tc.reason, st)
				if o.Result.Outcome != db.OutcomePartial {
					t.Errorf("outcome %q, want partial", o.Result.Outcome)
				}
				for i, f := range files {
					in := tc.states[i] == db.FileImported
					if in != strings.Contains(o.Description, f+" as Fileset ") {
						t.Errorf("description names %s in OMERO: %v, want %v: %s", f, !in, in, o.Description)
					}
				}
				if !strings.Contains(o.Description, "A retry imports only the files that are not in OMERO yet") {
					t.Errorf("description without the retry note: %s", o.Description)
				}
				checkRetryHint(t, tc.name, o.Description)

				// The retry imports only what is missing: each file is in exactly one fileset.
				e.double.SetFailure(t, omerotest.Failure{})
				retry(t, e, uuid, tc.retry)
				o = e.expect(uuid, db.StageCompleted, 30*time.Second)
				st = e.double.State(t)
				if len(st.Filesets) != 3 {
					t.Fatalf("the double holds %d filesets after the retry, want 3 (one per file)", len(st.Filesets))
				}
				checkFiles(t, o, files, []string{db.FileImported, db.FileImported, db.FileImported}, nil, st)
				if o.Result.Outcome != db.OutcomeComplete || len(o.Result.Filesets) != 3 || len(o.Result.Images) != 3 {
					t.Errorf("result after the retry: %+v", o.Result)
				}

				// orders retry --all imports every file again, explicitly.
				if _, err := e.store.RetryAll(context.Background(), uuid); err == nil {
					t.Fatal("retry --all of a completed order was accepted")
				}
				mustExec(t, e, `UPDATE imports SET stage = 'Import Failed' WHERE uuid = $1`, uuid)
				if _, err := e.store.RetryAll(context.Background(), uuid); err != nil {
					t.Fatal(err)
				}
				e.expect(uuid, db.StageCompleted, 30*time.Second)
				if n := len(e.double.State(t).Filesets); n != 6 {
					t.Errorf("retry --all: the double holds %d filesets, want 6", n)
				}
			})
		})
	}
}

// Every file dropped while candidates are scanned: rc 0 and no ids; the order says that none of
// its files is in OMERO, and why each is not.
func TestNothingImported(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL)
	e.double.SetFailure(t, omerotest.Failure{ScanFail: []int{0, 1}})
	e.start()
	files := []string{e.file("demo/alice/a.tif", "a"), e.file("demo/alice/b.tif", "b")}
	uuid := e.insert("alice", "Demo", "151", "Dataset", files)
	o := e.expect(uuid, db.StageFailed, 30*time.Second)
	checkFiles(t, o, files, []string{db.FileFailed, db.FileFailed}, []string{"FILE_EXCEPTION", "FILE_EXCEPTION"}, e.double.State(t))
	if o.Result.Outcome != db.OutcomeNothing || !strings.Contains(o.Description, "None of the 2 files is entirely in OMERO") {
		t.Errorf("outcome %q, description %s", o.Result.Outcome, o.Description)
	}
	if strings.Contains(o.Description, "A retry imports only") {
		t.Errorf("an empty import speaks of a partial retry: %s", o.Description)
	}
	checkRetryHint(t, "nothing imported", o.Description)
}

// A Screen import reads its plates from the summary and the YAML alike; the order is complete.
func TestPlateImportVerified(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL)
	e.start()
	files := []string{e.file("demo/alice/p1.plate", "p")}
	uuid := e.insert("alice", "Demo", "201", "Screen", files)
	o := e.expect(uuid, db.StageCompleted, 30*time.Second)
	checkFiles(t, o, files, []string{db.FileImported}, nil, e.double.State(t))
	if r := o.Result; r.Outcome != db.OutcomeComplete || len(r.Files[0].Plates) != 1 ||
		!strings.HasPrefix(r.Summary, "1 file uploaded, 1 fileset, 1 plate created, 1 image imported, 0 errors in ") {
		t.Errorf("result %+v", r)
	}
}

// orders verify: a complete order checks out; once OMERO lost a fileset, or a fileset a file,
// it does not; a partial order never does. All orders cost one CLI start.
func TestCheckOrders(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url, withOMERO(func(c *omero.Config) { c.ParallelFilesets = 1 }))
		e.start()
		a := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/a.tif", "a"), e.file("demo/alice/b.tif", "b")})
		e.expect(a, db.StageCompleted, 30*time.Second)
		e.double.SetFailure(t, omerotest.Failure{ImportFail: []int{0}})
		p := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/c.tif", "c"), e.file("demo/alice/d.tif", "d")})
		e.expect(p, db.StageFailed, 30*time.Second)
		e.double.SetFailure(t, omerotest.Failure{})

		check := func() map[string]runner.Check {
			t.Helper()
			calls := len(e.double.State(t).Calls)
			var orders []db.Order
			for _, id := range []string{a, p} {
				o, err := e.store.Get(context.Background(), id)
				if err != nil {
					t.Fatal(err)
				}
				orders = append(orders, o)
			}
			checks, err := runner.CheckOrders(context.Background(), e.client, orders)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(e.double.State(t).Calls) - calls; n != 1 {
				t.Errorf("orders verify started the CLI %d times, want 1", n)
			}
			out := map[string]runner.Check{}
			for _, c := range checks {
				out[c.UUID] = c
			}
			return out
		}
		got := check()
		if c := got[a]; !c.Complete || c.Found != 2 || c.InOMERO != 2 {
			t.Errorf("complete order: %+v", c)
		}
		if c := got[p]; c.Complete || c.Outcome != db.OutcomeNothing && c.Outcome != db.OutcomePartial {
			t.Errorf("failed order: %+v", c)
		}

		// Damage: OMERO loses the first fileset's file entry, then the whole second fileset.
		o, _ := e.store.Get(context.Background(), a)
		e.double.Update(t, func(s *omerotest.State) {
			for i := range s.Filesets {
				if s.Filesets[i].ID == o.Result.Filesets[0] {
					s.Filesets[i].ClientPaths = []string{"/elsewhere/x.tif"}
				}
			}
		})
		if c := check()[a]; c.Complete || !strings.Contains(strings.Join(c.Problems, ";"), "no longer holds") {
			t.Errorf("fileset without its file: %+v", c)
		}
		e.double.Update(t, func(s *omerotest.State) {
			var keep []omerotest.Fileset
			for _, f := range s.Filesets {
				if f.ID != o.Result.Filesets[1] {
					keep = append(keep, f)
				}
			}
			s.Filesets = keep
		})
		if c := check()[a]; c.Complete || c.Found != 1 || !strings.Contains(strings.Join(c.Problems, ";"), "no longer exists") {
			t.Errorf("fileset gone: %+v", c)
		}
	})
}

// checkFiles compares the order's per-file result with the wanted states, reasons and with the
// filesets the double holds (each imported file in its own, with its images).
func checkFiles(t *testing.T, o db.Order, files, states, reasons []string, st omerotest.State) {
	t.Helper()
	if o.Result == nil || len(o.Result.Files) != len(files) {
		t.Fatalf("result %+v, want %d files", o.Result, len(files))
	}
	byClient := map[string]omerotest.Fileset{}
	for _, fs := range st.Filesets {
		for _, p := range fs.ClientPaths {
			byClient[p] = fs
		}
	}
	for i, f := range o.Result.Files {
		if f.Path != files[i] || f.State != states[i] {
			t.Errorf("file %d: %s %q, want %s %q (reason %q)", i, f.Path, f.State, files[i], states[i], f.Reason)
		}
		if reasons != nil && reasons[i] != "" && !strings.Contains(f.Reason, reasons[i]) {
			t.Errorf("file %d: reason %q does not say %q", i, f.Reason, reasons[i])
		}
		fs, in := byClient[files[i]]
		switch {
		case f.State == db.FileImported && (!in || len(f.Filesets) != 1 || f.Filesets[0] != fs.ID || len(f.Images) != 1):
			t.Errorf("file %s imported as %v (images %v), the double holds it in %+v", f.Path, f.Filesets, f.Images, fs)
		case f.State != db.FileImported && (in || len(f.Filesets) != 0):
			t.Errorf("file %s %s, but it is in fileset %d (result %v)", f.Path, f.State, fs.ID, f.Filesets)
		}
	}
	ids := append([]int64(nil), o.Result.Filesets...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var held []int64
	for _, fs := range st.Filesets {
		held = append(held, fs.ID)
	}
	if fmt.Sprint(ids) != fmt.Sprint(held) {
		t.Errorf("the order records filesets %v, the double holds %v", ids, held)
	}
}

// retry puts the order back to pending: with Store.Retry (what `orders retry` runs) or with the
// SQL of orders-db.md.
func retry(t *testing.T, e *env, uuid, how string) {
	t.Helper()
	if how == "sql" {
		mustExec(t, e, `UPDATE imports SET stage = 'Import Pending' WHERE uuid = $1`, uuid)
		return
	}
	if _, err := e.store.Retry(context.Background(), uuid); err != nil {
		t.Fatal(err)
	}
}

func mustExec(t *testing.T, e *env, q string, args ...any) {
	t.Helper()
	if _, err := e.store.DB().Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

// A folder whose second fileset fails is partly in OMERO: the retry imports only the files below
// it that no fileset holds.
func TestPartialFolderRetry(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL, withOMERO(func(c *omero.Config) { c.ParallelFilesets = 1 }))
	e.double.SetFailure(t, omerotest.Failure{ImportFail: []int{1}})
	e.start()
	for _, f := range []string{"a.tif", "b.tif", "c.tif"} {
		e.file("demo/alice/run1/"+f, f)
	}
	folder := filepath.Join(e.data, "demo/alice/run1")
	uuid := e.insert("alice", "Demo", "151", "Dataset", []string{folder})
	o := e.expect(uuid, db.StageFailed, 30*time.Second)
	f := o.Result.Files[0]
	if f.State != db.FilePartial || len(f.Filesets) != 1 || len(f.InOMERO) != 1 || filepath.Base(f.InOMERO[0]) != "a.tif" ||
		!strings.Contains(f.Reason, "b.tif: the server failed to import it") {
		t.Fatalf("folder after a failed fileset: %+v", f)
	}
	if !strings.Contains(o.Description, "In OMERO in part: "+folder+" as Fileset ") {
		t.Errorf("description: %s", o.Description)
	}
	e.double.SetFailure(t, omerotest.Failure{})
	retry(t, e, uuid, "sql")
	o = e.expect(uuid, db.StageCompleted, 30*time.Second)
	st := e.double.State(t)
	if len(st.Filesets) != 3 {
		t.Fatalf("the double holds %d filesets, want 3", len(st.Filesets))
	}
	if f := o.Result.Files[0]; f.State != db.FileImported || len(f.Filesets) != 3 || len(f.Images) != 3 {
		t.Errorf("folder after the retry: %+v", f)
	}
	imp := st.Imports[len(st.Imports)-1]
	if len(imp.Paths) != 2 || filepath.Base(imp.Paths[0]) != "b.tif" || filepath.Base(imp.Paths[1]) != "c.tif" {
		t.Errorf("the retry imported %v, want b.tif and c.tif", imp.Paths)
	}
}

// A retry cannot import only the missing files when the stored result does not say which file is
// in OMERO (written before per-file outcomes, or by an attempt that stopped before recording
// them): it fails without importing, naming orders retry --all.
func TestRetryRefusesAnUnknownResult(t *testing.T) {
	for _, tc := range []struct{ name, result, want string }{
		{"filesets without files", `{"filesets":[55],"images":[101]}`, "which of the order's files they hold is not recorded"},
		{"files that may be in OMERO", `{"filesets":[55],"files":[{"path":"PATH","state":"unknown","reason":"imported by attempt 1"}]}`, "may have put"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := setup(t, pgtest.SQLiteURL)
			p := e.file("demo/alice/a.tif", "a")
			uuid := e.insert("alice", "Demo", "151", "Dataset", []string{p})
			mustExec(t, e, `UPDATE imports SET result = $1 WHERE uuid = $2`, strings.ReplaceAll(tc.result, "PATH", p), uuid)
			e.start()
			o := e.expect(uuid, db.StageFailed, 30*time.Second)
			if !strings.Contains(o.Description, tc.want) || !strings.Contains(o.Description, "omero-adi orders retry --all "+uuid) {
				t.Errorf("description: %s", o.Description)
			}
			checkRetryHint(t, tc.name, o.Description)
			if n := len(e.double.State(t).Imports); n != 0 {
				t.Errorf("%d imports ran", n)
			}
		})
	}
}

// A fileset in flight when the importer stopped can finish on the server without being reported:
// the retry asks OMERO (in its login's CLI start) which of its files it holds already, and does not
// import those again.
func TestRetryFindsUnreportedFileset(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url, withOMERO(func(c *omero.Config) { c.ParallelFilesets = 1 }))
		e.double.SetFailure(t, omerotest.Failure{ImportFail: []int{1}})
		e.start()
		files := []string{e.file("demo/alice/a.tif", "a"), e.file("demo/alice/b.tif", "b"), e.file("demo/alice/c.tif", "c")}
		uuid := e.insert("alice", "Demo", "151", "Dataset", files)
		e.expect(uuid, db.StageFailed, 30*time.Second)
		// c.tif reached OMERO after all, unreported.
		e.double.Update(t, func(s *omerotest.State) {
			s.Filesets = append(s.Filesets, omerotest.Fileset{ID: 9000, GroupID: omerotest.DemoGroupID, OwnerID: omerotest.AliceID, ClientPaths: []string{files[2]}})
		})
		e.double.SetFailure(t, omerotest.Failure{})
		calls := len(e.double.State(t).Calls)
		retry(t, e, uuid, "store")
		o := e.expect(uuid, db.StageCompleted, 30*time.Second)
		st := e.double.State(t)
		if n := len(st.Calls) - calls; n > 4 {
			t.Errorf("the retry started the CLI %d times", n)
		}
		if imp := st.Imports[len(st.Imports)-1]; len(imp.Paths) != 1 || imp.Paths[0] != files[1] {
			t.Errorf("the retry imported %v, want only %s", imp.Paths, files[1])
		}
		if len(st.Filesets) != 3 {
			t.Errorf("the double holds %d filesets, want 3", len(st.Filesets))
		}
		if f := o.Result.Files[2]; f.State != db.FileImported || len(f.Filesets) != 1 || f.Filesets[0] != 9000 {
			t.Errorf("c.tif: %+v", f)
		}
		hist, _ := e.store.History(context.Background(), uuid)
		var said bool
		for _, h := range hist {
			said = said || strings.Contains(h.Description, files[2]+" is in OMERO already (Fileset 9000)")
		}
		if !said {
			t.Errorf("the history does not say c.tif was found: %+v", hist)
		}
	})
}
