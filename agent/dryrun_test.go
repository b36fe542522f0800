package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/settings"
)

// A dry run refuses a database with orders of the web plugin (source sql) or orders that ended
// for real, and leaves them as they were; it starts on a database of its own, where orders made
// by `orders create` before it started are dry run.
func TestDryRunNeverEndsARealOrder(t *testing.T) {
	for _, eng := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		for _, c := range []struct {
			name    string
			source  string
			finish  string // "": left pending; else ended so by a real worker
			refused bool
		}{
			{"a web plugin order", db.SourceSQL, "", true},
			{"an order a real agent completed", db.SourceCLI, db.StageCompleted, true},
			{"an order of orders create", db.SourceCLI, "", false},
			{"an order of a watch rule", "dropbox", "", false},
		} {
			t.Run(eng.name+"/"+c.name, func(t *testing.T) {
				cfg, data := testConfig(t, eng.url(t))
				cfg.Rules = nil
				file := filepath.Join(data, "demo/alice/a.tif")
				if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				s := openStore(t, cfg)
				ctx := context.Background()
				o, _, err := s.CreateOrder(ctx, db.NewOrder{Draft: order.Draft{Group: "Demo", User: "alice",
					Target: order.Target{Kind: order.Dataset, ID: 151}, Files: []string{file}, Source: c.source}})
				if err != nil {
					t.Fatal(err)
				}
				if c.finish != "" {
					claimed, err := s.Claim(ctx, "real-agent", 1, time.Minute)
					if err != nil || len(claimed) != 1 {
						t.Fatalf("claim: %v %v", claimed, err)
					}
					if err := s.Finish(ctx, claimed[0].Lease(), c.finish, "imported"); err != nil {
						t.Fatal(err)
					}
				}
				before, err := s.Get(ctx, o.UUID)
				if err != nil {
					t.Fatal(err)
				}
				hist, _ := s.History(ctx, o.UUID)

				a, err := New(cfg, RoleRunner, quietLogger())
				if err != nil {
					t.Fatal(err)
				}
				runCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				err = a.Run(runCtx)
				if c.refused {
					if !errors.Is(err, settings.ErrSettings) || !strings.Contains(err.Error(), "omero.dry_run") ||
						!strings.Contains(err.Error(), o.UUID) || !strings.Contains(err.Error(), "orders preview UUID") {
						t.Fatalf("Run = %v, want a refusal naming omero.dry_run, the order and orders preview", err)
					}
					after, _ := s.Get(ctx, o.UUID)
					histAfter, _ := s.History(ctx, o.UUID)
					if after.Stage != before.Stage || after.Description != before.Description || after.Attempt != before.Attempt || len(histAfter) != len(hist) {
						t.Errorf("the order changed: %+v, was %+v", after, before)
					}
					return
				}
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				after, _ := s.Get(ctx, o.UUID)
				if after.Stage != db.StageCompleted || !strings.HasPrefix(after.Description, "dry run:") {
					t.Errorf("the dry run's own order: %q %q", after.Stage, after.Description)
				}
			})
		}
	}
}
