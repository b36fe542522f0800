// Package notify tells people how their imports ended: when an order reaches its final stage the
// requester gets a mail (name, outcome, files, links into OMERO.web, and on failure the cause and
// how to retry), the admins a copy of each failure with the log files, and a chat webhook a line,
// as README.md's configuration reference ([notify]) and operations section describe.
//
// Nothing is lost and nothing is sent twice: the runner writes the notices (Notices) into the
// outbox in the transaction of the final stage; Run drains the outbox, claiming notices per
// recipient under a lease (as orders are claimed), and marks them sent once the SMTP server or the
// webhook accepted them. A failed send backs off and is retried; an agent killed mid-send leaves a
// lease that expires, and the next sender sends again under the same Message-ID (at least once,
// and a repeat is recognisable). Orders of one person that finish within digest_window go as one
// mail.
package notify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	gomail "github.com/wneessen/go-mail"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/settings"
)

// Store is what the sender needs of the orders database (db.Store implements it).
type Store interface {
	ClaimNotices(ctx context.Context, owner string, maxGroups int, lease, window time.Duration) ([]db.Notice, error)
	SetNoticeBatch(ctx context.Context, owner string, ids []int64, batch string) error
	NoticesSent(ctx context.Context, owner string, ids []int64, note string) error
	NoticesFailed(ctx context.Context, owner string, ids []int64, backoff time.Duration, reason string) error
	QueuedNotices(ctx context.Context) (int, error)
	KnownRecipient(ctx context.Context, user string) (string, error)
	OutboxNotify() <-chan struct{}
}

var _ Store = (*db.Store)(nil)

// Deps are what a Notifier works with. Store may be nil for a Notifier that only writes notices
// (Notices); Run needs it.
type Deps struct {
	Store      Store
	Log        *logrus.Entry
	Registerer prometheus.Registerer
	Worker     string              // lease owner prefix, unique per process (host:pid)
	Getenv     func(string) string // reads PasswordEnv; nil: os.Getenv
}

// Notifier writes notices for finished orders (Notices, called by the runner) and sends what the
// outbox holds (Run). Create it with New.
type Notifier struct {
	cfg     Config
	deps    Deps
	log     *logrus.Entry
	tmpl    *templates
	smtp    *smtpServer // nil: no mail
	pass    string
	from    string
	domain  string // of From, for Message-IDs
	http    *http.Client
	m       *metrics
	claims  atomic.Int64
	mu      sync.Mutex
	noEmail map[string]bool // users logged once as having no address
}

// New checks cfg, reads the template file and the SMTP password (env PasswordEnv); it sends
// nothing. With nothing configured (Config.Enabled false) it returns nil and no error: there is
// nothing to notify.
func New(cfg Config, deps Deps) (*Notifier, error) {
	if !cfg.Enabled() {
		return nil, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Log == nil {
		deps.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if deps.Getenv == nil {
		deps.Getenv = os.Getenv
	}
	if deps.Worker == "" {
		host, _ := os.Hostname()
		deps.Worker = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	t, err := loadTemplates(cfg.TemplateFile)
	if err != nil {
		return nil, settings.Errorf("template_file", "%v", err)
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, fmt.Errorf("register notification metrics: %w", err)
	}
	n := &Notifier{cfg: cfg, deps: deps, log: deps.Log.WithField("component", "notify"), tmpl: t,
		http: &http.Client{Timeout: cfg.SendTimeout}, m: m, noEmail: map[string]bool{}, domain: "omero-adi"}
	if cfg.SMTPURL != "" {
		s, _ := parseSMTPURL(cfg.SMTPURL) // Validate checked it
		n.smtp = &s
		n.pass = deps.Getenv(PasswordEnv)
		if s.user != "" && n.pass == "" {
			return nil, settings.Errorf("smtp_url", "names user %q but env %s is empty: set the SMTP password there", s.user, PasswordEnv)
		}
		a, _ := mail.ParseAddress(cfg.From)
		n.from = a.String()
		if _, d, ok := strings.Cut(a.Address, "@"); ok && d != "" {
			n.domain = d
		}
	}
	return n, nil
}

// Notices implements runner.Notifier: the notices the final stage of o sends (none for a
// cancelled order or an event switched off). p is the user's name and address (nil: unknown, the
// sender looks up the address an earlier order of the user was sent to); a user known to have no
// address gets no mail, logged once.
func (n *Notifier) Notices(o db.Order, p *omero.Person, logs []string) []db.Notice {
	out := outcomeOf(o, p, logs, time.Now())
	switch {
	case out.Event == EventCompleted && n.cfg.Completed:
	case out.Event == EventFailed && n.cfg.Failed:
	default:
		return nil
	}
	payload, err := json.Marshal(out)
	if err != nil {
		n.log.WithError(err).WithField("order", o.UUID).Error("encode notification")
		return nil
	}
	key := fmt.Sprintf("%s.%d.", o.UUID, o.Attempt)
	mk := func(channel, to string) db.Notice {
		return db.Notice{Key: key + channel, User: o.User, Channel: channel, Recipient: to, Payload: string(payload)}
	}
	var ns []db.Notice
	if n.smtp != nil {
		switch {
		case p == nil:
			ns = append(ns, mk(db.ChannelMail, unknownAddress+o.User))
		case p.Email == "":
			n.noAddress(o.User)
		default:
			ns = append(ns, mk(db.ChannelMail, p.Email))
		}
		if out.Event == EventFailed && len(n.cfg.AdminTo) > 0 {
			ns = append(ns, mk(db.ChannelAdmin, strings.Join(n.cfg.AdminTo, ", ")))
		}
	}
	if n.cfg.WebhookURL != "" {
		ns = append(ns, mk(db.ChannelWebhook, "webhook"))
	}
	return ns
}

// unknownAddress prefixes the recipient of a mail notice whose user's address was not read: the
// sender resolves it (db.Store.KnownRecipient).
const unknownAddress = "?"

func (n *Notifier) noAddress(user string) {
	n.mu.Lock()
	first := !n.noEmail[user]
	n.noEmail[user] = true
	n.mu.Unlock()
	if first {
		n.log.WithField("user", user).Warn("OMERO user has no e-mail address: no notification mails for them (set one in OMERO)")
	}
}

// maxGroups bounds how many recipients one claim takes.
const maxGroups = 16

// Run sends what the outbox holds until ctx ends: at once when this process wrote notices, else
// every poll_interval. Failures are logged and retried; Run returns nil when ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	if n.deps.Store == nil {
		return errors.New("notify: Run needs a Store")
	}
	n.log.WithFields(logrus.Fields{"smtp": masked(n.cfg.SMTPURL), "webhook": n.cfg.WebhookURL != "",
		"digest_window": n.cfg.DigestWindow}).Info("notifications started")
	tick := time.NewTicker(n.cfg.PollInterval)
	defer tick.Stop()
	wake := n.deps.Store.OutboxNotify()
	for {
		for n.drain(ctx) {
		}
		select {
		case <-ctx.Done():
			n.log.Info("notifications stopped")
			return nil
		case <-tick.C:
		case <-wake:
		}
	}
}

// drain claims and sends one round of notices; it reports whether it claimed any (more may wait).
func (n *Notifier) drain(ctx context.Context) bool {
	s := n.deps.Store
	if q, err := s.QueuedNotices(ctx); err == nil {
		n.m.queued.Set(float64(q))
	}
	owner := fmt.Sprintf("%s#%d", n.deps.Worker, n.claims.Add(1))
	lease := 2*n.cfg.SendTimeout + 10*time.Second
	claimed, err := s.ClaimNotices(ctx, owner, maxGroups, lease, n.cfg.DigestWindow)
	if err != nil {
		if ctx.Err() == nil {
			n.log.WithError(err).Warn("read the notification outbox")
		}
		return false
	}
	for _, b := range batches(claimed) {
		// Sends finish even at shutdown (bounded by send_timeout), so a mail the server accepted
		// is marked sent.
		n.send(context.WithoutCancel(ctx), owner, b)
	}
	return len(claimed) > 0
}

// batch is one message: notices of one channel and recipient, under one batch key.
type batch struct {
	key     string
	fresh   bool // the key was chosen now (not yet stored)
	notices []db.Notice
}

// batches groups claimed notices into messages: those already given a batch keep it (a retry sends
// the same message again); the others of one channel and recipient form a new one, keyed by the
// first notice's key.
func batches(ns []db.Notice) []batch {
	var out []batch
	index := map[string]int{}
	for _, nt := range ns {
		k, fresh := nt.Batch, false
		if k == "" {
			k, fresh = "new|"+nt.Channel+"|"+nt.Recipient, true
		}
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			key := nt.Batch
			if fresh {
				key = nt.Key
			}
			out = append(out, batch{key: key, fresh: fresh})
		}
		out[i].notices = append(out[i].notices, nt)
	}
	return out
}

func (b batch) ids() []int64 {
	ids := make([]int64, len(b.notices))
	for i, nt := range b.notices {
		ids[i] = nt.ID
	}
	return ids
}

// MessageID is the Message-ID of the message of batch key from a sender at domain: the same for
// every try, so a repeat after a lost reply is recognisable.
func MessageID(key, domain string) string {
	sum := sha256.Sum256([]byte(key))
	return "omero-adi." + hex.EncodeToString(sum[:16]) + "@" + domain
}

// send delivers one batch and records the result.
func (n *Notifier) send(ctx context.Context, owner string, b batch) {
	s := n.deps.Store
	first := b.notices[0]
	log := n.log.WithFields(logrus.Fields{"channel": first.Channel, "notices": len(b.notices), "batch": b.key})
	if b.fresh {
		if err := s.SetNoticeBatch(ctx, owner, b.ids(), b.key); err != nil {
			log.WithError(err).Warn("record notification batch")
			return
		}
	}
	msg, to, skip, err := n.message(ctx, b)
	if err == nil && skip != "" {
		if err := s.NoticesSent(ctx, owner, b.ids(), skip); err != nil {
			log.WithError(err).Warn("mark notification skipped")
		}
		return
	}
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, n.cfg.SendTimeout)
		err = n.deliver(sctx, first.Channel, to, b.key, msg)
		cancel()
	}
	if err != nil {
		n.m.failed.WithLabelValues(first.Channel).Inc()
		wait := n.backoff(first.Attempts)
		entry := log.WithError(err).WithField("retry_in", wait)
		if first.Attempts == 1 {
			entry.Warn("send notification failed; retrying")
		} else {
			entry.Debug("send notification failed; retrying")
		}
		if err := s.NoticesFailed(ctx, owner, b.ids(), wait, err.Error()); err != nil {
			log.WithError(err).Warn("record failed notification")
		}
		return
	}
	n.m.sent.WithLabelValues(first.Channel).Add(float64(len(b.notices)))
	if err := s.NoticesSent(ctx, owner, b.ids(), ""); err != nil {
		// Another sender took the notices over (the lease ran out): it sends them again, under
		// the same Message-ID.
		log.WithError(err).Warn("mark notification sent")
		return
	}
	log.Debug("notification sent")
}

func (n *Notifier) backoff(attempts int) time.Duration {
	d := n.cfg.RetryBackoff
	for i := 1; i < attempts && d < n.cfg.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, n.cfg.RetryBackoffMax)
}

// message renders batch b: its rendering, the address (mail channels), or why it is not sent.
func (n *Notifier) message(ctx context.Context, b batch) (rendered, string, string, error) {
	first := b.notices[0]
	to := first.Recipient
	if first.Channel == db.ChannelMail && strings.HasPrefix(to, unknownAddress) {
		user := strings.TrimPrefix(to, unknownAddress)
		known, err := n.deps.Store.KnownRecipient(ctx, user)
		if err != nil {
			return rendered{}, "", "", err
		}
		if known == "" {
			n.log.WithField("user", user).Info("no e-mail address known for the user (the order ended before its OMERO login, and no earlier mail went to them): notification skipped")
			return rendered{}, "", "no e-mail address known for user " + user, nil
		}
		to = known
	}
	m := Message{Admin: first.Channel == db.ChannelAdmin, Digest: len(b.notices) > 1}
	for _, nt := range b.notices {
		var o Outcome
		if err := json.Unmarshal([]byte(nt.Payload), &o); err != nil {
			n.log.WithError(err).WithField("notice", nt.Key).Error("unreadable notification payload; sending what remains")
			continue
		}
		if !m.Admin && m.Name == "" {
			m.Name = o.Name
			if m.Name == "" {
				m.Name = o.User
			}
		}
		m.Orders = append(m.Orders, Order{Outcome: o, Links: o.Links(n.cfg.WebclientURL)})
	}
	if len(m.Orders) == 0 {
		return rendered{}, "", "unreadable payload", nil
	}
	r, err := n.tmpl.render(m)
	return r, to, "", err
}

// deliver sends a rendered batch over its channel.
func (n *Notifier) deliver(ctx context.Context, channel, to, key string, r rendered) error {
	if channel == db.ChannelWebhook {
		return n.post(ctx, key, r.webhook)
	}
	return n.mail(ctx, to, key, r)
}

func (n *Notifier) mail(ctx context.Context, to, key string, r rendered) error {
	m := gomail.NewMsg()
	if err := m.From(n.from); err != nil {
		return fmt.Errorf("from %q: %w", n.from, err)
	}
	var rcpts []string
	for _, a := range strings.Split(to, ",") {
		if a = strings.TrimSpace(a); a != "" {
			rcpts = append(rcpts, a)
		}
	}
	if err := m.To(rcpts...); err != nil {
		return fmt.Errorf("to %q: %w", to, err)
	}
	m.Subject(r.subject)
	m.SetMessageIDWithValue(MessageID(key, n.domain))
	m.SetDate()
	m.SetBulk()
	m.SetBodyString(gomail.TypeTextPlain, r.text)
	m.AddAlternativeString(gomail.TypeTextHTML, r.html)
	opts := []gomail.Option{gomail.WithPort(n.smtp.port), gomail.WithTimeout(n.cfg.SendTimeout)}
	if n.smtp.tls {
		opts = append(opts, gomail.WithSSL())
	} else {
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if n.smtp.user != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover), gomail.WithUsername(n.smtp.user),
			gomail.WithPassword(n.pass))
	}
	c, err := gomail.NewClient(n.smtp.host, opts...)
	if err != nil {
		return fmt.Errorf("smtp client: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, m); err != nil {
		return fmt.Errorf("send mail via %s:%d: %w", n.smtp.host, n.smtp.port, err)
	}
	return nil
}

// post sends text to the webhook as {"text": text} (Mattermost, Slack and Teams incoming hooks).
func (n *Notifier) post(ctx context.Context, key, text string) error {
	body, _ := json.Marshal(map[string]string{"text": text})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", MessageID(key, n.domain))
	resp, err := n.http.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook: %s: %s", resp.Status, strings.TrimSpace(string(reply)))
	}
	return nil
}

type metrics struct {
	queued prometheus.Gauge
	sent   *prometheus.CounterVec
	failed *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "omero_adi_notifications_queued", Help: "Notifications in the outbox not sent yet (all agents).",
		}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omero_adi_notifications_sent_total", Help: "Notifications this agent delivered, by channel (mail, admin, webhook).",
		}, []string{"channel"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "omero_adi_notifications_failed_total", Help: "Failed delivery attempts of this agent (each is retried), by channel.",
		}, []string{"channel"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.queued, m.sent, m.failed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
