package web

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/settings"
)

// Config is the [web] table: the status page on the agent's listener.
type Config struct {
	Enabled bool `toml:"enabled"` // serve the status page at / (off by default)
	// PasswordSignIn lets people sign in with their OMERO username and password (POST /login).
	PasswordSignIn bool `toml:"password_signin"`
	// SessionIdleTimeout ends a session that made no request for this long.
	SessionIdleTimeout time.Duration `toml:"session_idle_timeout"`
	// Admins are logins that see and act on every order, besides OMERO's own admins.
	Admins []string `toml:"admins"`
	// SSOHeader names the header a reverse proxy that authenticates sets to the login name
	// (e.g. "X-Remote-User"); "" turns SSO off. Only requests from TrustedProxies are believed.
	SSOHeader string `toml:"sso_header"`
	// TrustedProxies are the addresses or CIDR ranges of the reverse proxies whose SSOHeader,
	// X-Forwarded-For and X-Forwarded-Proto are believed.
	TrustedProxies []string `toml:"trusted_proxies"`
	// SignInFailures failed sign-ins from one address, or for one username, within SignInWindow
	// make further tries wait until the window has passed.
	SignInFailures int           `toml:"signin_failures"`
	SignInWindow   time.Duration `toml:"signin_window"`
	// LiveInterval is how often the page looks for changes to push to open pages.
	LiveInterval time.Duration `toml:"live_interval"`
	// WebclientURL is OMERO.web's webclient (https://omero.example.org/webclient/): created images
	// and plates link there; "" shows ids without links. The agent sets it from
	// [notify] webclient_url, which owns and checks it: pages and mails link to the same place.
	WebclientURL string `toml:"-"`
}

// DefaultConfig returns the [web] defaults: off; password sign-in; sessions idle for an hour end;
// five failed sign-ins in 15 minutes; changes looked for every two seconds.
func DefaultConfig() Config {
	return Config{
		PasswordSignIn:     true,
		SessionIdleTimeout: time.Hour,
		Admins:             []string{},
		TrustedProxies:     []string{},
		SignInFailures:     5,
		SignInWindow:       15 * time.Minute,
		LiveInterval:       2 * time.Second,
	}
}

// Validate checks the [web] keys (names relative to the table).
func (c Config) Validate() error {
	var p settings.Problems
	if c.SessionIdleTimeout < time.Minute {
		p.Add("session_idle_timeout", "must be at least \"1m\", got %q", c.SessionIdleTimeout)
	}
	if c.SignInFailures < 1 {
		p.Add("signin_failures", "must be at least 1, got %d", c.SignInFailures)
	}
	p.Positive("signin_window", c.SignInWindow, "15m")
	if c.LiveInterval < 100*time.Millisecond {
		p.Add("live_interval", "must be at least \"100ms\", got %q", c.LiveInterval)
	}
	for i, a := range c.Admins {
		if strings.TrimSpace(a) == "" || a != strings.TrimSpace(a) {
			p.Add("admins", "entry %d must be a login name without spaces around it, got %q", i, a)
		}
	}
	if c.SSOHeader != "" {
		if http.CanonicalHeaderKey(c.SSOHeader) == "" || strings.ContainsAny(c.SSOHeader, " :\t") {
			p.Add("sso_header", "must be a header name such as \"X-Remote-User\", got %q", c.SSOHeader)
		}
		if len(c.TrustedProxies) == 0 {
			p.Add("sso_header", "needs trusted_proxies: the header is believed only from those addresses")
		}
	}
	if _, err := parseNets(c.TrustedProxies); err != nil {
		p.Add("trusted_proxies", "%v", err)
	}
	if c.Enabled && !c.PasswordSignIn && c.SSOHeader == "" {
		p.Add("password_signin", "is false and sso_header is empty: nobody could sign in")
	}
	return p.Err()
}

// parseNets reads addresses ("10.0.0.5", "::1") and CIDR ranges ("10.0.0.0/8").
func parseNets(list []string) ([]*net.IPNet, error) {
	var out []*net.IPNet
	for _, s := range list {
		if !strings.Contains(s, "/") {
			ip := net.ParseIP(s)
			if ip == nil {
				return nil, &badAddr{s}
			}
			bits := 128
			if ip.To4() != nil {
				ip, bits = ip.To4(), 32
			}
			out = append(out, &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)})
			continue
		}
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return nil, &badAddr{s}
		}
		out = append(out, n)
	}
	return out, nil
}

type badAddr struct{ s string }

func (e *badAddr) Error() string {
	return "must be IP addresses or CIDR ranges such as \"127.0.0.1\" or \"10.0.0.0/8\", got " + `"` + e.s + `"`
}
