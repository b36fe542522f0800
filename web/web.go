// Package web is the status page: people sign in with their OMERO account (or through a reverse
// proxy that authenticates) and see, follow, retry and cancel their orders; facility admins and
// group owners see the queue. It serves server-rendered HTML with embedded assets (readable
// without JavaScript; a small script refreshes open pages over server-sent events) and the JSON
// API under /api/ that the page uses, on the agent's listener. README.md ("Status page")
// describes the sign-in modes and a reverse proxy setup.
//
// Who sees what: a person sees the orders whose user_name is theirs, a group owner also their
// groups' orders, an admin (web.admins, or an OMERO admin) every order. A person may retry and
// cancel their own orders, an admin any, with the rules of `orders retry` and `orders cancel`
// (db.Store Retry and Cancel). An order a person may not see answers exactly like an order that
// does not exist.
package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/watcher"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Accounts checks passwords and reads accounts on the OMERO server (runner/omero's Client).
type Accounts interface {
	CheckPassword(ctx context.Context, user, password string) (omero.Account, error)
	Account(ctx context.Context, user string) (omero.Account, error)
}

// Deps are what the page reads besides its settings. Store is required; the others may be nil
// (then the page has no password sign-in, no CLI logs, no watch roots).
type Deps struct {
	Store    *db.Store
	Accounts Accounts
	// LogFiles and ErrsTail give the CLI log paths and the end of the errs file of an order
	// (runner/omero's Client), shown to admins.
	LogFiles func(orderUUID string) (logs, errs string)
	ErrsTail func(orderUUID string) string
	Health   func() watcher.Health // the watcher's roots
	Errors   *ErrorLog             // the last error of each part
	// Secrets are strings no answer may contain (the admin password, the database URL): they
	// are replaced by *** wherever the page shows text it did not write (errors, logs).
	Secrets []string
	Log     *logrus.Entry
}

// Server is the status page. New starts nothing; Run polls for changes and ends stale sessions.
type Server struct {
	cfg     Config
	d       Deps
	log     *logrus.Entry
	proxies []*net.IPNet
	admins  map[string]bool
	tmpl    map[string]*template.Template
	mux     *http.ServeMux
	limit   *limiter
	live    *hub

	mu       sync.Mutex
	sessions map[string]*session

	closeOnce sync.Once
	now       func() time.Time
}

// New checks cfg and builds the page; it runs nothing.
func New(cfg Config, d Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Store == nil {
		return nil, errors.New("web: a store is required")
	}
	if d.Log == nil {
		d.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if d.Errors == nil {
		d.Errors = NewErrorLog()
	}
	proxies, _ := parseNets(cfg.TrustedProxies)
	s := &Server{
		cfg: cfg, d: d, log: d.Log.WithField("component", "web"), proxies: proxies,
		admins: map[string]bool{}, sessions: map[string]*session{}, now: time.Now,
		limit: newLimiter(cfg.SignInFailures, cfg.SignInWindow), live: newHub(),
	}
	for _, a := range cfg.Admins {
		s.admins[a] = true
	}
	var err error
	if s.tmpl, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", cacheable(http.FileServerFS(static))))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.signedIn(s.logout))
	m.HandleFunc("GET /{$}", s.signedIn(s.ordersPage))
	m.HandleFunc("GET /orders/{uuid}", s.signedIn(s.orderPage))
	m.HandleFunc("GET /queue", s.signedIn(s.queuePage))
	m.HandleFunc("GET /events", s.signedIn(s.events))
	m.HandleFunc("GET /api/orders", s.signedIn(s.apiOrders))
	m.HandleFunc("GET /api/orders/{uuid}", s.signedIn(s.apiOrder))
	m.HandleFunc("POST /api/orders/{uuid}/retry", s.signedIn(s.act("retry")))
	m.HandleFunc("POST /api/orders/{uuid}/cancel", s.signedIn(s.act("cancel")))
	m.HandleFunc("GET /api/queue", s.signedIn(s.apiQueue))
	m.HandleFunc("/", s.notFound)
	s.mux = m
}

// Handler serves the page: mount it at / of the agent's listener.
func (s *Server) Handler() http.Handler { return securityHeaders(s.mux) }

// Run polls the database for changes (pushed to open pages) every live_interval and ends idle
// sessions, until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.LiveInterval)
	defer t.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	last := int64(-1)
	for {
		if v, err := s.d.Store.Version(ctx); err == nil && v != last {
			if last >= 0 {
				s.live.publish(v)
			}
			last = v
		}
		select {
		case <-ctx.Done():
			s.Close()
			return nil
		case <-t.C:
		case <-sweep.C:
			s.sweep()
		}
	}
}

// Close ends the open event streams; it is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(s.live.close)
}

// securityHeaders keeps the pages from being framed or sniffed and allows only their own scripts
// and styles.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		h.ServeHTTP(w, r)
	})
}

func cacheable(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		h.ServeHTTP(w, r)
	})
}

// apiError is the body of every JSON error: a message a person can act on.
type apiError struct {
	Error string `json:"error"`
}

// Messages of the answers that must not tell an order apart from a missing one.
const (
	msgNotFound = "No such order among the orders you may see: check the link, or sign in as the person who made the order."
	msgSignIn   = "Sign in first: POST /login with the form fields username and password (your OMERO account)."
)

// wantsJSON reports whether r expects JSON rather than a page: the API (but for a form the page
// posted without JavaScript), or a script that asks for JSON.
func wantsJSON(r *http.Request) bool {
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		return true
	}
	return strings.HasPrefix(r.URL.Path, "/api/") && !formPost(r)
}

// formPost reports whether r is a form a browser posted without JavaScript (which sends
// Accept: application/json): its answer is a page or a redirect.
func formPost(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") &&
		!strings.Contains(r.Header.Get("Accept"), "application/json")
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// fail answers an error: JSON for the API, else the error page (signed-in viewer v may be nil).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, v *session, code int, msg string) {
	msg = s.scrub(msg)
	if wantsJSON(r) {
		writeJSON(w, code, apiError{Error: msg})
		return
	}
	s.render(w, r, code, "error", v, errorView{Code: code, Title: http.StatusText(code), Message: msg})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.fail(w, r, s.current(w, r), http.StatusNotFound, "There is no page at this address: start from My orders.")
}

// minSecret is the shortest secret scrub hides: a shorter one would mangle ordinary words (a
// test server's admin password "omero" would turn "omero-adi" into "***-adi").
const minSecret = 8

// scrub hides the secrets in text the page did not write and makes it valid UTF-8.
func (s *Server) scrub(text string) string {
	for _, sec := range s.d.Secrets {
		if len(sec) >= minSecret {
			text = strings.ReplaceAll(text, sec, "***")
		}
	}
	return strings.ToValidUTF8(text, "\uFFFD")
}
