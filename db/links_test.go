package db_test

import (
	"errors"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

// TestLinksIntegrityJournal records an order's links (fenced), reads them back, finds them by
// target (exact, below, folder above; not a sibling with a longer name), and keeps an integrity
// outcome and the retention journal.
func TestLinksIntegrityJournal(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder("/data/demo/alice/a.tif"))
		c := mustClaim(t, s, "w1", 1, time.Minute)[0]
		mtime := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
		links := []db.Link{
			{FilesetID: 5, Path: "/repo/alice_5/x/a.tif", Target: "/data/demo/alice/a.tif", Size: 10, ModTime: mtime},
			{FilesetID: 5, Path: "/repo/alice_5/x/w.zarr", Target: "/data/demo/alice/w.zarr", Dir: true, Size: 4096, ModTime: mtime},
		}
		stale := db.Lease{UUID: c.UUID, Owner: "other", Attempt: c.Attempt}
		if err := s.SetLinks(ctx(t), stale, links); !errors.Is(err, db.ErrLeaseLost) {
			t.Fatalf("SetLinks with a stale lease: %v, want ErrLeaseLost", err)
		}
		if err := s.SetLinks(ctx(t), c.Lease(), links); err != nil {
			t.Fatalf("SetLinks: %v", err)
		}
		got, err := s.Links(ctx(t), o.UUID)
		if err != nil || len(got) != 2 || got[0] != links[0] || got[1] != links[1] {
			t.Fatalf("Links = %+v, %v; want %+v", got, err, links)
		}
		if l, _ := s.LinkedOrders(ctx(t), db.LinkedFilter{}); len(l) != 0 {
			t.Fatalf("LinkedOrders before completion = %+v", l)
		}
		if err := s.SetResult(ctx(t), c.Lease(), db.Result{Filesets: []int64{5}, Images: []int64{7, 8}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(ctx(t), c.Lease(), db.StageCompleted, ""); err != nil {
			t.Fatal(err)
		}
		lo, err := s.LinkedOrders(ctx(t), db.LinkedFilter{})
		if err != nil || len(lo) != 1 || lo[0].UUID != o.UUID || lo[0].Links != 2 || len(lo[0].Images) != 2 {
			t.Fatalf("LinkedOrders = %+v, %v", lo, err)
		}
		if lo, _ := s.LinkedOrders(ctx(t), db.LinkedFilter{After: o.UUID}); len(lo) != 0 {
			t.Fatalf("LinkedOrders after the last = %+v", lo)
		}
		if lo, _ := s.LinkedOrders(ctx(t), db.LinkedFilter{Since: time.Now().Add(time.Hour)}); len(lo) != 0 {
			t.Fatalf("LinkedOrders since the future = %+v", lo)
		}
		for _, tc := range []struct {
			path string
			want int
		}{
			{"/data/demo/alice/a.tif", 1},
			{"/data/demo/alice", 2},
			{"/data/demo/alice/w.zarr/0/0.0", 1},
			{"/data/demo/alice/a.tif2", 0},
			{"/data/demo/alic", 0},
			{"/data/other", 0},
		} {
			refs, err := s.LinksTo(ctx(t), tc.path)
			if err != nil || len(refs) != tc.want {
				t.Errorf("LinksTo(%s) = %+v, %v; want %d", tc.path, refs, err, tc.want)
			}
		}
		moved := links[0]
		moved.Target = "/data/demo/alice/sub/a.tif"
		if err := s.RepointLink(ctx(t), o.UUID, moved); err != nil {
			t.Fatal(err)
		}
		if refs, _ := s.LinksTo(ctx(t), moved.Target); len(refs) != 1 || refs[0].UUID != o.UUID {
			t.Fatalf("after RepointLink: %+v", refs)
		}

		if in, err := s.GetIntegrity(ctx(t), o.UUID); in != nil || err != nil {
			t.Fatalf("GetIntegrity before a check = %+v, %v", in, err)
		}
		dmg := []db.Damage{{Link: links[0].Path, Target: links[0].Target, Kind: "deleted"}}
		for _, broken := range []bool{false, true} {
			in := db.Integrity{UUID: o.UUID, Links: 2, Broken: broken}
			if broken {
				in.Damage = dmg
			}
			if err := s.SetIntegrity(ctx(t), in); err != nil {
				t.Fatal(err)
			}
		}
		in, err := s.GetIntegrity(ctx(t), o.UUID)
		if err != nil || !in.Broken || len(in.Damage) != 1 || in.Damage[0] != dmg[0] || in.CheckedAt.IsZero() {
			t.Fatalf("GetIntegrity = %+v, %v", in, err)
		}
		if n, err := s.BrokenOrders(ctx(t)); n != 1 || err != nil {
			t.Fatalf("BrokenOrders = %d, %v", n, err)
		}

		m := db.Move{Rule: "r", Source: "/data/demo/x", Destination: "/hold/x", Reason: "ignored drop older than 30 days"}
		if err := s.JournalMove(ctx(t), m); err != nil {
			t.Fatal(err)
		}
		ms, err := s.Moves(ctx(t))
		if err != nil || len(ms) != 1 || ms[0].Source != m.Source || ms[0].Reason != m.Reason || ms[0].Worker == "" || ms[0].At.IsZero() {
			t.Fatalf("Moves = %+v, %v", ms, err)
		}
	})
}
