package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/testenv"
	"github.com/omero-adi/omero-adi/order"
)

// nodeModules is where scripts/test-deps.sh installs playwright-core (ADI_NODE_DIR, else the
// user's cache folder).
func nodeModules(t *testing.T) string {
	dir := os.Getenv("ADI_NODE_DIR")
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(cache, "omero-adi", "node")
	}
	mods := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(mods, "playwright-core", "package.json")); err != nil {
		testenv.Missing(t, "playwright-core in "+mods, "scripts/test-deps.sh")
	}
	return mods
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestStatusPageInBrowser drives the status page in Debian's chromium with playwright-core against
// a watcher agent serving the page and, later, a runner agent, on PostgreSQL with the OMERO double:
// alice signs in and sees only her orders, watches a dropped file (a hostile name) go Pending ->
// Started -> Completed without a reload, and retries a failed order; root (an OMERO admin) cancels
// bob's pending order. Screenshots of each page go to the test's artifact folder (go test
// -artifacts keeps them).
func TestStatusPageInBrowser(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "scripts/test-deps.sh")
	node := testenv.LookPath(t, "node", "scripts/test-deps.sh")
	mods := nodeModules(t)
	w := newWorld(t, pgtest.URL(t))
	const alicePw = "alice's page pw"
	w.double.Update(t, func(st *omerotest.State) { st.UserByName("alice").Password = alicePw })
	ctx := context.Background()
	mk := func(user, rel string) string {
		o, _, err := w.store.CreateOrder(ctx, db.NewOrder{Draft: order.Draft{Group: "Demo", User: user,
			Target: order.Target{Kind: order.Dataset, ID: 151}, Files: []string{filepath.Join(w.data, rel)}}})
		if err != nil {
			t.Fatal(err)
		}
		return o.UUID
	}
	failed := mk("alice", "demo/alice/never-there.tif") // the runner fails it: the file is missing
	bob := mk("bob", "demo/bob/b.tif")
	dropbox := filepath.Join(w.data, "demo", "alice", "dropbox")
	if err := os.MkdirAll(dropbox, 0o755); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	settings := w.settings("web", fmt.Sprintf(`[groups.Demo]
roots = [%q]
[watch]
mode = "events"
[web]
enabled = true
live_interval = "300ms"
[notify]
webclient_url = "https://omero.example.org/webclient/"
[[rules]]
name = "dropbox"
group = "Demo"
path = %q
users = ["alice"]
include = ["**/*.tif"]
settle = "1s"
destination = "Dataset:151"
`, filepath.Join(w.data, "demo"), filepath.Join(w.data, "demo", "{user}", "dropbox")))
	text, _ := os.ReadFile(settings)
	text = []byte(strings.Replace(string(text), `listen = ""`, fmt.Sprintf("listen = \"127.0.0.1:%d\"", port), 1))
	if err := os.WriteFile(settings, text, 0o644); err != nil {
		t.Fatal(err)
	}
	w.startRole("web", settings, "watcher", true)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitHTTP(t, base+"/healthz", 60*time.Second)

	shots := t.ArtifactDir()
	const drop = `<img src=x onerror="alert(1)"> 'drop'.tif`
	cfg, _ := json.Marshal(map[string]any{"base": base, "chromium": chromium, "shots": shots, "failed": failed, "bob": bob,
		"drop": drop, "passwords": map[string]string{"alice": alicePw, "root": omerotest.AdminPassword}})
	script, _ := filepath.Abs(filepath.Join("testdata", "web_e2e.cjs"))
	rctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(rctx, node, script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+mods, "E2E_CONFIG="+string(cfg))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "STEP drop":
			if err := os.WriteFile(filepath.Join(dropbox, drop), []byte("pixels"), 0o644); err != nil {
				t.Fatal(err)
			}
		case line == "STEP runner":
			w.double.SetFailure(t, omerotest.Failure{ImportDelay: 3 * time.Second})
			w.agent("runner", "")
		case line == "DONE":
			done = true
		default:
			t.Log(line)
			continue
		}
		if strings.HasPrefix(line, "STEP ") {
			_, _ = io.WriteString(stdin, "GO\n")
		}
	}
	err := cmd.Wait()
	if err != nil || !done {
		t.Fatalf("browser script: %v\n%s", err, stderr.String())
	}
	// What the browser did is in the database too.
	for id, want := range map[string]string{bob: db.StageCancelled} {
		if o, err := w.store.Get(ctx, id); err != nil || o.Stage != want {
			t.Errorf("order %s: %s, want %s (%v)", id, o.Stage, want, err)
		}
	}
	hist, err := w.store.History(ctx, failed)
	if err != nil || !strings.Contains(fmt.Sprint(hist), "retry requested") {
		t.Errorf("history of the retried order: %v %v", hist, err)
	}
	entries, _ := os.ReadDir(shots)
	if len(entries) < 6 {
		t.Errorf("screenshots in %s: %d, want one per page", shots, len(entries))
	}
	t.Logf("screenshots: %s", shots)
}

func waitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s did not answer within %s", url, timeout)
}
