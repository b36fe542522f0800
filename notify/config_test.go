package notify

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

func TestValidate(t *testing.T) {
	ok := func(c *Config) { c.SMTPURL, c.From = "smtp://mail.example.org", "omero@example.org" }
	cases := []struct {
		name string
		edit func(*Config)
		want string // "" valid
	}{
		{"defaults are off and valid", func(*Config) {}, ""},
		{"smtp", ok, ""},
		{"smtps with user and port", func(c *Config) { ok(c); c.SMTPURL = "smtps://adi@mail.example.org:2465" }, ""},
		{"webhook only", func(c *Config) { c.WebhookURL = "https://chat.example.org/hooks/x" }, ""},
		{"other scheme", func(c *Config) { ok(c); c.SMTPURL = "http://x" }, `smtp_url: must be smtp:// or smtps://, got "http://x"`},
		{"password in the URL", func(c *Config) { ok(c); c.SMTPURL = "smtp://adi:hunter2@mail.example.org" },
			"smtp_url: holds a password: put it in env ADI_SMTP_PASSWORD"},
		{"bad port", func(c *Config) { ok(c); c.SMTPURL = "smtp://mail.example.org:99999" }, "smtp_url: port \"99999\""},
		{"no from", func(c *Config) { c.SMTPURL = "smtp://mail.example.org" }, "from: must be set when smtp_url is"},
		{"bad from", func(c *Config) { ok(c); c.From = "not an address" }, "from: not an e-mail address"},
		{"bad admin", func(c *Config) { ok(c); c.AdminTo = []string{"ops@example.org", "nope"} }, "admin_to[1]: not an e-mail address"},
		{"admin without smtp", func(c *Config) { c.WebhookURL = "https://x/h"; c.AdminTo = []string{"ops@example.org"} }, "admin_to: needs smtp_url"},
		{"bad webclient", func(c *Config) { ok(c); c.WebclientURL = "omero.example.org" }, "webclient_url: must be an http:// or https:// URL"},
		{"negative window", func(c *Config) { ok(c); c.DigestWindow = -time.Second }, "digest_window: must be 0"},
		{"zero send timeout", func(c *Config) { ok(c); c.SendTimeout = 0 }, "send_timeout: must be a positive duration"},
		{"backoff above its max", func(c *Config) { ok(c); c.RetryBackoff = time.Hour }, "retry_backoff_max: must be at least retry_backoff"},
		{"ca file without a certificate", func(c *Config) { ok(c); c.CAFile = "/dev/null" }, "ca_file: /dev/null holds no PEM certificate"},
		{"missing template file", func(c *Config) { ok(c); c.TemplateFile = "/nonexistent/t.tmpl" }, "template_file: cannot be read"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := DefaultConfig()
			c.edit(&cfg)
			err := cfg.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("Validate = %v, want %q", err, c.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("the password leaked into %v", err)
			}
		})
	}
}

func TestNewNeedsThePasswordOfAUser(t *testing.T) {
	cfg := DefaultConfig()
	cfg.SMTPURL, cfg.From = "smtp://adi@mail.example.org", "omero@example.org"
	// A sender (it has a Store; New does not use it) needs the password.
	sender := Deps{Store: (*db.Store)(nil), Getenv: func(string) string { return "" }}
	if _, err := New(cfg, sender); err == nil || !strings.Contains(err.Error(), PasswordEnv) {
		t.Fatalf("New without the password = %v", err)
	}
	sender.Getenv = func(k string) string { return map[string]string{PasswordEnv: "pw"}[k] }
	n, err := New(cfg, sender)
	if err != nil || n.pass != "pw" {
		t.Fatalf("New = %v", err)
	}
	// A Notifier that only writes notices (the integrity command's) sends nothing: no password.
	if _, err := New(cfg, Deps{Getenv: func(string) string { return "" }}); err != nil {
		t.Fatalf("New of a writer without the password = %v", err)
	}
}

func TestTemplateFileOverrides(t *testing.T) {
	file := t.TempDir() + "/t.tmpl"
	if err := writeFile(file, `{{define "subject"}}Import {{(index .Orders 0).UUID}}{{end}}`); err != nil {
		t.Fatal(err)
	}
	tm, err := loadTemplates(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := tm.render(Message{Orders: []Order{{Outcome: Outcome{UUID: "u-1", Event: EventCompleted}}}})
	if err != nil || r.subject != "Import u-1" || !strings.Contains(r.text, "u-1") {
		t.Fatalf("render = %+v, %v", r, err)
	}
	if err := writeFile(file, `{{define "text"}}{{.Nope}}{{end}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTemplates(file); err == nil {
		t.Fatal("a template that cannot run was accepted")
	}
}

func writeFile(path, text string) error { return os.WriteFile(path, []byte(text), 0o644) }
