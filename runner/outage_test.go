package runner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/runner"
)

// PostgreSQL stops while two agents' imports run and stays away for longer than two leases; the
// imports finish meanwhile. Once it is back every order completes once: the workers kept their
// outcomes and wrote them before claiming anything new, and no agent recovered a live order.
func TestDatabaseOutageLosesNothing(t *testing.T) {
	pg := pgtest.Own(t)
	url := pg.URL(t)
	const lease = 3 * time.Second
	cfg := func(c *runner.Config) { c.Lease, c.Worker = lease, "A" }
	a := setup(t, func(testing.TB) string { return url }, withConfig(cfg))
	b := setup(t, func(testing.TB) string { return url }, withConfig(cfg), withConfig(func(c *runner.Config) { c.Worker = "B" }))
	// One OMERO and one data root for both agents.
	b.double, b.client, b.cfg.Roots, b.cfg.ManagedRepo = a.double, a.client, a.cfg.Roots, a.cfg.ManagedRepo
	a.double.SetFailure(t, omerotest.Failure{ImportDelay: 4 * time.Second})

	var first, queued []string
	for i := 0; i < 8; i++ {
		first = append(first, a.insert("alice", "Demo", "151", "Dataset", []string{a.file(fmt.Sprintf("demo/alice/o%d.tif", i), "x")}))
	}
	a.start()
	b.start()
	for _, u := range first {
		a.wait(u, 20*time.Second, db.StageStarted)
	}
	waitImports(t, a.double, 8, 20*time.Second, true)
	// Both agents are full (4 workers each): these wait for a free worker.
	for i := 0; i < 4; i++ {
		queued = append(queued, a.insert("alice", "Demo", "151", "Dataset", []string{a.file(fmt.Sprintf("demo/alice/q%d.tif", i), "x")}))
	}

	pg.Stop()
	outage := time.Now()
	waitImports(t, a.double, 8, 30*time.Second, false)
	time.Sleep(time.Until(outage.Add(3 * lease))) // every lease of the first orders expired meanwhile
	pg.Start(t)
	t.Logf("database away for %s", time.Since(outage).Round(time.Second))

	for _, u := range append(append([]string{}, first...), queued...) {
		o := a.expect(u, db.StageCompleted, time.Minute)
		if o.Attempt != 1 {
			t.Errorf("order %s ran %d times", u, o.Attempt)
		}
		if o.Result == nil || len(o.Result.Filesets) != 1 {
			t.Errorf("order %s: result %+v, want its fileset", u, o.Result)
		}
	}
	imported := map[string]int{}
	for _, imp := range a.double.State(t).Imports {
		for _, p := range imp.Paths {
			imported[p]++
		}
	}
	if len(imported) != 12 {
		t.Errorf("%d files imported, want 12", len(imported))
	}
	for p, n := range imported {
		if n != 1 {
			t.Errorf("%s imported %d times", p, n)
		}
	}
	// A worker writes the outcomes it kept before its agent claims anything new.
	finished := map[string]time.Time{}
	for _, u := range first {
		for _, h := range history(t, a.store, u) {
			if strings.Contains(h.Description, "interrupted") {
				t.Errorf("order %s: %q", u, h.Description)
			}
			if h.Stage == db.StageCompleted {
				finished[h.Worker] = maxTime(finished[h.Worker], h.At)
			}
		}
	}
	for _, u := range queued {
		for _, h := range history(t, a.store, u) {
			if h.Stage == db.StageStarted && h.At.Before(finished[h.Worker]) {
				t.Errorf("order %s claimed by %s at %s, before that agent recorded the outcomes it kept (until %s)",
					u, h.Worker, h.At.Format(time.StampMilli), finished[h.Worker].Format(time.StampMilli))
			}
		}
	}
}

// waitImports waits until n imports started (calls) or finished (journal).
func waitImports(t *testing.T, d *omerotest.Double, n int, timeout time.Duration, started bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := d.State(t)
		got := len(st.Imports)
		if started {
			got = 0
			for _, c := range st.Calls {
				if len(c.Argv) > 0 && c.Argv[0] == "import" {
					got++
				}
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d imports after %s", got, n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func history(t *testing.T, s *db.Store, uuid string) []db.Event {
	t.Helper()
	h, err := s.History(context.Background(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// recoveringStore is the order database as seen by a worker whose order another agent recovers
// right after the import reached OMERO (as after a network split): the result write is refused.
type recoveringStore struct {
	*db.Store
	t *testing.T
}

func (s recoveringStore) SetResult(ctx context.Context, l db.Lease, r db.Result) error {
	if err := s.Release(ctx, l); err != nil { // the lease expires now
		s.t.Error(err)
	}
	if n, err := s.Recover(ctx, db.RecoverPolicy{}); err != nil || n != 1 {
		s.t.Errorf("recover: %d, %v", n, err)
	}
	return s.Store.SetResult(ctx, l, r)
}

// A worker whose lease was lost after its import reached OMERO writes no stage, but the order's
// history names the fileset, so the images do not vanish from view.
func TestLeaseLostAfterImportIsInHistory(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		r, err := runner.New(e.cfg, recoveringStore{Store: e.store, t: t}, e.client, nil, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		defer func() { cancel(); <-done }()
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/split.tif", "x")})
		o := e.expect(uuid, db.StageFailed, 20*time.Second)
		if !strings.Contains(o.Description, "interrupted") {
			t.Errorf("description %q: want recovery's", o.Description)
		}
		fs := e.double.State(t).Imports[0].Filesets[0]
		want := fmt.Sprintf("imported as Fileset %d (Image:", fs)
		deadline := time.Now().Add(10 * time.Second)
		for {
			var found bool
			for _, h := range history(t, e.store, uuid) {
				if strings.Contains(h.Description, want) && strings.Contains(h.Description, "recovered meanwhile") {
					found = true
				}
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no history event %q…: %+v", want, history(t, e.store, uuid))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// Recovery never queues again an order whose import reached OMERO: it fails it naming the fileset.
func TestRecoverKeepsImportedOrdersFailed(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/r.tif", "x")})
		orders, err := e.store.Claim(context.Background(), "gone", 1, time.Hour)
		if err != nil || len(orders) != 1 {
			t.Fatalf("claim: %v %v", orders, err)
		}
		l := orders[0].Lease()
		if err := e.store.SetResult(context.Background(), l, db.Result{Filesets: []int64{41}, Images: []int64{42}, TempDir: "/tmp/inplace/run-1"}); err != nil {
			t.Fatal(err)
		}
		// The caller's own running orders stay untouched even with an expired lease.
		q := e.store.DB().Rebind(`UPDATE imports SET lease_expires = ? WHERE uuid = ?`)
		if _, err := e.store.DB().Exec(q, time.Now().Add(-time.Hour), uuid); err != nil {
			t.Fatal(err)
		}
		policy := db.RecoverPolicy{Retry: true, MaxAttempts: 5}
		if n, err := e.store.Recover(context.Background(), policy, l); err != nil || n != 0 {
			t.Fatalf("recover with the lease held: %d, %v", n, err)
		}
		if n, err := e.store.Recover(context.Background(), policy); err != nil || n != 1 {
			t.Fatalf("recover: %d, %v", n, err)
		}
		o, err := e.store.Get(context.Background(), uuid)
		if err != nil {
			t.Fatal(err)
		}
		if o.Stage != db.StageFailed || !strings.Contains(o.Description, "reached OMERO as Fileset 41") ||
			!strings.Contains(o.Description, "local temp folder /tmp/inplace/run-1") {
			t.Errorf("after recovery: %q %q", o.Stage, o.Description)
		}
		if err := e.store.Finish(context.Background(), l, db.StageCompleted, ""); !errors.Is(err, db.ErrLeaseLost) {
			t.Errorf("finish after recovery: %v, want ErrLeaseLost", err)
		}
	})
}
