package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// benchOrders is how many orders the status page benchmark puts in PostgreSQL.
const benchOrders = 100_000

// seedOrders writes n orders of 50 people in 10 groups, one history row each at creation and one
// at the end, with stages as a busy facility has them: mostly completed, some failed, a few
// pending or cancelled, 200 running. One SQL statement per table, through the agent's connection.
func seedOrders(b *testing.B, s *db.Store, n int) {
	b.Helper()
	ctx := context.Background()
	_, err := s.DB().ExecContext(ctx, `
		INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, timestamp, files, description,
			lease_owner, lease_expires, attempt)
		SELECT 'group' || (g % 10), 'user' || (g % 50), '151', 'Dataset',
			CASE WHEN g % 100 < 80 THEN 'Import Completed' WHEN g % 100 < 90 THEN 'Import Failed'
			     WHEN g % 100 < 95 THEN 'Import Pending' WHEN g % 1000 >= 998 THEN 'Import Started' ELSE 'Import Cancelled' END,
			md5(g::text)::uuid::text, now() - (($1 - g) * interval '30 seconds'),
			'["/data/group' || (g % 10) || '/user' || (g % 50) || '/run' || g || '/image_' || g || '.tif"]',
			CASE WHEN g % 100 BETWEEN 80 AND 89 THEN 'OMERO import failed: the file is not an image; fix it, then retry' END,
			CASE WHEN g % 1000 >= 998 THEN 'agent-' || (g % 3) END,
			CASE WHEN g % 1000 >= 998 THEN now() + interval '1 minute' END, 1
		FROM generate_series(1, $1) AS g`, n)
	if err != nil {
		b.Fatal(err)
	}
	_, err = s.DB().ExecContext(ctx, `
		INSERT INTO adi_history (uuid, stage, at, worker, description)
		SELECT uuid, 'Import Pending', timestamp - interval '2 minutes', 'watcher', 'created by rule' FROM imports
		UNION ALL
		SELECT uuid, stage, timestamp, 'agent-' || (id % 3), COALESCE(description, '') FROM imports WHERE stage <> 'Import Pending'`)
	if err != nil {
		b.Fatal(err)
	}
	// A database in use has been vacuumed by autovacuum: its visibility map lets index-only scans
	// skip the table.
	if _, err := s.DB().ExecContext(ctx, `VACUUM ANALYZE imports`); err != nil {
		b.Fatal(err)
	}
	if _, err := s.DB().ExecContext(ctx, `VACUUM ANALYZE adi_history`); err != nil {
		b.Fatal(err)
	}
}

// median runs fn count times and returns the median duration.
func median(count int, fn func()) time.Duration {
	d := make([]time.Duration, count)
	for i := range d {
		start := time.Now()
		fn()
		d[i] = time.Since(start)
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[count/2]
}

// BenchmarkStatusPage measures the server time of the pages and the API on 100,000 orders in
// PostgreSQL (median of 31 requests each, through the handler, no network; targets: My orders
// and /api/orders <= 50 ms, the queue <= 100 ms), prints the plans of their queries, and the CPU
// the process spends with 200 open event streams at idle (ADI_BENCH_SSE_IDLE, default 30s;
// target < 5 % of one core; the idle clients live in the same process and are counted too).
//
//	go test -run '^$' -bench StatusPage -benchtime 1x ./web
func BenchmarkStatusPage(b *testing.B) {
	store, err := db.Open(context.Background(), pgtest.URL(b), db.Options{Logger: quiet(), Worker: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	if _, err := store.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	seedOrders(b, store, benchOrders)
	cfg := DefaultConfig()
	cfg.Enabled = true
	srv, err := New(cfg, Deps{Store: store, Log: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	cookie := func(acc omero.Account) *http.Cookie {
		rec := httptest.NewRecorder()
		srv.startSession(rec, httptest.NewRequest("GET", "/", nil), acc, false)
		return rec.Result().Cookies()[0]
	}
	person := cookie(omero.Account{Name: "user7"})
	owner := cookie(omero.Account{Name: "user3", OwnerOf: []string{"group3", "group4"}})
	admin := cookie(omero.Account{Name: "root", Admin: true})
	get := func(c *http.Cookie, path string) func() {
		return func() {
			req := httptest.NewRequest("GET", path, nil)
			req.AddCookie(c)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.String())
			}
		}
	}
	pages := []struct {
		name string
		c    *http.Cookie
		path string
		plan func() (string, error)
	}{
		{"my-orders", person, "/", nil},
		{"api-orders", person, "/api/orders", func() (string, error) {
			return store.ExplainBrowse(context.Background(), db.Page{Scope: db.Scope{User: "user7"}, Limit: defaultLimit + 1})
		}},
		{"api-orders-failed-text", person, "/api/orders?stage=failed&q=image_", func() (string, error) {
			return store.ExplainBrowse(context.Background(), db.Page{Scope: db.Scope{User: "user7"}, Stage: db.StageFailed, Text: "image_", Limit: defaultLimit + 1})
		}},
		{"api-orders-owner-all", owner, "/api/orders?view=all", func() (string, error) {
			return store.ExplainBrowse(context.Background(), db.Page{Scope: db.Scope{User: "user3", Groups: []string{"group3", "group4"}}, Limit: defaultLimit + 1})
		}},
		{"api-orders-admin-page-2", admin, "/api/orders?view=all&before=50000", nil},
		{"queue", admin, "/queue", func() (string, error) { return store.ExplainQueue(context.Background(), db.Scope{All: true}) }},
		{"api-queue-owner", owner, "/api/queue", nil},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, p := range pages {
			get(p.c, p.path)() // warm
			d := median(31, get(p.c, p.path))
			b.ReportMetric(float64(d.Microseconds())/1000, "ms/"+p.name)
		}
	}
	b.StopTimer()
	for _, p := range pages {
		if p.plan == nil {
			continue
		}
		plan, err := p.plan()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("plan of %s:\n%s\n", p.name, indent(plan))
		if fullScan.MatchString(plan) {
			b.Errorf("%s scans the whole imports table", p.name)
		}
	}
	b.ReportMetric(sseIdleCPU(b, srv, person), "%cpu/200-sse-idle")
}

// fullScan finds a sequential scan of the imports table (imports_preprocessing is tiny).
var fullScan = regexp.MustCompile(`Seq Scan on imports\s`)

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ")
}

// sseIdleCPU opens 200 event streams on a real listener, lets them idle, and returns the
// process's CPU over that time in percent of one core.
func sseIdleCPU(b *testing.B, srv *Server, c *http.Cookie) float64 {
	idle := 30 * time.Second
	if v := os.Getenv("ADI_BENCH_SSE_IDLE"); v != "" {
		var err error
		if idle, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	defer func() { cancel(); <-done }()
	const clients = 200
	tr := &http.Transport{MaxConnsPerHost: clients + 10, MaxIdleConnsPerHost: clients + 10}
	client := &http.Client{Transport: tr}
	for i := 0; i < clients; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+"/events", nil)
		req.AddCookie(c)
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("event stream %d: %v %v", i, resp, err)
		}
		go func() { _, _ = io.Copy(io.Discard, resp.Body); resp.Body.Close() }()
	}
	for srv.live.count() < clients {
		time.Sleep(10 * time.Millisecond)
	}
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before, start := cpu(), time.Now()
	time.Sleep(idle)
	used, wall := cpu()-before, time.Since(start)
	return 100 * used.Seconds() / wall.Seconds()
}
