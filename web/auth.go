package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// Cookie names: the session, and the sign-in form's CSRF token (before there is a session).
const (
	sessionCookie = "omero_adi_session"
	loginCookie   = "omero_adi_login"
)

// session is one signed-in person, kept on the server; the cookie holds only its random id.
type session struct {
	id       string
	user     string
	admin    bool
	ownerOf  []string
	csrf     string
	sso      bool
	lastSeen time.Time
}

// scope is what the person may see: every order, or theirs and their groups'.
func (v *session) scope() db.Scope {
	if v.admin {
		return db.Scope{All: true}
	}
	return db.Scope{User: v.user, Groups: v.ownerOf}
}

func (v *session) canSee(o db.Order) bool {
	return v.admin || o.User == v.user || slices.Contains(v.ownerOf, o.Group)
}

// canAct: own orders; admins any.
func (v *session) canAct(o db.Order) bool { return v.admin || o.User == v.user }

// seesQueue: admins and group owners.
func (v *session) seesQueue() bool { return v.admin || len(v.ownerOf) > 0 }

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// remote is the address of the client: the connection's peer, or for a trusted proxy the last
// address in X-Forwarded-For that is not itself a trusted proxy.
func (s *Server) remote(r *http.Request) net.IP {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if !s.trusted(ip) {
		return ip
	}
	hops := strings.Split(r.Header.Get("X-Forwarded-For"), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := net.ParseIP(strings.TrimSpace(hops[i]))
		if h == nil {
			break
		}
		ip = h
		if !s.trusted(h) {
			break
		}
	}
	return ip
}

func (s *Server) trusted(ip net.IP) bool {
	if ip == nil {
		return false
	}
	for _, n := range s.proxies {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func (s *Server) fromProxy(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	return s.trusted(net.ParseIP(host))
}

// secure reports whether the browser reached the page over HTTPS: directly, or through a trusted
// proxy that says so (X-Forwarded-Proto).
func (s *Server) secure(r *http.Request) bool {
	return r.TLS != nil || (s.fromProxy(r) && strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https"))
}

func (s *Server) setCookie(w http.ResponseWriter, r *http.Request, name, value, path string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: path, MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: s.secure(r)})
}

// current is the signed-in person of r, or nil. With SSO, a request from a trusted proxy that
// carries the header is that person (a session is made for them once); otherwise the session
// cookie names the session, which ends after session_idle_timeout without requests.
func (s *Server) current(w http.ResponseWriter, r *http.Request) *session {
	var v *session
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.mu.Lock()
		if got := s.sessions[c.Value]; got != nil {
			if s.now().Sub(got.lastSeen) > s.cfg.SessionIdleTimeout {
				delete(s.sessions, c.Value)
			} else {
				v = got
			}
		}
		s.mu.Unlock()
	}
	if name := s.ssoUser(r); name != "" {
		if v != nil && v.user == name {
			v.touch(s)
			return v
		}
		if v = s.ssoSession(name); v != nil {
			// A client without cookies (a script) gets the person's session again, not a new
			// session and a new account lookup per request.
			v.touch(s)
			s.setCookie(w, r, sessionCookie, v.id, "/", 0)
			return v
		}
		return s.startSession(w, r, s.account(r, name, omero.Account{}), true)
	}
	if v != nil && v.sso {
		return nil // the proxy no longer vouches for this person
	}
	if v != nil {
		v.touch(s)
	}
	return v
}

// ssoSession is a live session the proxy started for name, or nil.
func (s *Server) ssoSession(name string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.sessions {
		if v.sso && v.user == name && s.now().Sub(v.lastSeen) <= s.cfg.SessionIdleTimeout {
			return v
		}
	}
	return nil
}

func (v *session) touch(s *Server) {
	s.mu.Lock()
	v.lastSeen = s.now()
	s.mu.Unlock()
}

// ssoUser is the login name a trusted proxy put in the SSO header, or "".
func (s *Server) ssoUser(r *http.Request) string {
	if s.cfg.SSOHeader == "" || !s.fromProxy(r) {
		return ""
	}
	return strings.TrimSpace(r.Header.Get(s.cfg.SSOHeader))
}

// account completes what is known of name: for SSO the server is asked (as the admin); an
// answer that fails leaves the person with their own orders only.
func (s *Server) account(r *http.Request, name string, acc omero.Account) omero.Account {
	if acc.Name == "" {
		acc.Name = name
		if s.d.Accounts != nil {
			got, err := s.d.Accounts.Account(r.Context(), name)
			if err != nil {
				s.log.WithError(errors.New(s.scrub(err.Error()))).WithField("user", name).Warn("read OMERO account of an SSO sign-in")
			} else {
				acc = got
			}
		}
	}
	return acc
}

// startSession makes a new session for acc (a fresh id: never one the browser brought).
func (s *Server) startSession(w http.ResponseWriter, r *http.Request, acc omero.Account, sso bool) *session {
	v := &session{id: randomToken(), user: acc.Name, admin: acc.Admin || s.admins[acc.Name], ownerOf: acc.OwnerOf,
		csrf: randomToken(), sso: sso, lastSeen: s.now()}
	s.mu.Lock()
	s.sessions[v.id] = v
	s.mu.Unlock()
	s.setCookie(w, r, sessionCookie, v.id, "/", 0)
	s.log.WithFields(logrus.Fields{"user": v.user, "admin": v.admin, "owner_of": v.ownerOf, "sso": sso}).Info("signed in")
	return v
}

func (s *Server) sweep() {
	now := s.now()
	s.mu.Lock()
	for id, v := range s.sessions {
		if now.Sub(v.lastSeen) > s.cfg.SessionIdleTimeout {
			delete(s.sessions, id)
		}
	}
	s.mu.Unlock()
	s.limit.sweep(now)
}

// signedIn wraps a handler that needs a person: without one, pages go to the sign-in form and
// the API answers 401. A POST must carry the session's CSRF token (form field csrf or header
// X-CSRF-Token).
func (s *Server) signedIn(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		v := s.current(w, r)
		if v == nil {
			if wantsJSON(r) || r.Method != http.MethodGet || r.URL.Path == "/events" {
				s.fail(w, r, nil, http.StatusUnauthorized, msgSignIn)
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		if r.Method == http.MethodPost && !sameToken(csrfOf(r), v.csrf) {
			s.fail(w, r, v, http.StatusForbidden, "The form is out of date (its CSRF token is missing or wrong): reload the page and try again.")
			return
		}
		h(w, r, v)
	}
}

func csrfOf(r *http.Request) string {
	if t := r.Header.Get("X-CSRF-Token"); t != "" {
		return t
	}
	return r.PostFormValue("csrf")
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// loginPage shows the sign-in form with a fresh CSRF token in a cookie of its own.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if v := s.current(w, r); v != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.renderLogin(w, r, http.StatusOK, "")
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, code int, msg string) {
	token := randomToken()
	s.setCookie(w, r, loginCookie, token, "/login", 3600)
	s.render(w, r, code, "login", nil, loginView{CSRF: token, Message: msg, Password: s.cfg.PasswordSignIn && s.d.Accounts != nil,
		SSO: s.cfg.SSOHeader != ""})
}

// login checks a username and password with OMERO (POST /login, form fields username and
// password, and the csrf the form carries). Failed tries are counted per address and per
// username; past signin_failures within signin_window the page refuses to try.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	refuse := func(code int, msg string) {
		if wantsJSON(r) {
			writeJSON(w, code, apiError{Error: msg})
			return
		}
		s.renderLogin(w, r, code, msg)
	}
	if !s.cfg.PasswordSignIn || s.d.Accounts == nil {
		refuse(http.StatusNotFound, "Sign-in with a password is off here: open the page through the facility's sign-in (single sign-on).")
		return
	}
	c, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostFormValue("csrf"), c.Value) {
		refuse(http.StatusForbidden, "The sign-in form is out of date (its CSRF token is missing or wrong): reload the page and try again.")
		return
	}
	user, password := strings.TrimSpace(r.PostFormValue("username")), r.PostFormValue("password")
	if user == "" || password == "" {
		refuse(http.StatusBadRequest, "Give your OMERO username and password.")
		return
	}
	addr := "addr:" + s.remote(r).String()
	keys := []string{addr, "user:" + strings.ToLower(user)}
	if wait := s.limit.wait(s.now(), keys...); wait > 0 {
		w.Header().Set("Retry-After", fmt.Sprint(int(math.Ceil(wait.Seconds()))))
		refuse(http.StatusTooManyRequests, fmt.Sprintf("Too many failed sign-ins from this address or for this username: try again in %s.", roundUp(wait)))
		return
	}
	acc, err := s.d.Accounts.CheckPassword(r.Context(), user, password)
	switch {
	case errors.Is(err, omero.ErrPassword), errors.Is(err, omero.ErrRequest):
		s.limit.fail(s.now(), keys...)
		s.log.WithFields(logrus.Fields{"user": user, "address": addr}).Warn("failed sign-in")
		refuse(http.StatusUnauthorized, "Wrong username or password: use your OMERO account.")
		return
	case errors.Is(err, omero.ErrConnection):
		refuse(http.StatusServiceUnavailable, "OMERO is not reachable right now, so the password cannot be checked: try again in a few minutes.")
		return
	case err != nil:
		s.log.WithError(errors.New(s.scrub(err.Error()))).WithField("user", user).Error("sign-in check failed")
		refuse(http.StatusServiceUnavailable, "The password could not be checked (the OMERO command failed): try again, or tell the facility if it lasts.")
		return
	}
	s.limit.clear("user:" + strings.ToLower(user))
	acc.Name = user
	v := s.startSession(w, r, acc, false)
	s.setCookie(w, r, loginCookie, "", "/login", -1)
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, whoView(v))
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, v *session) {
	s.mu.Lock()
	delete(s.sessions, v.id)
	s.mu.Unlock()
	s.setCookie(w, r, sessionCookie, "", "/", -1)
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, struct {
			SignedOut bool `json:"signed_out"`
		}{true})
		return
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

func roundUp(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%d seconds", int(math.Ceil(d.Seconds())))
	}
	return fmt.Sprintf("%d minutes", int(math.Ceil(d.Minutes())))
}

// limiter counts failed sign-ins per key within a window.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	fails  map[string][]time.Time
}

func newLimiter(max int, window time.Duration) *limiter {
	return &limiter{max: max, window: window, fails: map[string][]time.Time{}}
}

// wait is how long until every key is below the limit again (0: now).
func (l *limiter) wait(now time.Time, keys ...string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for _, k := range keys {
		f := l.recent(now, k)
		if len(f) >= l.max {
			wait = max(wait, f[len(f)-l.max].Add(l.window).Sub(now))
		}
	}
	return wait
}

func (l *limiter) fail(now time.Time, keys ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		l.fails[k] = append(l.recent(now, k), now)
	}
}

func (l *limiter) clear(key string) {
	l.mu.Lock()
	delete(l.fails, key)
	l.mu.Unlock()
}

// recent drops key's failures older than the window; l.mu is held.
func (l *limiter) recent(now time.Time, key string) []time.Time {
	f := l.fails[key]
	i := 0
	for i < len(f) && now.Sub(f[i]) >= l.window {
		i++
	}
	f = f[i:]
	if len(f) == 0 {
		delete(l.fails, key)
	} else {
		l.fails[key] = f
	}
	return f
}

func (l *limiter) sweep(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for k := range l.fails {
		l.recent(now, k)
	}
}
