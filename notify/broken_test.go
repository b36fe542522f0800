package notify_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/internal/smtptest"
	"github.com/omero-adi/omero-adi/notify"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// inPlace is a data root and a ManagedRepository with one completed in-place order of alice
// linking files (names below the root, written with their content), whose completion notices the
// Notifier wrote, as the runner does; and an integrity check over them reporting to reporter.
type inPlace struct {
	uuid    string
	data    string
	files   []string // absolute
	checker *integrity.Checker
}

func (e *env) inPlace(t *testing.T, reporter integrity.Reporter, names ...string) *inPlace {
	t.Helper()
	ctx := context.Background()
	base := t.TempDir()
	ip := &inPlace{data: filepath.Join(base, "data")}
	repo := filepath.Join(base, "ManagedRepository")
	prefix := "alice_5/2026-01/02/10-00-00.000/"
	for _, name := range names {
		p := filepath.Join(ip.data, name)
		l := filepath.Join(repo, prefix, name)
		for _, d := range []string{filepath.Dir(p), filepath.Dir(l)} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte("pixels of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(p, l); err != nil {
			t.Fatal(err)
		}
		ip.files = append(ip.files, p)
	}
	found, err := redirect.Links(repo, prefix)
	if err != nil || len(found) != len(names) {
		t.Fatalf("links: %v, %v", found, err)
	}
	b, _ := json.Marshal(ip.files)
	if _, err := e.store.DB().ExecContext(ctx, `INSERT INTO imports (group_name, user_name, destination_id, destination_type,
		stage, uuid, files) VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', $1, $2)`, uuid.NewString(), string(b)); err != nil {
		t.Fatal(err)
	}
	claimed, err := e.store.Claim(ctx, "runner", 1, time.Minute)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim: %v, %v", claimed, err)
	}
	o := claimed[0]
	var links []db.Link
	for _, k := range found {
		links = append(links, db.Link{FilesetID: 55, Path: k.Path, Target: k.Target, Size: k.Size, ModTime: k.ModTime, Dev: k.Dev, Ino: k.Ino})
	}
	mustDo(t, e.store.SetLinks(ctx, o.Lease(), links))
	o.Stage, o.Result = db.StageCompleted, &db.Result{Filesets: []int64{55}, Images: []int64{101, 102}}
	mustDo(t, e.store.SetResult(ctx, o.Lease(), *o.Result))
	mustDo(t, e.store.Finish(ctx, o.Lease(), db.StageCompleted, "", e.n.Notices(o, alice, nil)...))
	ip.uuid = o.UUID
	ip.checker, err = integrity.New(integrity.DefaultConfig(), integrity.Deps{Store: e.store, ManagedRepo: repo,
		Roots: order.Roots{BaseDir: ip.data}, Reporter: reporter, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

func (ip *inPlace) check(t *testing.T) {
	t.Helper()
	if _, err := ip.checker.Check(context.Background(), integrity.Options{Hash: integrity.HashNone}, nil); err != nil {
		t.Fatal(err)
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// settled waits until the outbox is empty and a little more, and returns every mail received.
func (e *env) settled(t *testing.T) []smtptest.Message {
	t.Helper()
	waitQueued(t, e.store, 0)
	time.Sleep(300 * time.Millisecond)
	return e.smtp.Messages(t)
}

// A check that finds an order broken mails the requester (to the address of their earlier mail)
// and the admins once; the same damage found again sends nothing; other damage sends again.
func TestBrokenOrderIsReportedOnce(t *testing.T) {
	forEngines(t, func(t *testing.T, url string) {
		e := setup(t, url, func(c *notify.Config) { c.AdminTo = []string{"admin@example.org"} })
		ip := e.inPlace(t, e.n, "cells.tif", "more.tif")
		e.smtp.Wait(t, 1, 20*time.Second) // the completion mail
		ip.check(t)
		if ms := e.settled(t); len(ms) != 1 {
			t.Fatalf("an intact order sent %d mails after its completion mail", len(ms)-1)
		}

		mustDo(t, os.Remove(ip.files[0]))
		ip.check(t)
		ms := e.smtp.Wait(t, 3, 20*time.Second)
		user, admin := ms[1], ms[2]
		if user.To[0] == "admin@example.org" {
			user, admin = admin, user
		}
		if len(user.To) != 1 || user.To[0] != "alice@example.org" || len(admin.To) != 1 || admin.To[0] != "admin@example.org" {
			t.Fatalf("To: %v and %v, want alice and the admin", user.To, admin.To)
		}
		for _, m := range []smtptest.Message{user, admin} {
			if !strings.Contains(m.Subject, "broken") || !strings.Contains(m.Subject, "cells.tif") {
				t.Errorf("Subject = %q", m.Subject)
			}
			for _, want := range []string{ip.uuid, "101, 102", ip.files[0] + ": deleted", "put it back at " + ip.files[0],
				"put each file back where it was"} {
				if !strings.Contains(m.Text, want) || !strings.Contains(m.HTML, want) {
					t.Errorf("mail to %v lacks %q:\n%s\n%s", m.To, want, m.Text, m.HTML)
				}
			}
			if strings.Contains(m.Text, "more.tif") || strings.Contains(m.Text, "integrity --repair") {
				t.Errorf("mail to %v names an intact file or a repair that cannot help:\n%s", m.To, m.Text)
			}
			if strings.Join(links(t, m.Text), " ") != "image-101|image-102" {
				t.Errorf("links of %v: %v", m.To, links(t, m.Text))
			}
		}
		if !strings.Contains(user.Text, "Hello alice,") || !strings.Contains(admin.Text, "ManagedRepository") ||
			strings.Contains(user.Text, "ManagedRepository") {
			t.Errorf("user:\n%s\nadmin:\n%s", user.Text, admin.Text)
		}

		ip.check(t)
		if ms := e.settled(t); len(ms) != 3 {
			t.Fatalf("the same damage again sent %d more mails", len(ms)-3)
		}

		// Moved within the data root: other damage, reported again, with the repair.
		moved := filepath.Join(ip.data, "elsewhere", "more.tif")
		mustDo(t, os.MkdirAll(filepath.Dir(moved), 0o755))
		mustDo(t, os.Rename(ip.files[1], moved))
		ip.check(t)
		ms = e.smtp.Wait(t, 5, 20*time.Second)
		for _, m := range ms[3:] {
			for _, want := range []string{ip.files[1] + ": moved to " + moved, "omero-adi integrity --repair", ip.files[0] + ": deleted"} {
				if !strings.Contains(m.Text, want) {
					t.Errorf("mail to %v lacks %q:\n%s", m.To, want, m.Text)
				}
			}
		}
		ip.check(t)
		if ms := e.settled(t); len(ms) != 5 {
			t.Fatalf("%d mails, want 5", len(ms))
		}
		var n int
		mustDo(t, e.store.DB().QueryRow(`SELECT count(*) FROM adi_outbox WHERE notice_key LIKE 'broken.%'`).Scan(&n))
		if n != 4 {
			t.Errorf("%d broken notices in the outbox, want 4 (2 reports, user and admin)", n)
		}
	})
}

// The address a login read (omero.Client.Known) is used first; a user known to have none gets
// no mail, the admins still do; broken = false sends nothing.
func TestBrokenOrderAddressAndSwitch(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL(t), func(c *notify.Config) { c.AdminTo = []string{"admin@example.org"} })
	newer := *alice
	newer.Email = "alice.new@example.org"
	people := map[string]omero.Person{"alice": newer}
	writer, err := notify.New(e.cfg, notify.Deps{Log: quiet(), Known: func(u string) (omero.Person, bool) { p, ok := people[u]; return p, ok }})
	if err != nil {
		t.Fatal(err)
	}
	ip := e.inPlace(t, writer, "a.tif")
	e.smtp.Wait(t, 1, 20*time.Second)
	mustDo(t, os.Remove(ip.files[0]))
	ip.check(t)
	ms := e.settled(t)
	if len(ms) != 3 || (ms[1].To[0] != newer.Email && ms[2].To[0] != newer.Email) {
		t.Fatalf("mails: %d, want the completion, the admin copy and one to %s: %+v", len(ms), newer.Email, ms)
	}

	people["alice"] = omero.Person{Login: "alice"} // no address in OMERO
	b := integrity.Broken{UUID: ip.uuid, User: "alice", Damage: []db.Damage{{Link: "/r/a", Target: "/d/a", Kind: integrity.Truncated}}}
	ns := writer.Broken(b)
	if len(ns) != 1 || ns[0].Channel != db.ChannelAdmin {
		t.Errorf("a user without an address: notices %+v, want the admin copy only", ns)
	}
	off := e.cfg
	off.Broken = false
	quietN, err := notify.New(off, notify.Deps{Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if ns := quietN.Broken(b); len(ns) != 0 {
		t.Errorf("broken = false: %+v", ns)
	}
}

// File names of a broken order cannot forge header or body lines, HTML or chat markup.
func TestBrokenOrderHostileNamesEscaped(t *testing.T) {
	hook := startWebhook(t)
	e := setup(t, pgtest.SQLiteURL(t), func(c *notify.Config) { c.WebhookURL = hook.URL })
	evil := "<img src=x onerror=alert(1)>\r\nBcc: evil@example.com\r\nSubject: pwned & more.tif"
	ip := e.inPlace(t, e.n, evil)
	e.smtp.Wait(t, 1, 20*time.Second)
	mustDo(t, os.Remove(ip.files[0]))
	ip.check(t)
	checkEscaped(t, e.smtp.Wait(t, 2, 20*time.Second)[1], "Bcc: evil", "Subject: pwned")
	posts := hook.wait(t, 2)
	p := posts[0]
	if !strings.Contains(p, "CHANGED") {
		p = posts[1]
	}
	if strings.ContainsAny(p, "<>\n\r") || !strings.Contains(p, "&lt;img") || !strings.Contains(p, "&amp; more") ||
		!strings.Contains(p, "CHANGED") || !strings.Contains(p, ip.uuid) {
		t.Errorf("webhook text: %q", p)
	}
}
