package db_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

// insertPending writes n pending orders by raw SQL (as the web plugin would), in chunks.
func insertPending(t testing.TB, s *db.Store, n int) []string {
	t.Helper()
	ids := make([]string, 0, n)
	for done := 0; done < n; {
		chunk := min(500, n-done)
		var b strings.Builder
		b.WriteString(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files) VALUES `)
		for i := 0; i < chunk; i++ {
			id := uuid.NewString()
			ids = append(ids, id)
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `('Demo', 'alice', '151', 'Dataset', 'Import Pending', '%s', '["/data/demo/%d.tif"]')`, id, done+i)
		}
		if _, err := s.DB().ExecContext(ctx(t), b.String()); err != nil {
			t.Fatalf("insert pending orders: %v", err)
		}
		done += chunk
	}
	return ids
}

// drainQueue runs workers that claim (batches of batch) and finish orders until want orders are
// done; it reports every claimed uuid to seen.
func drainQueue(t testing.TB, stores []*db.Store, workers, batch, want int, seen func(uuid string)) {
	t.Helper()
	var (
		done     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	deadline := time.Now().Add(2 * time.Minute)
	for si, s := range stores {
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(s *db.Store, worker string) {
				defer wg.Done()
				for done.Load() < int64(want) && firstErr == nil {
					if time.Now().After(deadline) {
						fail(fmt.Errorf("%s: only %d of %d orders done before the deadline", worker, done.Load(), want))
						return
					}
					orders, err := s.Claim(ctx(t), worker, batch, time.Minute)
					if err != nil {
						fail(err)
						return
					}
					for _, o := range orders {
						if seen != nil {
							seen(o.UUID)
						}
						if err := s.Finish(ctx(t), o.Lease(), db.StageCompleted, ""); err != nil {
							fail(err)
							return
						}
						done.Add(1)
					}
				}
			}(s, fmt.Sprintf("agent%d-w%d", si, w))
		}
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("drain queue: %v", firstErr)
	}
}

// TestTwoAgentsClaimEachOrderOnce: two Stores (two agents) with 8 workers each drain 5,000 orders.
func TestTwoAgentsClaimEachOrderOnce(t *testing.T) {
	const total = 5000
	forEngines(t, func(t *testing.T, url string) {
		a := setup(t, url)
		b := open(t, url, "agent-b")
		ids := insertPending(t, a, total)
		var (
			mu     sync.Mutex
			claims = map[string]int{}
		)
		start := time.Now()
		drainQueue(t, []*db.Store{a, b}, 8, 4, total, func(id string) {
			mu.Lock()
			claims[id]++
			mu.Unlock()
		})
		t.Logf("%d orders claimed and finished by 2x8 workers in %s (with -race)", total, time.Since(start))
		for _, id := range ids {
			if claims[id] != 1 {
				t.Fatalf("order %s claimed %d times", id, claims[id])
			}
		}
		if len(claims) != total {
			t.Fatalf("%d distinct orders claimed, want %d", len(claims), total)
		}
		var completed, started int
		if err := a.DB().QueryRowContext(ctx(t), `SELECT count(*) FROM imports WHERE stage = 'Import Completed' AND attempt = 1`).Scan(&completed); err != nil {
			t.Fatal(err)
		}
		if err := a.DB().QueryRowContext(ctx(t), `SELECT count(*) FROM adi_history WHERE stage = 'Import Started'`).Scan(&started); err != nil {
			t.Fatal(err)
		}
		if completed != total || started != total {
			t.Fatalf("completed rows = %d, start events = %d, want %d each", completed, started, total)
		}
	})
}

func TestFencingAndRecovery(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder())
		done := mustCreate(t, s, newOrder("/data/demo/alice/done.tif"))
		pending := mustCreate(t, s, newOrder("/data/demo/alice/later.tif"))
		claimed := mustClaim(t, s, "zombie", 2, time.Hour)
		if len(claimed) != 2 || claimed[0].UUID != o.UUID || claimed[1].UUID != done.UUID {
			t.Fatalf("claimed %+v", claimed)
		}
		if err := s.Finish(ctx(t), claimed[1].Lease(), db.StageCompleted, ""); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		if n, err := s.Recover(ctx(t), db.RecoverPolicy{}); err != nil || n != 0 {
			t.Fatalf("Recover before expiry = %d, %v", n, err)
		}
		// A heartbeat sets the lease; this last one is short, and then the worker goes silent.
		if cancel, err := s.Heartbeat(ctx(t), claimed[0].Lease(), 50*time.Millisecond); err != nil || cancel {
			t.Fatalf("Heartbeat = %v, %v", cancel, err)
		}
		if got, _ := s.Get(ctx(t), o.UUID); got.LeaseExpires == nil || time.Until(*got.LeaseExpires) > time.Minute {
			t.Fatalf("lease after a 50ms heartbeat expires at %v", got.LeaseExpires)
		}
		waitUntil(t, "the lease expires", func() bool {
			n, err := s.Recover(ctx(t), db.RecoverPolicy{})
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			return n == 1
		})
		got, _ := s.Get(ctx(t), o.UUID)
		want := "import interrupted (agent stopped or lost its lease during Import Started); the import may be partial in OMERO — check, then retry with: UPDATE imports SET stage = 'Import Pending' WHERE uuid = '" + o.UUID + "';"
		if got.Stage != db.StageFailed || got.Description != want || got.LeaseOwner != "" {
			t.Fatalf("recovered order = %+v\nwant description %q", got, want)
		}
		// The zombie's writes change nothing.
		l := claimed[0].Lease()
		if _, err := s.Heartbeat(ctx(t), l, time.Minute); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("zombie Heartbeat = %v, want ErrLeaseLost", err)
		}
		if err := s.SetStage(ctx(t), l, db.StagePreprocessing, ""); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("zombie SetStage = %v, want ErrLeaseLost", err)
		}
		if err := s.SetResult(ctx(t), l, db.Result{Images: []int64{1}}); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("zombie SetResult = %v, want ErrLeaseLost", err)
		}
		if err := s.Finish(ctx(t), l, db.StageCompleted, "done"); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("zombie Finish = %v, want ErrLeaseLost", err)
		}
		if err := s.Release(ctx(t), l); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("zombie Release = %v, want ErrLeaseLost", err)
		}
		after, _ := s.Get(ctx(t), o.UUID)
		if after.Stage != got.Stage || after.Description != got.Description || after.Result != nil {
			t.Fatalf("zombie changed the order: %+v", after)
		}
		if d, _ := s.Get(ctx(t), done.UUID); d.Stage != db.StageCompleted {
			t.Fatalf("Recover touched a completed order: %+v", d)
		}
		if p, _ := s.Get(ctx(t), pending.UUID); p.Stage != db.StagePending {
			t.Fatalf("Recover touched a pending order: %+v", p)
		}
		// Bad final stages are refused.
		if err := s.Finish(ctx(t), l, db.StagePending, ""); !errors.Is(err, db.ErrInvalid) {
			t.Errorf("Finish(pending) = %v, want ErrInvalid", err)
		}
	})
}

func TestRecoverRetryPolicy(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		o := mustCreate(t, s, newOrder())
		policy := db.RecoverPolicy{Retry: true, MaxAttempts: 2, Backoff: time.Second}

		c := mustClaim(t, s, "w", 1, time.Hour)[0]
		if err := s.Release(ctx(t), c.Lease()); err != nil { // shutdown
			t.Fatalf("Release: %v", err)
		}
		if n, err := s.Recover(ctx(t), policy); err != nil || n != 1 {
			t.Fatalf("Recover = %d, %v", n, err)
		}
		got, _ := s.Get(ctx(t), o.UUID)
		if got.Stage != db.StagePending || got.NotBefore == nil || got.LeaseOwner != "" ||
			!strings.Contains(got.Description, "attempt 1 of 2") {
			t.Fatalf("requeued order = %+v", got)
		}
		if wait := got.NotBefore.Sub(got.Timestamp); wait < 900*time.Millisecond || wait > 1100*time.Millisecond {
			t.Fatalf("not_before is %s after the stage time, want the backoff 1s × attempt 1", wait)
		}
		// Backoff: not claimable until not_before.
		if early := mustClaim(t, s, "w", 1, time.Hour); len(early) != 0 {
			t.Fatalf("claimed during backoff: %+v", early)
		}
		var second []db.Order
		waitUntil(t, "the backoff passes", func() bool {
			second = mustClaim(t, s, "w", 1, 30*time.Millisecond)
			return len(second) == 1
		})
		if second[0].Attempt != 2 {
			t.Fatalf("second attempt = %+v", second[0])
		}
		waitUntil(t, "the second lease expires", func() bool {
			n, err := s.Recover(ctx(t), policy)
			if err != nil {
				t.Fatalf("Recover: %v", err)
			}
			return n == 1
		})
		got, _ = s.Get(ctx(t), o.UUID)
		if got.Stage != db.StageFailed || !strings.Contains(got.Description, "gave up after 2 attempts") ||
			!strings.Contains(got.Description, "UPDATE imports SET stage = 'Import Pending' WHERE uuid = '"+o.UUID+"';") {
			t.Fatalf("order after max attempts = %+v", got)
		}
	})
}

func TestRetryAndCancel(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		pending := mustCreate(t, s, newOrder("/data/demo/alice/p.tif"))
		running := mustCreate(t, s, newOrder("/data/demo/alice/r.tif"))

		c, err := s.Cancel(ctx(t), pending.UUID)
		if err != nil || c.Stage != db.StageCancelled {
			t.Fatalf("Cancel pending = %+v, %v", c, err)
		}
		claimed := mustClaim(t, s, "w", 5, time.Minute)
		if len(claimed) != 1 || claimed[0].UUID != running.UUID {
			t.Fatalf("claimed %+v; the cancelled order must not run", claimed)
		}
		r, err := s.Cancel(ctx(t), running.UUID)
		if err != nil || r.Stage != db.StageStarted || !r.CancelRequested {
			t.Fatalf("Cancel running = %+v, %v", r, err)
		}
		if cancel, err := s.Heartbeat(ctx(t), claimed[0].Lease(), time.Minute); err != nil || !cancel {
			t.Fatalf("Heartbeat after cancel = %v, %v; want cancel requested", cancel, err)
		}
		if err := s.Finish(ctx(t), claimed[0].Lease(), db.StageCancelled, "cancelled while running"); err != nil {
			t.Fatalf("Finish cancelled: %v", err)
		}
		if _, err := s.Cancel(ctx(t), running.UUID); !errors.Is(err, db.ErrStage) {
			t.Fatalf("Cancel of a cancelled order = %v, want ErrStage", err)
		}
		if _, err := s.Cancel(ctx(t), "nope"); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("Cancel unknown = %v, want ErrNotFound", err)
		}

		notify := s.Notify()
		waitSignal(t, notify, "the listener started")
		drain(notify)
		re, err := s.Retry(ctx(t), running.UUID)
		if err != nil || re.Stage != db.StagePending || re.CancelRequested || re.Description != "" || re.Attempt != 1 {
			t.Fatalf("Retry = %+v, %v", re, err)
		}
		waitSignal(t, notify, "Retry")
		again := mustClaim(t, s, "w", 5, time.Minute)
		if len(again) != 1 || again[0].UUID != running.UUID || again[0].Attempt != 2 || again[0].CancelRequested {
			t.Fatalf("claim after Retry = %+v", again)
		}
		if _, err := s.Retry(ctx(t), running.UUID); !errors.Is(err, db.ErrStage) {
			t.Fatalf("Retry of a running order = %v, want ErrStage", err)
		}
		if _, err := s.Retry(ctx(t), "nope"); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("Retry unknown = %v, want ErrNotFound", err)
		}
		if err := s.AddEvent(ctx(t), running.UUID, db.StageStarted, "annotation failed: test"); err != nil {
			t.Fatalf("AddEvent: %v", err)
		}
		if err := s.AddEvent(ctx(t), "nope", db.StageStarted, "x"); !errors.Is(err, db.ErrNotFound) {
			t.Fatalf("AddEvent unknown = %v, want ErrNotFound", err)
		}
		hist, _ := s.History(ctx(t), running.UUID)
		if last := hist[len(hist)-1]; last.Description != "annotation failed: test" || last.Worker != "test-host" {
			t.Fatalf("last event = %+v", last)
		}
	})
}

func TestNotifyOnCreateOrder(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		s := setup(t, url)
		other := open(t, url, "other") // another agent creates the order
		notify := s.Notify()
		waitSignal(t, notify, "the listener started")
		drain(notify)
		select {
		case <-notify:
			t.Fatal("signal without any change")
		case <-time.After(100 * time.Millisecond):
		}
		mustCreate(t, other, newOrder())
		waitSignal(t, notify, "CreateOrder by another Store")
	})
}

// TestNotifyReconnects: the PostgreSQL listener survives losing its connection and signals after
// reconnecting.
func TestNotifyReconnects(t *testing.T) {
	s := setup(t, engines[0].url(t))
	notify := s.Notify()
	waitSignal(t, notify, "the listener started")
	drain(notify)
	if _, err := s.DB().ExecContext(ctx(t), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`); err != nil {
		t.Fatalf("terminate listener: %v", err)
	}
	waitSignal(t, notify, "the listener reconnected")
	drain(notify)
	// Listening again: a raw insert is seen.
	waitUntil(t, "a notification after reconnecting", func() bool {
		insertPending(t, s, 1)
		select {
		case <-notify:
			return true
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
}

func TestCreateOrderValidation(t *testing.T) {
	s := setup(t, pgtestSQLite(t))
	tests := []struct {
		name   string
		change func(*db.NewOrder)
		errHas string
	}{
		{"no group", func(n *db.NewOrder) { n.Group = " " }, `group_name: is empty`},
		{"no user", func(n *db.NewOrder) { n.User = "" }, `user_name: is empty`},
		{"bad type", func(n *db.NewOrder) { n.Target.Kind = "Project" }, `destination_type: "Project"`},
		{"zero id", func(n *db.NewOrder) { n.Target.ID = 0 }, `destination_id: "0"`},
		{"negative id", func(n *db.NewOrder) { n.Target.ID = -1 }, `destination_id: "-1"`},
		{"no files", func(n *db.NewOrder) { n.Files = nil }, "files: lists no file"},
		{"relative file", func(n *db.NewOrder) { n.Files = []string{"/data/a.tif", "b.tif"} }, `files[1]: "b.tif"`},
		{"dot-dot file", func(n *db.NewOrder) { n.Files = []string{"/data/../etc/passwd"} }, `files[0]: "/data/../etc/passwd"`},
		{"no container", func(n *db.NewOrder) {
			n.Preprocessing = &order.Preprocessing{InputFile: "{Files}", OutputFolder: "/data"}
		},
			"preprocessing.container"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newOrder()
			tc.change(&n)
			_, _, err := s.CreateOrder(ctx(t), n)
			if !errors.Is(err, db.ErrInvalid) || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("CreateOrder = %v, want ErrInvalid naming %q", err, tc.errHas)
			}
		})
	}
	if list, _ := s.List(ctx(t), db.Filter{}); len(list) != 0 {
		t.Fatalf("invalid orders were written: %+v", list)
	}
	ok := newOrder()
	ok.Target = order.Target{Kind: order.Screen, Name: "plates 2024"}
	mustCreate(t, s, ok)
}

func pgtestSQLite(t *testing.T) string { return engines[1].url(t) }

func TestWatchKeyDedupe(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		a := setup(t, url)
		b := open(t, url, "agent-b")
		key := db.WatchKey{Rule: "demo-confocal", Path: "/data/demo/alice/dropbox/x.tif", Fingerprint: "100:1700000000:abcd"}
		// Two agents race to create the same unit, many times over: exactly one order each time.
		for round := 0; round < 20; round++ {
			k := key
			k.Fingerprint = fmt.Sprintf("%s-%d", key.Fingerprint, round)
			var (
				wg      sync.WaitGroup
				results [2]db.Order
				created [2]bool
				errs    [2]error
			)
			for i, s := range []*db.Store{a, b} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := newOrder(k.Path)
					n.WatchKey, n.Source = &k, "demo-confocal"
					results[i], created[i], errs[i] = s.CreateOrder(ctx(t), n)
				}()
			}
			wg.Wait()
			if errs[0] != nil || errs[1] != nil {
				t.Fatalf("round %d: CreateOrder errors %v, %v", round, errs[0], errs[1])
			}
			if created[0] == created[1] || results[0].UUID != results[1].UUID {
				t.Fatalf("round %d: created %v/%v, uuids %s/%s; want exactly one order", round, created[0], created[1],
					results[0].UUID, results[1].UUID)
			}
			if id, ok, err := a.HasWatchItem(ctx(t), k); err != nil || !ok || id != results[0].UUID {
				t.Fatalf("HasWatchItem = %q, %v, %v", id, ok, err)
			}
		}
		list, _ := a.List(ctx(t), db.Filter{})
		if len(list) != 20 || list[0].Source != "demo-confocal" {
			t.Fatalf("List: %d orders (source %q), want 20", len(list), list[0].Source)
		}
		// Rename detection: the same content under another path.
		moved := key
		moved.Fingerprint += "-3"
		moved.Path = "/data/demo/alice/dropbox/renamed.tif"
		if _, ok, _ := a.HasWatchItem(ctx(t), moved); ok {
			t.Fatal("HasWatchItem found a key that was never stored")
		}
		// The watcher's lookup of a file found quiet: by path and the fingerprint's beginning.
		for _, c := range []struct {
			path, sig string
			want      bool
		}{
			{key.Path, key.Fingerprint[:len(key.Fingerprint)/2], true},
			{key.Path, key.Fingerprint, true},
			{key.Path, key.Fingerprint + "x", false},
			{key.Path, "%", false}, // LIKE wildcards are taken literally
			{key.Path, "_" + key.Fingerprint[1:], false},
			{moved.Path, key.Fingerprint[:1], false},
		} {
			if ok, err := a.HasWatchItemSignature(ctx(t), key.Rule, c.path, c.sig); err != nil || ok != c.want {
				t.Fatalf("HasWatchItemSignature(%s, %q) = %v, %v; want %v", c.path, c.sig, ok, err, c.want)
			}
		}
		items, err := a.WatchItems(ctx(t), key.Rule, moved.Fingerprint)
		if err != nil || len(items) != 1 || items[0].Path != key.Path || items[0].UUID == "" || items[0].Created.IsZero() {
			t.Fatalf("WatchItems = %+v, %v", items, err)
		}
	})
}

// waitUntil polls cond every 20ms until it holds, failing after 20s.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting until %s", what)
		case <-tick.C:
		}
	}
}
