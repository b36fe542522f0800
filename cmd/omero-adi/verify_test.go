package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// orders verify checks finished orders against OMERO (the double) now: a complete order passes, one
// whose fileset OMERO lost fails with exit code 1; orders show lists each file; orders retry --all
// drops the result so that every file is imported again, orders retry keeps it.
func TestOrdersVerifyShowRetryAll(t *testing.T) {
	for _, engine := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		t.Run(engine.name, func(t *testing.T) {
			d := omerotest.New(t)
			f := newFixture(t, engine.url(t))
			f.useDouble(t, d, "")

			a, b := f.file(t, "demo/alice/a.tif"), f.file(t, "demo/alice/b.tif")
			var uuids []string
			for _, p := range []string{a, b} {
				out, errs, code := cli(t, f.env, "--config", f.config, "orders", "create", "--group", "Demo", "--user", "alice", "--dataset", "151", p)
				if code != 0 {
					t.Fatalf("orders create: exit %d: %s", code, errs)
				}
				uuids = append(uuids, strings.TrimSpace(out))
			}
			d.Update(t, func(s *omerotest.State) {
				s.Filesets = append(s.Filesets,
					omerotest.Fileset{ID: 5001, GroupID: omerotest.DemoGroupID, OwnerID: omerotest.AliceID, ClientPaths: []string{a}},
					omerotest.Fileset{ID: 5002, GroupID: omerotest.DemoGroupID, OwnerID: omerotest.AliceID, ClientPaths: []string{b}})
			})
			s, err := db.Open(context.Background(), f.env["INGEST_TRACKING_DB_URL"], db.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for i, p := range []string{a, b} {
				fs, img := int64(5001+i), int64(6001+i)
				res, _ := json.Marshal(db.Result{Filesets: []int64{fs}, Images: []int64{img}, Outcome: db.OutcomeComplete,
					Files: []db.FileResult{{Path: p, State: db.FileImported, Filesets: []int64{fs}, Images: []int64{img}}}})
				if _, err := s.DB().Exec(`UPDATE imports SET stage = 'Import Completed', result = $1 WHERE uuid = $2`, string(res), uuids[i]); err != nil {
					t.Fatal(err)
				}
			}

			out, errs, code := cli(t, f.env, "--config", f.config, "orders", "verify", uuids[0], uuids[1])
			if code != 0 || strings.Count(out, " complete\n") != 2 {
				t.Fatalf("verify of complete orders: exit %d\n%s%s", code, out, errs)
			}
			d.Update(t, func(s *omerotest.State) { s.Filesets = s.Filesets[:1] })
			out, errs, code = cli(t, f.env, "--config", f.config, "orders", "verify", "--since", "1d")
			if code != 1 || !strings.Contains(out, uuids[1]) || !strings.Contains(out, "INCOMPLETE: Fileset 5002 no longer exists") ||
				!strings.Contains(out, uuids[0]) || strings.Count(out, " complete\n") != 1 {
				t.Errorf("verify of a damaged order: exit %d\n%s%s", code, out, errs)
			}

			out, _, _ = cli(t, f.env, "--config", f.config, "orders", "show", uuids[0])
			if !strings.Contains(out, "outcome:      complete") || !strings.Contains(out, "  imported  "+a+"  filesets [5001] images [6001]") {
				t.Errorf("orders show:\n%s", out)
			}

			if _, errs, code = cli(t, f.env, "--config", f.config, "orders", "retry", "--all", uuids[1]); code != 2 {
				t.Errorf("retry --all of a completed order: exit %d %s", code, errs)
			}
			for _, id := range uuids {
				if _, err := s.DB().Exec(`UPDATE imports SET stage = 'Import Failed' WHERE uuid = $1`, id); err != nil {
					t.Fatal(err)
				}
			}
			if out, errs, code = cli(t, f.env, "--config", f.config, "orders", "retry", "--all", uuids[1]); code != 0 || !strings.Contains(out, "Import Pending") {
				t.Errorf("retry --all: exit %d %s%s", code, out, errs)
			}
			if _, errs, code = cli(t, f.env, "--config", f.config, "orders", "retry", uuids[0]); code != 0 {
				t.Errorf("retry: exit %d %s", code, errs)
			}
			for i, want := range []bool{true, false} {
				o, err := s.Get(context.Background(), uuids[i])
				if err != nil {
					t.Fatal(err)
				}
				if (o.Result != nil) != want {
					t.Errorf("order %d after retry: result %+v, want kept %v", i, o.Result, want)
				}
			}
			hist, _ := s.History(context.Background(), uuids[1])
			if last := hist[len(hist)-1]; !strings.Contains(last.Description, "retry of every file requested (--all)") ||
				!strings.Contains(last.Description, "Fileset 5002 (Image 6002)") {
				t.Errorf("history of retry --all: %+v", last)
			}
		})
	}
}
