package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/rules"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return l
}

// testConfig is a dry-run agent watching <data>/demo/{user}/dropbox with a 300 ms settle.
func testConfig(t *testing.T, url string) (Config, string) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for _, d := range []string{"demo/alice/dropbox", "demo/mallory/dropbox"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := Defaults()
	cfg.IngestTrackingDB = url
	cfg.BaseDir = data
	cfg.LogDir = filepath.Join(dir, "log")
	cfg.Listen = ""
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Lease = 3 * time.Second
	cfg.Omero.DryRun = true
	cfg.Omero.SessionRoot = filepath.Join(dir, "sessions")
	cfg.Watch.Mode = "events"
	cfg.Watch.PollInterval = 200 * time.Millisecond
	cfg.Rules = []rules.Rule{{
		Name: "dropbox", Group: "Demo", Path: filepath.Join(data, "demo/{user}/dropbox"),
		Users: []string{"alice", "bob"}, Include: []string{"**/*.tif"},
		Settle: 300 * time.Millisecond, Destination: "Dataset:151",
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg, data
}

// openStore opens the agent's database for the test to look at, migrated.
func openStore(t *testing.T, cfg Config) *db.Store {
	t.Helper()
	s, _, err := OpenStore(context.Background(), cfg, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startAgent runs an agent until the test ends and returns a view of its database.
func startAgent(t *testing.T, cfg Config, role string) *db.Store {
	t.Helper()
	store := openStore(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(cfg, role, quietLogger())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return store
}

func waitOrders(t *testing.T, s *db.Store, n int, timeout time.Duration) []db.Order {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var orders []db.Order
	for time.Now().Before(deadline) {
		var err error
		orders, err = s.List(context.Background(), db.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(orders) >= n {
			return orders
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%d orders after %s, want %d", len(orders), timeout, n)
	return nil
}

// A file copied into a watched folder becomes exactly one order with the rule's group and
// destination, the user captured from the path and the rule as its source; a dry-run runner
// then completes it.
func TestDroppedFileBecomesOneOrder(t *testing.T) {
	for _, eng := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		t.Run(eng.name, func(t *testing.T) {
			cfg, data := testConfig(t, eng.url(t))
			store := startAgent(t, cfg, RoleAll)
			file := filepath.Join(data, "demo/alice/dropbox/plate1.tif")
			if err := os.WriteFile(file, []byte("pixels"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Not in the allowlist: never an order.
			if err := os.WriteFile(filepath.Join(data, "demo/mallory/dropbox/x.tif"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			orders := waitOrders(t, store, 1, 15*time.Second)
			o := orders[0]
			if o.User != "alice" || o.Group != "Demo" || o.DestinationType != "Dataset" || o.DestinationID != "151" || o.Source != "dropbox" {
				t.Errorf("order %+v", o)
			}
			if files, _ := o.FileList(); len(files) != 1 || files[0] != file {
				t.Errorf("files %q, want [%q]", o.Files, file)
			}
			deadline := time.Now().Add(10 * time.Second)
			for o.Stage != db.StageCompleted && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				o, _ = store.Get(context.Background(), o.UUID)
			}
			if o.Stage != db.StageCompleted || !strings.HasPrefix(o.Description, "dry run:") {
				t.Errorf("order %s: %q %q", o.UUID, o.Stage, o.Description)
			}
			time.Sleep(time.Second) // several settle periods and polls: still one order
			if orders := waitOrders(t, store, 1, time.Second); len(orders) != 1 {
				t.Errorf("%d orders, want 1", len(orders))
			}
		})
	}
}

// Two watcher agents on the same folder and database create one order per unit.
func TestTwoWatchersOneOrderPerUnit(t *testing.T) {
	cfg, data := testConfig(t, pgtest.URL(t))
	cfg.WorkerName = "w1"
	store := startAgent(t, cfg, RoleWatcher)
	cfg2 := cfg
	cfg2.WorkerName = "w2"
	startAgent(t, cfg2, RoleWatcher)
	for i := 0; i < 20; i++ {
		p := filepath.Join(data, "demo/alice/dropbox", "f"+string(rune('a'+i))+".tif")
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	waitOrders(t, store, 20, 20*time.Second)
	time.Sleep(1500 * time.Millisecond)
	orders := waitOrders(t, store, 20, time.Second)
	if len(orders) != 20 {
		t.Errorf("%d orders, want 20", len(orders))
	}
	// A rename within the folder is not a new order.
	if err := os.Rename(filepath.Join(data, "demo/alice/dropbox/fa.tif"), filepath.Join(data, "demo/alice/dropbox/renamed.tif")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if orders := waitOrders(t, store, 20, time.Second); len(orders) != 20 {
		t.Errorf("after rename: %d orders, want 20", len(orders))
	}
}

// A restarted watcher rescans the folder and creates no second order for what it ordered before;
// a file whose content changed afterwards is a new order.
func TestRestartedWatcherCreatesNoSecondOrder(t *testing.T) {
	cfg, data := testConfig(t, pgtest.SQLiteURL(t))
	file := filepath.Join(data, "demo/alice/dropbox/a.tif")
	if err := os.WriteFile(file, []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	store := openStore(t, cfg)
	a, err := New(cfg, RoleWatcher, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	waitOrders(t, store, 1, 15*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	bstore := startAgent(t, cfg, RoleWatcher)
	time.Sleep(1500 * time.Millisecond) // the start-up scan and several settle periods
	if orders := waitOrders(t, bstore, 1, time.Second); len(orders) != 1 {
		t.Fatalf("after restart: %d orders, want 1", len(orders))
	}
	if err := os.WriteFile(file, []byte("second, longer content"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitOrders(t, bstore, 2, 15*time.Second)
}

// The health and metrics endpoints answer while the agent runs.
func TestHealthAndMetricsEndpoints(t *testing.T) {
	cfg, _ := testConfig(t, pgtest.SQLiteURL(t))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	startAgent(t, cfg, RoleAll)
	get := func(path string) (int, string) {
		resp, body := getWhenUp(t, http.DefaultClient, "http://"+cfg.Listen+path)
		return resp.StatusCode, body
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || !strings.Contains(body, "ready") || !strings.Contains(body, "mode=events") {
		t.Errorf("/readyz: %d %q", code, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "omero_adi_orders_running") || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d, missing metrics", code)
	}
}

// New validates and builds, and creates nothing: no database, no log_dir. Run does that.
func TestNewStartsNothing(t *testing.T) {
	dir := t.TempDir()
	cfg, _ := testConfig(t, "sqlite:///"+filepath.Join(dir, "db", "orders.db"))
	cfg.LogDir = filepath.Join(dir, "log")
	a, err := New(cfg, RoleAll, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(dir, "db"), cfg.LogDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("New created %s (%v)", p, err)
		}
	}
	a.Close()
	if _, err := New(cfg, "both", nil); err == nil || !strings.Contains(err.Error(), `--role must be all, watcher or runner, got "both"`) {
		t.Errorf("bad role: %v", err)
	}
	// Run creates them.
	a, err = New(cfg, RoleAll, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for _, p := range []string{filepath.Join(dir, "db", "orders.db"), cfg.LogDir} {
		for {
			if _, err := os.Stat(p); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Errorf("Run did not create %s: %v", p, err)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// With [web] enabled the agent serves the status page on listen beside /healthz; without a
// listener the setting is refused.
func TestStatusPageOnTheListener(t *testing.T) {
	cfg, _ := testConfig(t, pgtest.SQLiteURL(t))
	cfg.Web.Enabled = true
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "web.enabled: the status page is served on listen, which is empty") {
		t.Errorf("web without listen: %v", err)
	}
	cfg.Web.SignInFailures = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "web.signin_failures: must be at least 1, got 0") {
		t.Errorf("web key without its table prefix: %v", err)
	}
	cfg.Web.SignInFailures = 5
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = ln.Addr().String()
	ln.Close()
	startAgent(t, cfg, RoleAll)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, _ := getWhenUp(t, client, "http://"+cfg.Listen+"/"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("GET /: %d to %q, want the sign-in form", resp.StatusCode, resp.Header.Get("Location"))
	}
	for path, want := range map[string]int{"/healthz": http.StatusOK, "/api/orders": http.StatusUnauthorized, "/login": http.StatusOK} {
		resp, err := client.Get("http://" + cfg.Listen + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

// getWhenUp GETs url with client, retrying for 10 s while the agent's listener is not up yet.
func getWhenUp(t *testing.T, client *http.Client, url string) (*http.Response, string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp, string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
