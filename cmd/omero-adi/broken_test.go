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

// An agent with notifications on reports an order its periodic integrity check finds broken
// through the notifier (here the webhook), once: later checks finding the same damage post
// nothing more.
func TestPeriodicCheckReportsBrokenOrder(t *testing.T) {
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
	defer hook.Close()
	changed := func() []string {
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
	w := newWorld(t, pgtest.SQLiteURL(t))
	lose := w.order("demo/alice/lose.tif")
	w.agentWithTables("a1", fmt.Sprintf("[integrity]\ninterval = \"2s\"\nmax_stat_per_s = 1000\n[notify]\nwebhook_url = %q\npoll_interval = \"100ms\"\n", hook.URL))
	if o := w.waitStages([]string{lose}, time.Minute, db.StageCompleted, db.StageFailed)[lose]; o.Stage != db.StageCompleted {
		t.Fatalf("order %s: %s %s", o.UUID, o.Stage, o.Description)
	}
	lost := w.data + "/demo/alice/lose.tif"
	if err := os.Rename(lost, w.dir+"/aside.tif"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(changed()) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no report of the broken order within 30s; posts %q", posts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p := changed()[0]; !strings.Contains(p, lose) || !strings.Contains(p, lost+" deleted") {
		t.Errorf("report %q: want order %s and %s deleted", p, lose, lost)
	}
	in, err := w.store.GetIntegrity(context.Background(), lose)
	if err != nil || in == nil {
		t.Fatalf("integrity of %s: %+v, %v", lose, in, err)
	}
	// Two more periodic checks find the same damage.
	for first := in.CheckedAt; ; time.Sleep(100 * time.Millisecond) {
		if in, err = w.store.GetIntegrity(context.Background(), lose); err != nil {
			t.Fatal(err)
		}
		if in.CheckedAt.Sub(first) >= 3*time.Second {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("the periodic check did not run again")
		}
	}
	if n := len(changed()); n != 1 {
		t.Errorf("%d reports of the same damage, want 1", n)
	}
}
