package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
)

// reports starts a webhook; reports returns the posts that report a broken order.
func reports(t *testing.T) (url string, reports func() []string) {
	var (
		mu    sync.Mutex
		posts []string
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		posts = append(posts, body["text"])
		mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	return hook.URL, func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, p := range posts {
			if strings.Contains(p, "CHANGED") {
				out = append(out, p)
			}
		}
		return out
	}
}

// waitReports waits up to 30 s for n reports.
func waitReports(t *testing.T, changed func() []string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(changed()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d reports of broken orders within 30s, want %d", len(changed()), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return changed()
}

// An agent with notifications on reports an order its periodic integrity check finds broken
// through the notifier (here the webhook), once: later checks finding the same damage post
// nothing more.
func TestPeriodicCheckReportsBrokenOrder(t *testing.T) {
	url, changed := reports(t)
	w := newWorld(t, pgtest.SQLiteURL(t))
	lose := w.order("demo/alice/lose.tif")
	w.agentWithTables("a1", fmt.Sprintf("[integrity]\ninterval = \"2s\"\nmax_stat_per_s = 1000\n[notify]\nwebhook_url = %q\npoll_interval = \"100ms\"\n", url))
	if o := w.waitStages([]string{lose}, time.Minute, db.StageCompleted, db.StageFailed)[lose]; o.Stage != db.StageCompleted {
		t.Fatalf("order %s: %s %s", o.UUID, o.Stage, o.Description)
	}
	lost := w.data + "/demo/alice/lose.tif"
	if err := os.Rename(lost, w.dir+"/aside.tif"); err != nil {
		t.Fatal(err)
	}
	if p := waitReports(t, changed, 1)[0]; !strings.Contains(p, lose) || !strings.Contains(p, lost+" deleted") {
		t.Errorf("report %q: want order %s and %s deleted", p, lose, lost)
	}
	in, err := w.store.GetIntegrity(context.Background(), lose)
	if err != nil || in == nil {
		t.Fatalf("integrity of %s: %+v, %v", lose, in, err)
	}
	// Two more periodic checks find the same damage.
	deadline := time.Now().Add(30 * time.Second)
	for first := in.CheckedAt; ; time.Sleep(100 * time.Millisecond) {
		if in, err = w.store.GetIntegrity(context.Background(), lose); err != nil {
			t.Fatal(err)
		}
		if in.CheckedAt.Sub(first) >= 3*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the periodic check did not run again")
		}
	}
	if n := len(changed()); n != 1 {
		t.Errorf("%d reports of the same damage, want 1", n)
	}
}

// `omero-adi integrity` writes the reports of the broken orders it finds into the outbox (the
// agent sends them), so that an order the command found first is not left unreported; a second
// run finding the same damage writes nothing more.
func TestIntegrityCommandReportsBrokenOrder(t *testing.T) {
	url, changed := reports(t)
	w := newWorld(t, pgtest.SQLiteURL(t))
	lose := w.order("demo/alice/lose.tif")
	tables := fmt.Sprintf("[integrity]\ninterval = \"0s\"\n[notify]\nwebhook_url = %q\npoll_interval = \"100ms\"\n", url)
	w.agentWithTables("a1", tables) // no periodic check
	if o := w.waitStages([]string{lose}, time.Minute, db.StageCompleted, db.StageFailed)[lose]; o.Stage != db.StageCompleted {
		t.Fatalf("order %s: %s %s", o.UUID, o.Stage, o.Description)
	}
	lost := w.data + "/demo/alice/lose.tif"
	if err := os.Rename(lost, w.dir+"/aside.tif"); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"INGEST_TRACKING_DB_URL": w.url}
	settings := w.settings("cli", tables)
	for i := 0; i < 2; i++ {
		if _, errs, code := cli(t, env, "--config", settings, "integrity", "--rate", "0"); code != 1 {
			t.Fatalf("integrity: exit %d, stderr %q; want 1", code, errs)
		}
	}
	if p := waitReports(t, changed, 1)[0]; !strings.Contains(p, lose) || !strings.Contains(p, lost+" deleted") {
		t.Errorf("report %q: want order %s and %s deleted", p, lose, lost)
	}
	var n int
	if err := w.store.DB().QueryRow(`SELECT count(*) FROM adi_outbox WHERE notice_key LIKE 'broken.%'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("%d broken notices (%v), want 1: the second run found the same damage", n, err)
	}
}
