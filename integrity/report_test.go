package integrity

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

// The periodic check (Run) writes the Reporter's notices of a newly broken order into the outbox
// with the order's outcome, and wakes the sender; the next check, finding the same damage, reports
// nothing more.
func TestPeriodicCheckReportsToTheOutbox(t *testing.T) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			f := setup(t, e.url)
			target := f.file("a.tif", "pixels")
			uuid := f.order(target)
			mustDo(t, os.Remove(target))
			reported := make(chan Broken, 10)
			cfg := DefaultConfig()
			cfg.Interval = time.Second
			c, err := New(cfg, Deps{Store: f.store, ManagedRepo: f.repo, Roots: order.Roots{BaseDir: f.data}, Log: quietLog(),
				Reporter: ReporterFunc(func(b Broken) []db.Notice {
					reported <- b
					return []db.Notice{{Key: "broken." + b.UUID, User: b.User, Channel: db.ChannelAdmin, Recipient: "admin@example.org", Payload: "{}"}}
				})})
			mustDo(t, err)
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			defer func() {
				stop()
				if err := <-done; err != nil {
					t.Errorf("Run: %v", err)
				}
			}()
			select {
			case b := <-reported:
				if b.UUID != uuid || !b.New || len(b.Damage) != 1 || b.Damage[0].Kind != Deleted {
					t.Fatalf("reported %+v", b)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("the periodic check reported nothing")
			}
			select {
			case <-f.store.OutboxNotify():
			case <-time.After(20 * time.Second):
				t.Fatal("the check's notices did not wake the sender")
			}
			first := waitIntegrity(t, f.store, uuid, time.Time{})
			var got, user string
			mustDo(t, f.store.DB().QueryRow(f.store.DB().Rebind(`SELECT uuid, user_name FROM adi_outbox WHERE notice_key = ?`),
				"broken."+uuid).Scan(&got, &user))
			if got != uuid || user != "alice" {
				t.Errorf("outbox row of order %q, user %q; want %s, alice", got, user, uuid)
			}
			waitIntegrity(t, f.store, uuid, first) // the next periodic check
			select {
			case b := <-reported:
				t.Errorf("the same damage was reported again: %+v", b)
			default:
			}
			if q, err := f.store.QueuedNotices(context.Background()); err != nil || q != 1 {
				t.Errorf("queued notices = %d, %v; want 1", q, err)
			}
		})
	}
}

// waitIntegrity waits until order uuid's stored outcome is broken and checked after after, and
// returns its check time.
func waitIntegrity(t *testing.T, s *db.Store, uuid string, after time.Time) time.Time {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		in, err := s.GetIntegrity(context.Background(), uuid)
		if err == nil && in != nil && in.Broken && in.CheckedAt.After(after) {
			return in.CheckedAt
		}
		if time.Now().After(deadline) {
			t.Fatalf("no broken outcome of %s checked after %s: %+v, %v", uuid, after, in, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
