package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// An agent imports two orders and records their links; after one file is deleted, `omero-adi
// integrity` prints one line for the broken order (uuid, image id, what happened) and exits 1,
// `orders show` shows it, and the agent's periodic check stores the same finding. With the file
// back, the command exits 0.
func TestIntegrityCommand(t *testing.T) {
	w := newWorld(t, pgtest.SQLiteURL(t))
	keep, lose := w.order("demo/alice/keep.tif"), w.order("demo/alice/lose.tif")
	w.agent("a1", "[integrity]\ninterval = \"2s\"\nmax_stat_per_s = 1000\n")
	got := w.waitStages([]string{keep, lose}, time.Minute, db.StageCompleted, db.StageFailed)
	for _, o := range got {
		if o.Stage != db.StageCompleted {
			t.Fatalf("order %s: %s %s", o.UUID, o.Stage, o.Description)
		}
	}
	lost := w.data + "/demo/alice/lose.tif"
	aside := w.dir + "/aside.tif" // outside the data root: nothing to find
	if err := os.Rename(lost, aside); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"INGEST_TRACKING_DB_URL": w.url}
	settings := w.settings("cli", "")
	out, errs, code := cli(t, env, "--config", settings, "integrity", "--rate", "0")
	image := fmt.Sprint(got[lose].Result.Images[0])
	if code != 1 || strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, lose+" images "+image+": 1 deleted: "+lost+" deleted") {
		t.Fatalf("integrity: exit %d, stdout %q, stderr %q; want one line for %s (image %s, deleted) and exit 1", code, out, errs, lose, image)
	}
	if !strings.Contains(errs, "checked 2 orders, 2 links") {
		t.Errorf("stderr %q lacks the summary", errs)
	}
	out, _, code = cli(t, env, "--config", settings, "orders", "show", lose)
	if code != 0 || !strings.Contains(out, "integrity:    BROKEN (1 links") || !strings.Contains(out, lost+" deleted: the file is gone") {
		t.Errorf("orders show: exit %d\n%s", code, out)
	}
	if _, _, code = cli(t, env, "--config", settings, "integrity", "--dry-run"); code != 2 {
		t.Errorf("--dry-run without --repair: exit %d, want 2", code)
	}

	// The agent's own check (its first run comes within a tenth of the interval) finds it too:
	// the command's findings are dropped, so only the agent can write them again.
	if _, err := w.store.DB().Exec("DELETE FROM adi_integrity"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		in, err := w.store.GetIntegrity(context.Background(), lose)
		if err != nil {
			t.Fatal(err)
		}
		if in != nil {
			if !in.Broken || len(in.Damage) != 1 || in.Damage[0].Kind != "deleted" {
				t.Fatalf("the agent's check stored %+v, want lose.tif deleted", in)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the agent's periodic check did not run within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}

	if err := os.Rename(aside, lost); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := cli(t, env, "--config", settings, "integrity", "--rate", "0"); code != 0 || out != "" {
		t.Errorf("after the file came back: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, errs)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 3, 31, 12, 0, 0, 0, time.Local)
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: ""},
		{in: "30d", want: now.AddDate(0, 0, -30)},
		{in: "36h", want: now.Add(-36 * time.Hour)},
		{in: "2026-01-31", want: time.Date(2026, 1, 31, 0, 0, 0, 0, time.Local)},
		{in: "yesterday", bad: true},
		{in: "-3d", bad: true},
	} {
		got, err := parseSince(tc.in, now)
		if (err != nil) != tc.bad || !got.Equal(tc.want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}
