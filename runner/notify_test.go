package runner_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/smtptest"
	"github.com/omero-adi/omero-adi/notify"
	"github.com/omero-adi/omero-adi/runner"
)

// withNotify makes the runner write the notices of a Notifier with mail and a webhook (nothing
// sends them here), and the login read the user's address.
func withNotify(t testing.TB) option {
	return func(e *env) {
		cfg := notify.DefaultConfig()
		cfg.SMTPURL, cfg.From, cfg.WebhookURL = "smtp://127.0.0.1:1", "omero@example.org", "http://127.0.0.1:1/hook"
		n, err := notify.New(cfg, notify.Deps{Log: quietLog()})
		if err != nil {
			t.Fatal(err)
		}
		e.cfg.Notifier = n
		e.ocfg.ReadUsers = true
	}
}

var _ runner.Notifier = (*notify.Notifier)(nil)

type outboxRow struct {
	channel, recipient string
	out                notify.Outcome
}

func (e *env) outbox(uuid string) []outboxRow {
	e.t.Helper()
	rows, err := e.store.DB().Query(e.store.DB().Rebind(`SELECT channel, recipient, payload FROM adi_outbox WHERE uuid = ? ORDER BY id`), uuid)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var (
			r       outboxRow
			payload string
		)
		if err := rows.Scan(&r.channel, &r.recipient, &payload); err != nil {
			e.t.Fatal(err)
		}
		if err := json.Unmarshal([]byte(payload), &r.out); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

// TestFinalStageWritesNotices: the notices are written with the final stage; the requester's
// address comes from the order's own login (no extra CLI start), or for an order that never logged
// in from the address a login read before; a user without an address gets the webhook only.
func TestFinalStageWritesNotices(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url, withNotify(t))
		e.start()
		f := e.file("demo/alice/n/cells.tif", "pixels")
		before := len(e.double.State(t).Calls)
		done := e.expect(e.insert("alice", "Demo", "151", "Dataset", []string{f}), db.StageCompleted, time.Minute)
		if starts := len(e.double.State(t).Calls) - before; starts > 4 {
			t.Errorf("%d omero starts for an order with notifications on, want <= 4", starts)
		}
		rows := e.outbox(done.UUID)
		if len(rows) != 2 || rows[0].channel != db.ChannelMail || rows[0].recipient != omerotest.AliceEmail || rows[1].channel != db.ChannelWebhook {
			t.Fatalf("notices of a completed order: %+v", rows)
		}
		o := rows[0].out
		if o.Name != "Alice Liddell" || o.Event != notify.EventCompleted || o.Result == nil || len(o.Result.Images) != 1 ||
			len(o.Files) != 1 || o.Files[0] != f {
			t.Errorf("payload %+v", o)
		}

		failed := e.expect(e.insert("alice", "Demo", "151", "Dataset", []string{e.data + "/demo/alice/n/gone.tif"}), db.StageFailed, time.Minute)
		rows = e.outbox(failed.UUID)
		if len(rows) != 2 || rows[0].recipient != omerotest.AliceEmail || rows[0].out.Description != failed.Description {
			t.Fatalf("notices of an order failed before its login: %+v", rows)
		}

		g := e.file("demo/bob/n/b.tif", "pixels")
		bob := e.expect(e.insert("bob", "Demo", "152", "Dataset", []string{g}), db.StageCompleted, time.Minute)
		if rows := e.outbox(bob.UUID); len(rows) != 1 || rows[0].channel != db.ChannelWebhook {
			t.Fatalf("notices for a user without an address: %+v", rows)
		}
		q, err := e.store.QueuedNotices(context.Background())
		if err != nil || q != 5 {
			t.Errorf("queued = %d, %v; want 5", q, err)
		}
	})
}

// withSentNotify is withNotify with a real SMTP server and the sender draining the outbox while
// the runner works, as an agent runs them.
func withSentNotify(b testing.TB) option {
	return func(e *env) {
		srv := smtptest.Start(b)
		cfg := notify.DefaultConfig()
		cfg.SMTPURL, cfg.From, cfg.WebclientURL = srv.URL(), "omero@example.org", "https://omero.example.org/webclient/"
		n, err := notify.New(cfg, notify.Deps{Store: e.store, Log: quietLog()})
		if err != nil {
			b.Fatal(err)
		}
		e.cfg.Notifier = n
		e.ocfg.ReadUsers = true
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		b.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("notify.Run: %v", err)
			}
		})
	}
}

// BenchmarkRunnerNotify: 200 orders at once through the omero CLI double, drained by 8 workers, with
// notifications off and on (mails to a real SMTP server, sent while the runner works), the two
// alternated in each iteration so that the machine's load drifts over both alike. Target: on-orders/s
// within 5 % of off-orders/s (ratio of medians, computed by make bench).
func BenchmarkRunnerNotify(b *testing.B) {
	const n = 200
	cfg := withConfig(func(c *runner.Config) { c.MaxWorkers = 8; c.Lease = 30 * time.Second })
	off := setup(b, pgtest.SQLiteURL, cfg)
	on := setup(b, pgtest.SQLiteURL, cfg, withSentNotify(b))
	off.start()
	on.start()
	var took [2]time.Duration
	for i := 0; i < b.N; i++ {
		envs := []*env{off, on}
		if i%2 == 1 {
			envs = []*env{on, off}
		}
		for _, e := range envs {
			b.StopTimer()
			e.insertFiles(i, n)
			b.StartTimer()
			t0 := time.Now()
			e.insertMany(i, n)
			e.waitFinished((i+1)*n, 10*time.Minute)
			k := 0
			if e == on {
				k = 1
			}
			took[k] += time.Since(t0)
		}
	}
	orders := float64(n * b.N)
	b.ReportMetric(orders/took[0].Seconds(), "off-orders/s")
	b.ReportMetric(orders/took[1].Seconds(), "on-orders/s")
}
