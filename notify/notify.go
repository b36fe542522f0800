// Package notify tells people how their imports ended: when an order reaches its final stage the
// requester gets a mail (name, outcome, files, links into OMERO.web, and on failure the cause and
// how to retry), the admins a copy of each failure with the log files, and a chat webhook a line,
// as README.md's configuration reference ([notify]) and operations section describe. An in-place
// order the integrity check finds broken is reported the same way (Broken, an integrity.Reporter):
// to the requester, a copy to the admins, and the webhook.
//
// Nothing is lost and nothing is sent twice: the runner writes the notices (Notices) into the
// outbox in the transaction of the final stage, the integrity check those of a broken order
// (Broken) in the transaction of its outcome; Run drains the outbox, claiming notices per
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
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	gomail "github.com/wneessen/go-mail"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/settings"
)

// Store is what the sender needs of the orders database (db.Store implements it).
type Store interface {
	ClaimNotices(ctx context.Context, owner string, maxGroups int, lease, window time.Duration) ([]db.Notice, error)
	NoticesSent(ctx context.Context, owner string, ids []int64, note string) error
	NoticesFailed(ctx context.Context, owner string, ids []int64, backoff time.Duration, reason string) error
	QueuedNotices(ctx context.Context) (int, error)
	KnownRecipient(ctx context.Context, user string) (string, error)
	OutboxNotify() <-chan struct{}
}

var _ Store = (*db.Store)(nil)

// Deps are what a Notifier works with. Store may be nil for a Notifier that only writes notices
// (Notices, Broken; it needs no SMTP password); Run needs it.
type Deps struct {
	Store      Store
	Log        *logrus.Entry
	Registerer prometheus.Registerer
	Worker     string              // lease owner prefix, unique per process (host:pid)
	Getenv     func(string) string // reads PasswordEnv; nil: os.Getenv
	// Known returns a user's name and address as an earlier login read them (omero.Client.Known),
	// for a broken order's report; nil: unknown, the sender uses the address of an earlier mail.
	Known func(user string) (omero.Person, bool)
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
	domain  string      // of From, for Message-IDs
	tls     *tls.Config // for the mail server
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
		n.tls = &tls.Config{ServerName: s.host, MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			if n.tls.RootCAs, err = loadCAs(cfg.CAFile); err != nil {
				return nil, settings.Errorf("ca_file", "%v", err)
			}
		}
		n.pass = deps.Getenv(PasswordEnv)
		if s.user != "" && n.pass == "" && deps.Store != nil { // a Notifier that only writes notices sends nothing
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
	return n.fanOut(fmt.Sprintf("%s.%d.", o.UUID, o.Attempt), o.User, p, payload, out.Event == EventFailed)
}

// fanOut is the notices of one payload about user: the user's mail (p nil: address looked up by
// the sender; no address: none, logged once), with admin the admin copy, and the webhook post.
// Their keys are key followed by the channel.
func (n *Notifier) fanOut(key, user string, p *omero.Person, payload []byte, admin bool) []db.Notice {
	mk := func(channel, to string) db.Notice {
		return db.Notice{Key: key + channel, User: user, Channel: channel, Recipient: to, Payload: string(payload)}
	}
	var ns []db.Notice
	if n.smtp != nil {
		switch {
		case p == nil:
			ns = append(ns, mk(db.ChannelMail, unknownAddress+user))
		case p.Email == "":
			n.noAddress(user)
		default:
			ns = append(ns, mk(db.ChannelMail, p.Email))
		}
		if admin && len(n.cfg.AdminTo) > 0 {
			ns = append(ns, mk(db.ChannelAdmin, strings.Join(n.cfg.AdminTo, ", ")))
		}
	}
	if n.cfg.WebhookURL != "" {
		ns = append(ns, mk(db.ChannelWebhook, "webhook"))
	}
	return ns
}

// Broken implements integrity.Reporter: the notices that tell the requester, the admins
// (admin_to) and the webhook that the files of an in-place order changed (none when broken is
// switched off). Their keys hold the order and a hash of its damage, so that the same damage of an
// order is reported once, however often the check finds it.
func (n *Notifier) Broken(b integrity.Broken) []db.Notice {
	if !n.cfg.Broken {
		return nil
	}
	var p *omero.Person
	if n.deps.Known != nil {
		if known, ok := n.deps.Known(b.User); ok {
			p = &known
		}
	}
	out := brokenOutcome(b, p, time.Now())
	payload, err := json.Marshal(out)
	if err != nil {
		n.log.WithError(err).WithField("order", b.UUID).Error("encode notification")
		return nil
	}
	return n.fanOut("broken."+b.UUID+"."+damageHash(b.Damage)+".", b.User, p, payload, true)
}

var _ integrity.Reporter = (*Notifier)(nil)

// damageHash names a damage list by what the check compares (integrity's sameDamage): each link
// and its kind of damage.
func damageHash(damage []db.Damage) string {
	parts := make([]string, len(damage))
	for i, d := range damage {
		parts[i] = d.Link + "\x00" + d.Kind
	}
	sort.Strings(parts)
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:8])
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
			if q, err := n.deps.Store.QueuedNotices(ctx); err == nil {
				n.m.queued.Set(float64(q))
			}
		case <-wake:
			// Orders often finish close together: gather them, so that one claim, one SMTP
			// connection and one write serve several.
			select {
			case <-ctx.Done():
			case <-time.After(min(gather, n.cfg.PollInterval)):
			}
		}
	}
}

// gather is how long the sender waits after a wake-up for more notices to send in the same round.
const gather = 100 * time.Millisecond

// drain claims and sends one round of notices; it reports whether it claimed any (more may wait).
// The mails of a round go over one SMTP connection.
func (n *Notifier) drain(ctx context.Context) bool {
	s := n.deps.Store
	owner := fmt.Sprintf("%s#%d", n.deps.Worker, n.claims.Add(1))
	lease := 4 * n.cfg.SendTimeout
	// Every send of the round ends, and is marked sent, before the lease does: another agent must
	// never send what this one still sends. A batch that no longer fits is left unsent for a later
	// round (its lease runs out; nothing of it went out).
	end := time.Now().Add(lease - n.cfg.SendTimeout)
	claimed, err := s.ClaimNotices(ctx, owner, maxGroups, lease, n.cfg.DigestWindow)
	if err != nil {
		if ctx.Err() == nil {
			n.log.WithError(err).Warn("read the notification outbox")
		}
		return false
	}
	if len(claimed) == 0 {
		return false
	}
	// Sends finish even at shutdown (bounded by send_timeout), so that what a server accepted is
	// marked sent.
	ctx = context.WithoutCancel(ctx)
	r := round{n: n, owner: owner}
	var mails []*outgoing
	for _, b := range batches(claimed) {
		msg, to, skip, err := n.message(ctx, b)
		switch {
		case err != nil:
			r.failed(ctx, b, err)
		case skip != "":
			if err := s.NoticesSent(ctx, owner, b.ids(), skip); err != nil {
				n.log.WithError(err).Warn("mark notification skipped")
			}
		case b.channel() == db.ChannelWebhook:
			if time.Until(end) < n.cfg.SendTimeout {
				continue // left for a later round
			}
			pctx, cancel := context.WithTimeout(ctx, n.cfg.SendTimeout)
			err := n.post(pctx, b.key, msg.webhook)
			cancel()
			r.done(ctx, b, err)
		default:
			m, err := n.mailMsg(to, b.key, msg)
			if errors.Is(err, errBadAddress) {
				// OMERO holds an address no server takes: a retry cannot help.
				n.log.WithError(err).WithField("user", b.notices[0].User).Error("notification not sent: fix the user's e-mail address in OMERO")
				if err := s.NoticesSent(ctx, owner, b.ids(), err.Error()); err != nil {
					n.log.WithError(err).Warn("mark notification skipped")
				}
				continue
			}
			if err != nil {
				r.failed(ctx, b, err)
				continue
			}
			mails = append(mails, &outgoing{b: b, msg: m})
		}
	}
	// Ten mails per send timeout, as many as fit before the round's end; the rest wait.
	if fit := int(time.Until(end) / n.cfg.SendTimeout * 10); len(mails) > fit {
		mails = mails[:max(fit, 0)]
	}
	if len(mails) > 0 {
		sctx, cancel := context.WithTimeout(ctx, min(n.cfg.SendTimeout*time.Duration(1+len(mails)/10), time.Until(end)))
		err := n.sendMails(sctx, mails)
		cancel()
		for _, o := range mails {
			switch {
			case err != nil:
				r.done(ctx, o.b, err)
			case o.msg.HasSendError():
				r.done(ctx, o.b, o.msg.SendError())
			default:
				r.done(ctx, o.b, nil)
			}
		}
	}
	r.flush(ctx)
	return true
}

// outgoing is a mail of a round with its batch.
type outgoing struct {
	b   batch
	msg *gomail.Msg
}

// round records what one drain sent: the sent notices are marked in one write at its end.
type round struct {
	n     *Notifier
	owner string
	sent  []int64
}

// done records the result of sending b.
func (r *round) done(ctx context.Context, b batch, err error) {
	if err != nil {
		r.failed(ctx, b, err)
		return
	}
	r.n.m.sent.WithLabelValues(b.channel()).Add(float64(len(b.notices)))
	r.sent = append(r.sent, b.ids()...)
	r.n.log.WithFields(logrus.Fields{"channel": b.channel(), "notices": len(b.notices), "batch": b.key}).Debug("notification sent")
}

// failed releases b for a retry after its backoff.
func (r *round) failed(ctx context.Context, b batch, err error) {
	n := r.n
	n.m.failed.WithLabelValues(b.channel()).Inc()
	attempts := b.notices[0].Attempts
	wait := n.backoff(attempts)
	entry := n.log.WithError(err).WithFields(logrus.Fields{"channel": b.channel(), "notices": len(b.notices),
		"batch": b.key, "retry_in": wait, "attempt": attempts})
	if attempts == 1 {
		entry.Warn("send notification failed; retrying")
	} else {
		entry.Debug("send notification failed; retrying")
	}
	if err := n.deps.Store.NoticesFailed(ctx, r.owner, b.ids(), wait, err.Error()); err != nil {
		n.log.WithError(err).Warn("record failed notification")
	}
}

// flush marks what the round sent.
func (r *round) flush(ctx context.Context) {
	if len(r.sent) == 0 {
		return
	}
	if err := r.n.deps.Store.NoticesSent(ctx, r.owner, r.sent, ""); err != nil {
		// Another sender took the notices over (the lease ran out): it sends them again, under
		// the same Message-ID.
		r.n.log.WithError(err).Warn("mark notifications sent")
	}
}

// batch is one message: the notices of one channel and recipient in one db batch.
type batch struct {
	key     string
	notices []db.Notice
}

func (b batch) channel() string { return b.notices[0].Channel }

// batches groups claimed notices into messages by their batch (ClaimNotices gave every notice
// one; a notice claimed again keeps its own, so a retry sends the same message again).
func batches(ns []db.Notice) []batch {
	var out []batch
	index := map[string]int{}
	for _, nt := range ns {
		k := nt.Channel + "|" + nt.Recipient + "|" + nt.Batch
		i, ok := index[k]
		if !ok {
			i = len(out)
			index[k] = i
			out = append(out, batch{key: nt.Batch})
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

// backoff is the wait after the attempts-th failed send: retry_backoff doubled per attempt, up to
// retry_backoff_max.
func (n *Notifier) backoff(attempts int) time.Duration {
	return retry.Policy{Initial: n.cfg.RetryBackoff, Max: n.cfg.RetryBackoffMax}.Delay(attempts)
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

// errBadAddress: a recipient is not an e-mail address.
var errBadAddress = errors.New("not an e-mail address")

// mailMsg builds the mail of a rendered batch to the addresses to (comma-separated).
func (n *Notifier) mailMsg(to, key string, r rendered) (*gomail.Msg, error) {
	m := gomail.NewMsg()
	if err := m.From(n.from); err != nil {
		return nil, fmt.Errorf("from %q: %w", n.from, err)
	}
	var rcpts []string
	for _, a := range strings.Split(to, ",") {
		if a = strings.TrimSpace(a); a != "" {
			rcpts = append(rcpts, a)
		}
	}
	if err := m.To(rcpts...); err != nil {
		return nil, fmt.Errorf("%w %q: %v", errBadAddress, to, err)
	}
	m.Subject(r.subject)
	m.SetMessageIDWithValue(MessageID(key, n.domain))
	m.SetDate()
	m.SetBulk()
	m.SetBodyString(gomail.TypeTextPlain, r.text)
	m.AddAlternativeString(gomail.TypeTextHTML, r.html)
	return m, nil
}

// sendMails sends the mails of a round over one connection; each mail's own failure is on it
// (HasSendError), the error is the connection's.
func (n *Notifier) sendMails(ctx context.Context, mails []*outgoing) error {
	opts := []gomail.Option{gomail.WithPort(n.smtp.port), gomail.WithTimeout(n.cfg.SendTimeout), gomail.WithTLSConfig(n.tls)}
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
	if err := c.DialWithContext(ctx); err != nil {
		return fmt.Errorf("connect to %s:%d: %w", n.smtp.host, n.smtp.port, err)
	}
	defer func() { _ = c.Close() }()
	msgs := make([]*gomail.Msg, len(mails))
	for i, o := range mails {
		msgs[i] = o.msg
	}
	// Per-mail errors are on each Msg; a mail without one was accepted.
	_ = c.Send(msgs...)
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
