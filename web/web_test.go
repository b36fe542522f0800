package web

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// Passwords of the fixture's people: distinctive, so tests can look for leaks.
var passwords = map[string]string{
	"root": "r00t-Secret!", "alice": "alice-pw-Secret", "bob": "bob-pw-Secret", "carol": "carol-pw-Secret", "dave": "dave-pw-Secret",
}

// hostileFiles are file names a page must show as text.
var hostileFiles = []string{`/data/demo/alice/<img src=x onerror="alert(1)">.tif`, `/data/demo/alice/quo"te's.tif`, "/data/demo/alice/bad-\xff\xfe.tif"}

type fixture struct {
	srv    *Server
	ts     *httptest.Server
	store  *db.Store
	dbURL  string
	orders map[string]db.Order // failed (alice), pending (alice), bob, carol, hostile (alice)
	clock  *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quiet() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// setup runs the page over a fresh SQLite database (PostgreSQL with pg) and the OMERO double:
// alice and bob in Demo (bob owns it), carol in Other, dave in Other and a configured admin,
// root an OMERO admin.
func setup(t *testing.T, pg bool, edit ...func(*Config)) *fixture {
	t.Helper()
	d := omerotest.New(t)
	d.Update(t, func(st *omerotest.State) {
		st.Users = append(st.Users, omerotest.User{ID: 8, Name: "dave"})
		st.Groups[2].Members = append(st.Groups[2].Members, 8)
		st.Groups[1].Owners = []int64{omerotest.BobID}
		for name, pw := range passwords {
			st.UserByName(name).Password = pw
		}
	})
	oc := omero.DefaultConfig()
	root := t.TempDir()
	oc.CLI, oc.Host, oc.Port, oc.AdminPassword, oc.Env = d.Bin, omerotest.Host, d.Port, passwords["root"], d.Env()
	oc.LogDir, oc.SessionRoot, oc.CallTimeout = filepath.Join(root, "log"), filepath.Join(root, "sessions"), 20*time.Second
	client, err := omero.New(oc, quiet())
	if err != nil {
		t.Fatal(err)
	}
	dbURL := pgtest.SQLiteURL(t)
	if pg {
		dbURL = pgtest.URL(t)
	}
	ctx := context.Background()
	store, err := db.Open(ctx, dbURL, db.Options{Logger: quiet(), Worker: "agent-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Enabled, cfg.Admins, cfg.WebclientURL, cfg.LiveInterval = true, []string{"dave"}, "https://omero.example.org/webclient/", 100*time.Millisecond
	cfg.TrustedProxies = []string{"10.9.9.9"}
	for _, e := range edit {
		e(&cfg)
	}
	srv, err := New(cfg, Deps{Store: store, Accounts: client, LogFiles: client.LogFiles, ErrsTail: client.ErrsTail,
		Secrets: []string{passwords["root"], dbURL}, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, store: store, dbURL: dbURL, orders: map[string]db.Order{}, clock: &clock{t: time.Now()}}
	srv.now = f.clock.now
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	f.ts = httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		cancel()
		<-done
		f.ts.Close()
	})
	mk := func(key, user, group string, files ...string) {
		n := db.NewOrder{Draft: order.Draft{Group: group, User: user, Target: order.Target{Kind: order.Dataset, ID: 151}, Files: files}}
		o, _, err := store.CreateOrder(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		f.orders[key] = o
	}
	mk("failed", "alice", "Demo", "/data/demo/alice/a.tif")
	claimed, err := store.Claim(ctx, "agent-1", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v %v", claimed, err)
	}
	if err := store.Finish(ctx, claimed[0].Lease(), db.StageFailed, "OMERO import failed: <b>bold</b> & more; retry with: omero-adi orders retry"); err != nil {
		t.Fatal(err)
	}
	mk("pending", "alice", "Demo", "/data/demo/alice/b.tif", "/data/demo/alice/c.tif")
	mk("bob", "bob", "Demo", "/data/demo/bob/b.tif")
	mk("carol", "carol", "Other", "/data/other/carol/c.tif")
	mk("hostile", "alice", "Demo", hostileFiles[:2]...)
	if !pg {
		// Orders the agent makes hold UTF-8 only, but a row written by hand may not (SQLite
		// keeps any bytes): the third name is not UTF-8.
		files, _ := json.Marshal(hostileFiles[:2])
		raw := strings.TrimSuffix(string(files), "]") + `,"` + hostileFiles[2] + `"]`
		if _, err := store.DB().ExecContext(ctx, `UPDATE imports SET files = $1, description = $2 WHERE uuid = $3`,
			raw, "found "+hostileFiles[2], f.orders["hostile"].UUID); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	t    *testing.T
	f    *fixture
	c    *http.Client
	csrf string
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, f: f, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) do(method, path string, form url.Values, hdr ...string) (*http.Response, string) {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.f.ts.URL+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// signIn signs in with the form, as a browser does; the session's CSRF token is kept.
func (b *browser) signIn(user, password string) *http.Response {
	b.t.Helper()
	_, page := b.do("GET", "/login", nil)
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("sign-in page without a csrf field:\n%s", page)
	}
	resp, _ := b.do("POST", "/login", url.Values{"csrf": {m[1]}, "username": {user}, "password": {password}})
	if resp.StatusCode == http.StatusSeeOther {
		_, home := b.do("GET", "/", nil)
		if m := csrfRE.FindStringSubmatch(home); m != nil {
			b.csrf = m[1]
		}
	}
	return resp
}

func (f *fixture) as(t *testing.T, user string) *browser {
	t.Helper()
	b := f.browser(t)
	if user == "" {
		return b
	}
	if resp := b.signIn(user, passwords[user]); resp.StatusCode != http.StatusSeeOther || b.csrf == "" {
		t.Fatalf("sign in as %s: %d", user, resp.StatusCode)
	}
	return b
}

// apiPost posts to the API as the page's script does.
func (b *browser) apiPost(path string) (*http.Response, string) {
	return b.do("POST", path, url.Values{}, "X-CSRF-Token", b.csrf, "Accept", "application/json")
}

func TestPermissions(t *testing.T) {
	f := setup(t, false)
	o := f.orders
	const missing = "00000000-0000-4000-8000-000000000000"
	viewer := f.as(t, "alice")
	notFound := func(path string) string {
		_, body := viewer.do("GET", path, nil)
		return body
	}
	// Each row: who, method, path (UUID replaced), the status, and the orders an order listing
	// must hold (by fixture key; "-" for none).
	cases := []struct {
		who, method, path, order string
		code                     int
		list                     string
	}{
		{"", "GET", "/", "", http.StatusSeeOther, ""},
		{"", "GET", "/api/orders", "", http.StatusUnauthorized, ""},
		{"", "GET", "/orders/UUID", "failed", http.StatusSeeOther, ""},
		{"", "GET", "/api/orders/UUID", "failed", http.StatusUnauthorized, ""},
		{"", "POST", "/api/orders/UUID/retry", "failed", http.StatusUnauthorized, ""},
		{"", "POST", "/api/orders/UUID/cancel", "pending", http.StatusUnauthorized, ""},
		{"", "GET", "/queue", "", http.StatusSeeOther, ""},
		{"", "GET", "/api/queue", "", http.StatusUnauthorized, ""},
		{"", "GET", "/events", "", http.StatusUnauthorized, ""},

		{"alice", "GET", "/api/orders", "", http.StatusOK, "hostile pending failed"},
		{"alice", "GET", "/api/orders?view=all", "", http.StatusOK, "hostile pending failed"},
		{"alice", "GET", "/api/orders?stage=failed", "", http.StatusOK, "failed"},
		{"alice", "GET", "/api/orders?q=C.TIF", "", http.StatusOK, "pending"},
		{"alice", "GET", "/api/orders?stage=bogus", "", http.StatusBadRequest, ""},
		{"alice", "GET", "/orders/UUID", "failed", http.StatusOK, ""},
		{"alice", "GET", "/api/orders/UUID", "bob", http.StatusNotFound, ""},
		{"alice", "GET", "/orders/UUID", "carol", http.StatusNotFound, ""},
		{"alice", "POST", "/api/orders/UUID/cancel", "bob", http.StatusNotFound, ""},
		{"alice", "POST", "/api/orders/UUID/retry", "carol", http.StatusNotFound, ""},
		{"alice", "POST", "/api/orders/UUID/retry", "pending", http.StatusConflict, ""},
		{"alice", "GET", "/queue", "", http.StatusForbidden, ""},
		{"alice", "GET", "/api/queue", "", http.StatusForbidden, ""},

		{"bob", "GET", "/api/orders", "", http.StatusOK, "bob"},
		{"bob", "GET", "/api/orders?view=all", "", http.StatusOK, "hostile bob pending failed"},
		{"bob", "GET", "/api/orders/UUID", "failed", http.StatusOK, ""},
		{"bob", "GET", "/api/orders/UUID", "carol", http.StatusNotFound, ""},
		{"bob", "POST", "/api/orders/UUID/retry", "failed", http.StatusForbidden, ""},
		{"bob", "POST", "/api/orders/UUID/cancel", "pending", http.StatusForbidden, ""},
		{"bob", "GET", "/api/queue", "", http.StatusOK, ""},
		{"bob", "GET", "/queue", "", http.StatusOK, ""},

		{"carol", "GET", "/api/orders?view=all", "", http.StatusOK, "carol"},
		{"carol", "GET", "/api/orders/UUID", "hostile", http.StatusNotFound, ""},

		{"root", "GET", "/api/orders?view=all", "", http.StatusOK, "hostile carol bob pending failed"},
		{"root", "GET", "/api/orders?view=all&group=Other", "", http.StatusOK, "carol"},
		{"root", "GET", "/orders/UUID", "carol", http.StatusOK, ""},
		{"root", "GET", "/queue", "", http.StatusOK, ""},
		{"dave", "GET", "/api/orders?view=all&limit=2", "", http.StatusOK, "hostile carol"},
		{"dave", "GET", "/api/queue", "", http.StatusOK, ""},

		// Acting: own orders, and admins any (the state changes are checked below).
		{"alice", "POST", "/api/orders/UUID/retry", "failed", http.StatusOK, ""},
		{"dave", "POST", "/api/orders/UUID/cancel", "bob", http.StatusOK, ""},
		{"root", "POST", "/api/orders/UUID/cancel", "bob", http.StatusConflict, ""},
		{"alice", "POST", "/api/orders/UUID/cancel", "pending", http.StatusOK, ""},
	}
	browsers := map[string]*browser{}
	for _, c := range cases {
		name := c.who + " " + c.method + " " + strings.ReplaceAll(c.path, "UUID", c.order)
		t.Run(name, func(t *testing.T) {
			b := browsers[c.who]
			if b == nil {
				b = f.as(t, c.who)
				browsers[c.who] = b
			}
			path := c.path
			if c.order != "" {
				path = strings.ReplaceAll(path, "UUID", o[c.order].UUID)
			}
			var resp *http.Response
			var body string
			if c.method == "POST" {
				resp, body = b.apiPost(path)
			} else {
				resp, body = b.do("GET", path, nil)
			}
			if resp.StatusCode != c.code {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.code, body)
			}
			if resp.StatusCode >= 400 && strings.HasPrefix(path, "/api/") {
				var e apiError
				if err := json.Unmarshal([]byte(body), &e); err != nil || len(e.Error) < 20 {
					t.Errorf("error answer is not JSON with a message: %q", body)
				}
			}
			if c.code == http.StatusNotFound && c.order != "" {
				if strings.Contains(body, o[c.order].UUID) || strings.Contains(body, o[c.order].User) {
					t.Errorf("the 404 names the order or its owner: %s", body)
				}
			}
			if c.list == "" {
				return
			}
			var l listing
			if err := json.Unmarshal([]byte(body), &l); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range l.Orders {
				for k, ord := range o {
					if ord.UUID == s.UUID {
						got = append(got, k)
					}
				}
			}
			if strings.Join(got, " ") != c.list {
				t.Errorf("orders %v, want %s", got, c.list)
			}
		})
	}
	for key, want := range map[string]string{"failed": db.StagePending, "bob": db.StageCancelled, "pending": db.StageCancelled} {
		if got, err := f.store.Get(context.Background(), o[key].UUID); err != nil || got.Stage != want {
			t.Errorf("order %s: stage %q, want %q (%v)", key, got.Stage, want, err)
		}
	}
	// An order someone may not see answers like one that does not exist.
	other := notFound("/orders/" + o["carol"].UUID)
	none := notFound("/orders/" + missing)
	if other != none {
		t.Errorf("another person's order and a missing one answer differently:\n%s\n---\n%s", other, none)
	}
}

func TestPages(t *testing.T) {
	f := setup(t, false)
	root := f.as(t, "root")
	_, queue := root.do("GET", "/queue", nil)
	for _, want := range []string{"Per group", "Demo", "Per agent", "agent-1", "Watch roots", "Health"} {
		if !strings.Contains(queue, want) {
			t.Errorf("queue page lacks %q", want)
		}
	}
	_, page := root.do("GET", "/orders/"+f.orders["failed"].UUID, nil)
	for _, want := range []string{"Import Failed", "Retry", "&lt;b&gt;bold&lt;/b&gt; &amp; more", "CLI logs (admins)", "cli." + f.orders["failed"].UUID + ".errs",
		`href="https://omero.example.org/webclient/?show=dataset-151"`, "History", "agent-1"} {
		if !strings.Contains(page, want) {
			t.Errorf("order page lacks %q", want)
		}
	}
	alice := f.as(t, "alice")
	_, own := alice.do("GET", "/orders/"+f.orders["failed"].UUID, nil)
	if strings.Contains(own, "CLI logs") {
		t.Error("a person who is no admin sees the CLI logs")
	}
	_, list := alice.do("GET", "/?stage=pending", nil)
	if !strings.Contains(list, "b.tif") || strings.Contains(list, "a.tif") {
		t.Errorf("My orders with stage pending:\n%s", list)
	}
	// Without JavaScript the retry form posts and comes back to the order.
	resp, _ := alice.do("POST", "/api/orders/"+f.orders["failed"].UUID+"/retry", url.Values{"csrf": {alice.csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/orders/"+f.orders["failed"].UUID {
		t.Errorf("form retry: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page = alice.do("POST", "/api/orders/"+f.orders["failed"].UUID+"/retry", url.Values{"csrf": {alice.csrf}})
	if resp.StatusCode != http.StatusConflict || !strings.Contains(page, "only failed or cancelled orders can be retried") || !strings.Contains(page, "<html") {
		t.Errorf("second form retry: %d %s", resp.StatusCode, page)
	}
	resp, page = alice.do("GET", "/nowhere", nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(page, "My orders") {
		t.Errorf("unknown page: %d", resp.StatusCode)
	}
	resp, css := alice.do("GET", "/static/style.css", nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(css, "body") {
		t.Errorf("style sheet: %d", resp.StatusCode)
	}
}

func TestHostileNames(t *testing.T) {
	f := setup(t, false)
	b := f.as(t, "alice")
	id := f.orders["hostile"].UUID
	for _, path := range []string{"/", "/orders/" + id} {
		_, page := b.do("GET", path, nil)
		if strings.Contains(page, "<img src=x") || strings.Contains(page, `quo"te`) {
			t.Errorf("%s shows a file name as markup:\n%s", path, page)
		}
		if !strings.Contains(page, "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;.tif") || !strings.Contains(page, "quo&#34;te&#39;s.tif") {
			t.Errorf("%s does not show the names as text", path)
		}
		if !strings.Contains(page, "bad-\uFFFD") || strings.Contains(page, "\xff") {
			t.Errorf("%s does not show the non-UTF-8 name with replacement characters", path)
		}
	}
	_, body := b.do("GET", "/api/orders/"+id, nil)
	var v orderView
	if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Order.Files) != 3 || v.Order.Files[0] != hostileFiles[0] ||
		v.Order.Files[2] != "/data/demo/alice/bad-\uFFFD\uFFFD.tif" {
		t.Errorf("API files = %q, %v", v.Order.Files, err)
	}
}

func TestSessionCookie(t *testing.T) {
	f := setup(t, false)
	b := f.browser(t)
	resp := b.signIn("alice", passwords["alice"])
	var c *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == sessionCookie && k.Value != "" {
			c = k
		}
	}
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP", c)
	}
	// Behind a TLS proxy: Secure when the proxy is trusted, not when anyone says so.
	for _, tc := range []struct {
		name, remote string
		secure       bool
	}{{"trusted proxy", "10.9.9.9:4000", true}, {"anyone", "10.1.1.1:4000", false}} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/login", nil)
			req.RemoteAddr = tc.remote
			req.Header.Set("X-Forwarded-Proto", "https")
			f.srv.Handler().ServeHTTP(rec, req)
			cs := rec.Result().Cookies()
			if len(cs) != 1 || cs[0].Secure != tc.secure || !cs[0].HttpOnly || cs[0].SameSite != http.SameSiteStrictMode {
				t.Errorf("cookies %+v, want Secure=%v", cs, tc.secure)
			}
		})
	}
	// An idle session ends; signing out ends it at once.
	if resp, _ := b.do("GET", "/api/orders", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed in: %d", resp.StatusCode)
	}
	f.clock.add(f.srv.cfg.SessionIdleTimeout + time.Second)
	if resp, _ := b.do("GET", "/api/orders", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after the idle timeout: %d, want 401", resp.StatusCode)
	}
	b2 := f.as(t, "alice")
	if resp, _ := b2.do("POST", "/logout", url.Values{"csrf": {b2.csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %d", resp.StatusCode)
	}
	if resp, _ := b2.do("GET", "/api/orders", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("after signing out: %d, want 401", resp.StatusCode)
	}
}

func TestCSRF(t *testing.T) {
	f := setup(t, false)
	b := f.as(t, "alice")
	id := f.orders["failed"].UUID
	for _, tc := range []struct {
		name string
		form url.Values
		hdr  []string
	}{
		{"no token", url.Values{}, nil},
		{"a wrong token", url.Values{"csrf": {"x" + b.csrf}}, nil},
		{"another session's token", url.Values{"csrf": {f.as(t, "alice").csrf}}, nil},
		{"a wrong header", url.Values{}, []string{"X-CSRF-Token", "nope", "Accept", "application/json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := b.do("POST", "/api/orders/"+id+"/retry", tc.form, tc.hdr...)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
				t.Errorf("retry: %d %s", resp.StatusCode, body)
			}
			if resp, _ := b.do("POST", "/logout", tc.form, tc.hdr...); resp.StatusCode != http.StatusForbidden {
				t.Errorf("logout: %d", resp.StatusCode)
			}
		})
	}
	if o, _ := f.store.Get(context.Background(), id); o.Stage != db.StageFailed {
		t.Errorf("a refused retry changed the order: %s", o.Stage)
	}
	anon := f.browser(t)
	resp, _ := anon.do("POST", "/login", url.Values{"username": {"alice"}, "password": {passwords["alice"]}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign-in without the form's token: %d, want 403", resp.StatusCode)
	}
}

func TestRateLimit(t *testing.T) {
	f := setup(t, false, func(c *Config) { c.SignInFailures = 2 })
	b := f.browser(t)
	for i := 0; i < 2; i++ {
		if resp := b.signIn("alice", "wrong"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d", i, resp.StatusCode)
		}
	}
	resp := b.signIn("alice", passwords["alice"])
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("the right password after the limit: %d (Retry-After %q), want 429", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := b.signIn("carol", passwords["carol"]); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("another user from the same address: %d, want 429", resp.StatusCode)
	}
	// Per user: alice stays locked from another address (through the trusted proxy).
	login := func(remote, user, pw string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/login", nil)
		req.RemoteAddr = "10.9.9.9:5000"
		req.Header.Set("X-Forwarded-For", remote)
		f.srv.Handler().ServeHTTP(rec, req)
		token := csrfRE.FindStringSubmatch(rec.Body.String())[1]
		form := url.Values{"csrf": {token}, "username": {user}, "password": {pw}}
		req = httptest.NewRequest("POST", "/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr = "10.9.9.9:5000"
		req.Header.Set("X-Forwarded-For", remote)
		for _, c := range rec.Result().Cookies() {
			req.AddCookie(c)
		}
		rec = httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		return rec.Code
	}
	if code := login("192.0.2.7", "alice", passwords["alice"]); code != http.StatusTooManyRequests {
		t.Errorf("alice from another address: %d, want 429", code)
	}
	if code := login("192.0.2.7", "carol", passwords["carol"]); code != http.StatusSeeOther {
		t.Errorf("carol from another address: %d, want 303", code)
	}
	f.clock.add(f.srv.cfg.SignInWindow)
	if resp := b.signIn("alice", passwords["alice"]); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after the window: %d, want 303", resp.StatusCode)
	}
}

func TestNoSecrets(t *testing.T) {
	f := setup(t, true)
	secrets := []string{f.dbURL}
	for _, pw := range passwords {
		secrets = append(secrets, pw)
	}
	f.srv.d.Errors.Fire(&logrus.Entry{Message: "connect " + f.dbURL + " failed", Data: logrus.Fields{"component": "db"}, Level: logrus.ErrorLevel})
	var answers []string
	for _, who := range []string{"root", "dave", "alice", "bob"} {
		b := f.as(t, who)
		for _, path := range []string{"/", "/?view=all", "/queue", "/api/queue", "/api/orders?view=all", "/login"} {
			_, body := b.do("GET", path, nil)
			answers = append(answers, body)
		}
		for _, o := range f.orders {
			for _, p := range []string{"/orders/", "/api/orders/"} {
				_, body := b.do("GET", p+o.UUID, nil)
				answers = append(answers, body)
			}
		}
	}
	bad := f.browser(t)
	resp := bad.signIn("alice", passwords["bob"])
	_, body := bad.do("GET", "/login", nil)
	answers = append(answers, body, resp.Status)
	for _, a := range answers {
		for _, s := range secrets {
			if strings.Contains(a, s) {
				t.Fatalf("an answer contains the secret %q:\n%s", s, a)
			}
		}
	}
}

func TestSSO(t *testing.T) {
	f := setup(t, false, func(c *Config) { c.SSOHeader = "X-Remote-User"; c.PasswordSignIn = false })
	get := func(remote, user string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/api/orders?view=all", nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Remote-User", user)
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		return rec
	}
	rec := get("10.9.9.9:1234", "bob")
	var l listing
	if err := json.Unmarshal(rec.Body.Bytes(), &l); rec.Code != http.StatusOK || err != nil || l.Who.User != "bob" ||
		len(l.Who.OwnerOf) != 1 || len(l.Orders) != 4 {
		t.Errorf("bob through the trusted proxy: %d %+v %v", rec.Code, l.Who, err)
	}
	again := get("10.9.9.9:1234", "bob")
	f.srv.mu.Lock()
	n := len(f.srv.sessions)
	f.srv.mu.Unlock()
	if again.Code != http.StatusOK || n != 1 {
		t.Errorf("a second request without cookies: %d, %d sessions; want the same session", again.Code, n)
	}
	if rec := get("10.1.1.1:1234", "bob"); rec.Code != http.StatusUnauthorized {
		t.Errorf("the header from an untrusted address: %d, want 401", rec.Code)
	}
	b := f.browser(t)
	if resp, _ := b.do("POST", "/login", url.Values{"username": {"alice"}, "password": {passwords["alice"]}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("password sign-in while it is off: %d, want 404", resp.StatusCode)
	}
}

func TestEvents(t *testing.T) {
	f := setup(t, false)
	b := f.as(t, "alice")
	req, _ := http.NewRequest("GET", f.ts.URL+"/events", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := b.c.Do(req.WithContext(ctx))
	if err != nil || resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	for f.srv.live.count() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := f.store.Cancel(context.Background(), f.orders["pending"].UUID); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended before a change")
			}
			if l == "event: change" {
				return
			}
		case <-ctx.Done():
			t.Fatal("no change event within 20 s of a cancel")
		}
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"short idle", func(c *Config) { c.SessionIdleTimeout = time.Second }, `session_idle_timeout: must be at least "1m", got "1s"`},
		{"sso without proxies", func(c *Config) { c.SSOHeader = "X-Remote-User" }, "sso_header: needs trusted_proxies"},
		{"bad header", func(c *Config) { c.SSOHeader = "X Remote"; c.TrustedProxies = []string{"::1"} }, "sso_header: must be a header name"},
		{"bad proxy", func(c *Config) { c.TrustedProxies = []string{"proxy.local"} }, `trusted_proxies: must be IP addresses or CIDR ranges such as "127.0.0.1" or "10.0.0.0/8", got "proxy.local"`},
		{"nobody can sign in", func(c *Config) { c.Enabled, c.PasswordSignIn = true, false }, "password_signin: is false and sso_header is empty"},
		{"failures", func(c *Config) { c.SignInFailures = 0 }, "signin_failures: must be at least 1, got 0"},
		{"admins", func(c *Config) { c.Admins = []string{" root"} }, `admins: entry 0 must be a login name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("Validate: %v, want %q", err, c.want)
			}
		})
	}
}
