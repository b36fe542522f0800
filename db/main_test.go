package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engines is the table every store test runs over: the same suite on PostgreSQL and SQLite.
var engines = []struct {
	name string
	url  func(t testing.TB) string
}{
	{"postgres", pgtest.URL},
	{"sqlite", pgtest.SQLiteURL},
}

func forEngines(t *testing.T, f func(t *testing.T, url string)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			f(t, e.url(t))
		})
	}
}

func testLogger() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

// open opens (without migrating) a Store on url, closed when the test ends.
func open(t testing.TB, url, worker string) *db.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := db.Open(ctx, url, db.Options{Logger: testLogger(), Worker: worker, NotifyPoll: 5 * time.Millisecond,
		NotifyReconnect: 50 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// setup returns a migrated Store on url.
func setup(t testing.TB, url string) *db.Store {
	t.Helper()
	s := open(t, url, "test-host")
	if _, err := s.Migrate(ctx(t)); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func newOrder(files ...string) db.NewOrder {
	if len(files) == 0 {
		files = []string{"/data/demo/alice/a.tif"}
	}
	return db.NewOrder{Draft: order.Draft{Group: "Demo", User: "alice", Target: order.Target{Kind: order.Dataset, ID: 151}, Files: files}}
}

func mustCreate(t testing.TB, s *db.Store, n db.NewOrder) db.Order {
	t.Helper()
	o, created, err := s.CreateOrder(ctx(t), n)
	if err != nil || !created {
		t.Fatalf("CreateOrder: created=%v err=%v", created, err)
	}
	return o
}

func mustClaim(t testing.TB, s *db.Store, worker string, max int, lease time.Duration) []db.Order {
	t.Helper()
	os, err := s.Claim(ctx(t), worker, max, lease)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return os
}

// waitSignal waits for a Notify signal, failing after a timeout.
func waitSignal(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no notification after %s", what)
	}
}

// drain empties a Notify channel.
func drain(ch <-chan struct{}) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}
