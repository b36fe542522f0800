package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/smtptest"
	"github.com/omero-adi/omero-adi/notify"
)

// stallServer accepts SMTP connections and never answers: a sender talking to it is mid-send.
// accepted receives once per connection.
func stallServer(t *testing.T) (addr string, accepted <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan struct{}, 16)
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String(), ch
}

func notifySettings(smtpURL string) string {
	return fmt.Sprintf(`[notify]
smtp_url = %q
from = "omero@example.org"
webclient_url = "https://omero.example.org/webclient/"
send_timeout = "2s"
retry_backoff = "200ms"
retry_backoff_max = "1s"
poll_interval = "100ms"
`, smtpURL)
}

// TestKilledAgentBetweenCommitAndSendDeliversOnce: an order completes (its notice committed with
// the final stage) while the agent's mail server never answers; the agent is killed with SIGKILL
// in the middle of that send. Another agent, with a working mail server, delivers the mail once
// the dead agent's lease on the notice ran out, and exactly once.
func TestKilledAgentBetweenCommitAndSendDeliversOnce(t *testing.T) {
	w := newWorld(t, pgtest.URL(t))
	stall, accepted := stallServer(t)
	victim := w.agentWithTables("victim", notifySettings("smtp://"+stall))
	uuid := w.order("demo/alice/mail.tif")
	w.waitStages([]string{uuid}, time.Minute, db.StageCompleted)
	select {
	case <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent never began to send the mail")
	}
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = victim.Process.Wait()
	if q, err := w.store.QueuedNotices(context.Background()); err != nil || q != 1 {
		t.Fatalf("queued notices after the kill = %d, %v; want 1", q, err)
	}
	srv := smtptest.Start(t)
	w.agentWithTables("rescuer", notifySettings(srv.URL()))
	srv.Wait(t, 1, time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := w.store.QueuedNotices(context.Background())
		if err == nil && q == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("queued notices = %d, %v after the mail arrived", q, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	ms := srv.Messages(t)
	if len(ms) != 1 {
		t.Fatalf("%d mails, want exactly 1", len(ms))
	}
	m := ms[0]
	if len(m.To) != 1 || m.To[0] != omerotest.AliceEmail || !strings.Contains(m.Text, uuid) ||
		!strings.Contains(m.Text, "https://omero.example.org/webclient/?show=image-") {
		t.Errorf("mail To %v:\n%s", m.To, m.Text)
	}
	var batch string
	if err := w.store.DB().QueryRow(`SELECT batch FROM adi_outbox WHERE uuid = $1`, uuid).Scan(&batch); err != nil {
		t.Fatal(err)
	}
	if m.MessageID != notify.MessageID(batch, "example.org") || !strings.HasPrefix(batch, "victim#") {
		t.Errorf("Message-ID %q, batch %q: want the batch the killed agent claimed", m.MessageID, batch)
	}
}
