package db_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

func notice(o db.Order, channel, to string) db.Notice {
	return db.Notice{Key: fmt.Sprintf("%s.%d.%s", o.UUID, o.Attempt, channel), User: o.User, Channel: channel,
		Recipient: to, Payload: `{"uuid":"` + o.UUID + `"}`}
}

// finished creates, claims and finishes an order with a mail notice to to.
func finished(t *testing.T, s *db.Store, to string) db.Order {
	t.Helper()
	mustCreate(t, s, newOrder())
	o := mustClaim(t, s, "w", 1, time.Minute)[0]
	if err := s.Finish(ctx(t), o.Lease(), db.StageCompleted, "", notice(o, db.ChannelMail, to)); err != nil {
		t.Fatalf("Finish: %v", err)
	}
	return o
}

func TestOutbox(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		t.Run("written with the stage, once", func(t *testing.T) {
			s := setup(t, url)
			mustCreate(t, s, newOrder())
			o := mustClaim(t, s, "w", 1, time.Minute)[0]
			n := notice(o, db.ChannelMail, "alice@example.org")
			// A zombie's finish (wrong attempt) writes neither the stage nor the notice.
			zombie := o.Lease()
			zombie.Attempt++
			if err := s.Finish(ctx(t), zombie, db.StageCompleted, "", n); !errors.Is(err, db.ErrLeaseLost) {
				t.Fatalf("zombie Finish = %v, want ErrLeaseLost", err)
			}
			if q, _ := s.QueuedNotices(ctx(t)); q != 0 {
				t.Fatalf("queued after a refused finish = %d, want 0", q)
			}
			if err := s.Finish(ctx(t), o.Lease(), db.StageCompleted, "", n, notice(o, db.ChannelWebhook, "hook")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.OutboxNotify():
			case <-time.After(5 * time.Second):
				t.Fatal("no outbox signal after Finish with notices")
			}
			if q, _ := s.QueuedNotices(ctx(t)); q != 2 {
				t.Fatalf("queued = %d, want 2", q)
			}
			got, err := s.ClaimNotices(ctx(t), "a", 10, time.Minute, 0)
			if err != nil || len(got) != 2 {
				t.Fatalf("ClaimNotices = %v, %v; want 2", got, err)
			}
			if got[0].Key != n.Key || got[0].UUID != o.UUID || got[0].Attempts != 1 || got[0].Payload != n.Payload {
				t.Fatalf("claimed %+v, want %+v", got[0], n)
			}
			// Leased: a second sender gets nothing.
			if again, _ := s.ClaimNotices(ctx(t), "b", 10, time.Minute, 0); len(again) != 0 {
				t.Fatalf("second claim got %v", again)
			}
			ids := []int64{got[0].ID, got[1].ID}
			if err := s.NoticesSent(ctx(t), "b", ids, ""); !errors.Is(err, db.ErrNoticeLost) {
				t.Fatalf("NoticesSent by another owner = %v, want ErrNoticeLost", err)
			}
			if err := s.NoticesSent(ctx(t), "a", ids, ""); err != nil {
				t.Fatal(err)
			}
			if q, _ := s.QueuedNotices(ctx(t)); q != 0 {
				t.Fatalf("queued after sent = %d", q)
			}
			if to, _ := s.KnownRecipient(ctx(t), "alice"); to != "alice@example.org" {
				t.Fatalf("KnownRecipient = %q", to)
			}
		})
		t.Run("backoff and lease expiry", func(t *testing.T) {
			s := setup(t, url)
			finished(t, s, "alice@example.org")
			got, _ := s.ClaimNotices(ctx(t), "a", 10, time.Minute, 0)
			if len(got) != 1 {
				t.Fatalf("claimed %d", len(got))
			}
			if want := fmt.Sprintf("a/0/%d", got[0].ID); got[0].Batch != want {
				t.Fatalf("batch of a first claim = %q, want %s (window 0: a batch of its own)", got[0].Batch, want)
			}
			if err := s.NoticesFailed(ctx(t), "a", []int64{got[0].ID}, time.Hour, "dial: refused"); err != nil {
				t.Fatal(err)
			}
			if again, _ := s.ClaimNotices(ctx(t), "b", 10, time.Minute, 0); len(again) != 0 {
				t.Fatalf("claimed during backoff: %v", again)
			}
			if _, err := s.DB().ExecContext(ctx(t), `UPDATE adi_outbox SET not_before = NULL`); err != nil {
				t.Fatal(err)
			}
			// A short lease that runs out lets another sender claim it, batch kept.
			got, _ = s.ClaimNotices(ctx(t), "b", 10, 50*time.Millisecond, 0)
			if len(got) != 1 || got[0].Attempts != 2 || got[0].Batch != fmt.Sprintf("a/0/%d", got[0].ID) {
				t.Fatalf("claim after backoff = %+v", got)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				again, err := s.ClaimNotices(ctx(t), "c", 10, time.Minute, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(again) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("expired lease never claimable")
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := s.NoticesSent(ctx(t), "b", []int64{got[0].ID}, ""); !errors.Is(err, db.ErrNoticeLost) {
				t.Fatalf("the expired owner's NoticesSent = %v, want ErrNoticeLost", err)
			}
		})
		t.Run("digest window groups a recipient's notices", func(t *testing.T) {
			s := setup(t, url)
			for i := 0; i < 3; i++ {
				finished(t, s, "alice@example.org")
			}
			finished(t, s, "bob@example.org")
			if got, _ := s.ClaimNotices(ctx(t), "a", 10, time.Minute, time.Hour); len(got) != 0 {
				t.Fatalf("claimed inside the window: %v", got)
			}
			if _, err := s.DB().ExecContext(ctx(t), `UPDATE adi_outbox SET created = `+
				map[string]string{"postgres": "now() - interval '2 hours'", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now', '-2 hours')"}[s.Driver()]+
				` WHERE recipient = 'alice@example.org'`); err != nil {
				t.Fatal(err)
			}
			got, err := s.ClaimNotices(ctx(t), "a", 10, time.Minute, time.Hour)
			if err != nil || len(got) != 3 {
				t.Fatalf("claimed %d (%v), want alice's 3", len(got), err)
			}
			for _, n := range got {
				if n.Recipient != "alice@example.org" || n.Batch != "a/0" {
					t.Fatalf("claimed %+v, want alice's, in one batch", n)
				}
			}
		})
		t.Run("concurrent senders claim each notice once", func(t *testing.T) {
			s := setup(t, url)
			// The subtests share the database: what earlier ones left is not this one's.
			if _, err := s.DB().ExecContext(ctx(t), `UPDATE adi_outbox SET sent_at = created`); err != nil {
				t.Fatal(err)
			}
			const orders = 20
			for i := 0; i < orders; i++ {
				finished(t, s, fmt.Sprintf("u%d@example.org", i))
			}
			var (
				mu    sync.Mutex
				seen  = map[int64]int{}
				wg    sync.WaitGroup
				other = open(t, url, "other")
			)
			for w, st := range []*db.Store{s, other, s, other} {
				wg.Add(1)
				go func(w int, st *db.Store) {
					defer wg.Done()
					for {
						got, err := st.ClaimNotices(ctx(t), fmt.Sprintf("w%d", w), 3, time.Minute, 0)
						if err != nil {
							t.Error(err)
							return
						}
						if len(got) == 0 {
							return
						}
						mu.Lock()
						for _, n := range got {
							seen[n.ID]++
						}
						mu.Unlock()
					}
				}(w, st)
			}
			wg.Wait()
			if len(seen) != orders {
				t.Fatalf("claimed %d notices, want %d", len(seen), orders)
			}
			for id, c := range seen {
				if c != 1 {
					t.Fatalf("notice %d claimed %d times", id, c)
				}
			}
		})
	})
}
