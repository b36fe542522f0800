package notify

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/omero-adi/omero-adi/settings"
)

// PasswordEnv is the environment variable that holds the SMTP password (the user is in smtp_url).
// The password is never read from the settings file and never logged.
const PasswordEnv = "ADI_SMTP_PASSWORD"

// Config is the [notify] table. Nothing is sent unless smtp_url or webhook_url is set.
type Config struct {
	// SMTPURL is smtp://[user@]host[:port] (STARTTLS when the server offers it; port 25 by default)
	// or smtps://[user@]host[:port] (TLS from the start; port 465). "" sends no mail.
	SMTPURL string `toml:"smtp_url"`
	// CAFile is a PEM file of certificate authorities trusted for the mail server's certificate
	// besides the system's (an internal CA). "": the system's only.
	CAFile string `toml:"ca_file"`
	// From is the sender address of every mail, e.g. "OMERO imports <omero@example.org>".
	From string `toml:"from"`
	// WebclientURL is OMERO.web's webclient, e.g. "https://omero.example.org/webclient/"; the mails
	// link the imported images, plates, datasets and screens there. "": no links.
	WebclientURL string `toml:"webclient_url"`
	// AdminTo get a copy of every failure, with the order's log files.
	AdminTo []string `toml:"admin_to"`
	// DigestWindow: the orders of one person that finish within this time of the first go out as one
	// mail. 0 sends one mail per order at once.
	DigestWindow time.Duration `toml:"digest_window"`
	// WebhookURL receives a JSON POST {"text": …} per order (per digest), as Mattermost, Slack and
	// Teams incoming webhooks take it. "": no webhook.
	WebhookURL string `toml:"webhook_url"`
	// Completed and Failed switch the notifications of each outcome; Broken those of an in-place
	// order whose files the integrity check found changed (moved, deleted, truncated, replaced…).
	Completed bool `toml:"completed"`
	Failed    bool `toml:"failed"`
	Broken    bool `toml:"broken"`
	// TemplateFile, when set, holds Go templates that replace the built-in ones of the same name:
	// "subject", "text" (text/template), "html" (html/template) and "webhook" (text/template).
	TemplateFile string `toml:"template_file"`
	// PollInterval is how often the outbox is read when no notice of this process woke the sender.
	PollInterval time.Duration `toml:"poll_interval"`
	// RetryBackoff is the wait after a failed send, doubled each time up to RetryBackoffMax.
	RetryBackoff    time.Duration `toml:"retry_backoff"`
	RetryBackoffMax time.Duration `toml:"retry_backoff_max"`
	// SendTimeout bounds one delivery (SMTP dial to accepted, or the webhook POST).
	SendTimeout time.Duration `toml:"send_timeout"`
}

// DefaultConfig is the [notify] table when the file sets nothing: notifications off.
func DefaultConfig() Config {
	return Config{
		Completed:       true,
		Failed:          true,
		Broken:          true,
		PollInterval:    500 * time.Millisecond,
		RetryBackoff:    10 * time.Second,
		RetryBackoffMax: 10 * time.Minute,
		SendTimeout:     30 * time.Second,
	}
}

// Enabled reports whether anything is to be sent.
func (c Config) Enabled() bool { return c.SMTPURL != "" || c.WebhookURL != "" }

// smtpServer is smtp_url taken apart.
type smtpServer struct {
	host string
	port int
	tls  bool // smtps://
	user string
}

func parseSMTPURL(raw string) (smtpServer, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return smtpServer{}, fmt.Errorf("not a URL: %v", err)
	}
	var s smtpServer
	switch u.Scheme {
	case "smtp":
		s.port = 25
	case "smtps":
		s.port, s.tls = 465, true
	default:
		return smtpServer{}, errors.New("must be smtp:// or smtps://")
	}
	if _, set := u.User.Password(); set {
		return smtpServer{}, fmt.Errorf("holds a password: put it in env %s, never in the settings file", PasswordEnv)
	}
	if u.User != nil {
		s.user = u.User.Username()
	}
	s.host = u.Hostname()
	if s.host == "" {
		return smtpServer{}, errors.New("names no host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return smtpServer{}, fmt.Errorf("port %q is not 1-65535", p)
		}
		s.port = n
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return smtpServer{}, errors.New("must be only scheme, user, host and port")
	}
	return s, nil
}

// masked is smtp_url for messages (it never holds a password: Validate refuses one).
func masked(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable)"
	}
	u.User = nil
	return u.String()
}

// Validate checks every key; errors name the key (relative to [notify]) and the bad value.
func (c Config) Validate() error {
	var p settings.Problems
	bad := p.Add
	if c.SMTPURL != "" {
		if _, err := parseSMTPURL(c.SMTPURL); err != nil {
			bad("smtp_url", "%v, got %q", err, masked(c.SMTPURL))
		}
		if c.From == "" {
			bad("from", "must be set when smtp_url is: the sender address of the mails")
		}
	}
	if c.From != "" {
		if _, err := mail.ParseAddress(c.From); err != nil {
			bad("from", "not an e-mail address (%v), got %q", err, c.From)
		}
	}
	for i, a := range c.AdminTo {
		if _, err := mail.ParseAddress(a); err != nil {
			bad(fmt.Sprintf("admin_to[%d]", i), "not an e-mail address (%v), got %q", err, a)
		}
	}
	if len(c.AdminTo) > 0 && c.SMTPURL == "" {
		bad("admin_to", "needs smtp_url to send the admin copies")
	}
	for key, raw := range map[string]string{"webclient_url": c.WebclientURL, "webhook_url": c.WebhookURL} {
		if raw == "" {
			continue
		}
		if u, err := url.Parse(raw); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(key, "must be an http:// or https:// URL, got %q", raw)
		}
	}
	if c.DigestWindow < 0 {
		bad("digest_window", "must be 0 (one mail per order) or a positive duration such as \"10m\", got %q", c.DigestWindow)
	}
	p.Positive("poll_interval", c.PollInterval, "500ms")
	p.Positive("retry_backoff", c.RetryBackoff, "10s")
	p.Positive("retry_backoff_max", c.RetryBackoffMax, "10m")
	p.Positive("send_timeout", c.SendTimeout, "30s")
	if c.RetryBackoffMax > 0 && c.RetryBackoff > c.RetryBackoffMax {
		bad("retry_backoff_max", "must be at least retry_backoff (%s), got %q", c.RetryBackoff, c.RetryBackoffMax)
	}
	if c.CAFile != "" {
		if _, err := loadCAs(c.CAFile); err != nil {
			bad("ca_file", "%v", err)
		}
	}
	if c.TemplateFile != "" {
		if _, err := os.Stat(c.TemplateFile); err != nil {
			bad("template_file", "cannot be read: %v", err)
		}
	}
	return p.Err()
}

// loadCAs returns the system's certificate pool with the PEM certificates of file added.
func loadCAs(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("cannot be read: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}
