package notify

import (
	"bytes"
	"fmt"
	htmltemplate "html/template"
	"os"
	"strings"
	texttemplate "text/template"
	"unicode"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

// Message is the data every template gets: one mail (or webhook post) about one or more orders.
type Message struct {
	Name   string  // the requester's name (their login when unknown); "" in an admin copy
	Admin  bool    // the admin copy of failures: it lists the log files
	Digest bool    // more than one order
	Orders []Order // oldest first
}

// Order is one order of a Message with its OMERO.web links.
type Order struct {
	Outcome
	Links []Link
}

// Count is how many of the message's orders announce event (EventCompleted, EventFailed,
// EventBroken).
func (m Message) Count(event string) int {
	n := 0
	for _, o := range m.Orders {
		if o.Event == event {
			n++
		}
	}
	return n
}

// builtin are the default templates. "subject" and "webhook" are text; "text" is the plain-text
// body and "html" the HTML body (html/template escapes every value). An order is either finished
// (completed or failed) or broken (its files changed after an in-place import).
const builtin = `
{{define "subject"}}{{if .Admin}}[omero-adi] {{end}}{{if .Digest}}OMERO imports: {{len .Orders}} orders {{if eq (.Count "broken") (len .Orders)}}with changed files{{else if .Count "broken"}}finished or with changed files{{else}}finished{{end}}{{else}}{{with index .Orders 0}}OMERO import {{if .Broken}}broken, its files changed{{else if .Completed}}completed{{else}}failed{{end}}: {{oneline .Title}}{{end}}{{end}}{{end}}

{{define "text"}}{{if .Admin}}{{template "admin-intro" .}}{{else}}Hello {{oneline .Name}},{{end}}
{{range .Orders}}{{if .Broken}}
Files of your in-place import changed after it: OMERO reads the images from these files where
they were, so the images may no longer open.
  Order:  {{oneline .UUID}} in group {{oneline .Group}}
  Images: {{.ImageIDs}}
{{if .Links}}  In OMERO.web:
{{range .Links}}    {{.Label}}: {{.URL}}
{{end}}{{end}}  What happened ({{oneline .Summary}}):
{{range .Damage}}    - {{oneline .Target}}: {{oneline .Kind}}{{with .MovedTo}} to {{oneline .}}{{end}}
      {{oneline .Detail}}
{{end}}  What to do: put each file back where it was, unchanged.{{if .Repairable}} For a file that moved, an admin
  can instead re-point OMERO to where it is now (once OMERO's checksum proves it is the same file):
    omero-adi integrity --repair{{end}}
{{else}}
{{if .Completed}}Your import is complete.{{else}}Your import FAILED.{{end}}
  Order:       {{oneline .UUID}}
  Destination: {{oneline .Target}} in group {{oneline .Group}}
  Files:
{{range .Files}}    - {{oneline .}}
{{end}}{{if .Completed}}{{if .Links}}  Open in OMERO.web:
{{range .Links}}    {{.Label}}: {{.URL}}
{{end}}{{end}}{{else}}  What went wrong: {{oneline .Description}}
  Once the cause is fixed, an admin retries it with:
    {{oneline .RetryCommand}}
  or in the orders database:
    {{oneline .RetrySQL}}
{{if .Links}}  In OMERO.web:
{{range .Links}}    {{.Label}}: {{.URL}}
{{end}}{{end}}{{end}}{{end}}{{if $.Admin}}  User: {{oneline .User}}{{with .Email}} <{{oneline .}}>{{end}}
{{if .Broken}}  Links in the ManagedRepository:
{{range .Damage}}    {{oneline .Link}}
{{end}}{{end}}{{if .Logs}}  Log files on the agent's host:
{{range .Logs}}    {{oneline .}}
{{end}}{{end}}{{end}}{{end}}
--
omero-adi
{{end}}

{{define "admin-intro"}}{{if eq (.Count "broken") (len .Orders)}}In-place imports whose files changed{{else if .Count "broken"}}Failed imports and in-place imports whose files changed{{else}}Failed imports{{end}}, for the facility admins.{{end}}

{{define "html"}}<!DOCTYPE html>
<html><body>
<p>{{if .Admin}}{{template "admin-intro" .}}{{else}}Hello {{oneline .Name}},{{end}}</p>
{{range .Orders}}<div>
{{if .Broken}}<p><b>Files of your in-place import changed after it.</b> OMERO reads the images from these files where they were, so the images may no longer open.</p>
<p>Order {{oneline .UUID}} in group {{oneline .Group}}, images {{.ImageIDs}}</p>
<p>What happened ({{oneline .Summary}}):</p>
<ul>{{range .Damage}}<li>{{oneline .Target}}: {{oneline .Kind}}{{with .MovedTo}} to {{oneline .}}{{end}}<br>{{oneline .Detail}}</li>{{end}}</ul>
<p>What to do: put each file back where it was, unchanged.{{if .Repairable}} For a file that moved, an admin can instead re-point OMERO to where it is now (once OMERO's checksum proves it is the same file): <code>omero-adi integrity --repair</code>{{end}}</p>
{{else}}<p><b>{{if .Completed}}Your import is complete.{{else}}Your import failed.{{end}}</b></p>
<p>Order {{oneline .UUID}} into {{oneline .Target}} in group {{oneline .Group}}</p>
<ul>{{range .Files}}<li>{{oneline .}}</li>{{end}}</ul>
{{if not .Completed}}<p>What went wrong: {{oneline .Description}}</p>
<p>Once the cause is fixed, an admin retries it with <code>{{oneline .RetryCommand}}</code>, or in the orders database:
<code>{{oneline .RetrySQL}}</code></p>
{{end}}{{end}}{{if .Links}}<p>Open in OMERO.web: {{range $i, $l := .Links}}{{if $i}} · {{end}}<a href="{{$l.URL}}">{{$l.Label}}</a>{{end}}</p>
{{end}}{{if $.Admin}}<p>User {{oneline .User}}{{with .Email}} &lt;{{oneline .}}&gt;{{end}}</p>
{{if .Broken}}<p>Links in the ManagedRepository:</p><ul>{{range .Damage}}<li>{{oneline .Link}}</li>{{end}}</ul>{{end}}
{{if .Logs}}<p>Log files on the agent's host:</p><ul>{{range .Logs}}<li>{{oneline .}}</li>{{end}}</ul>{{end}}
{{end}}</div>
{{end}}<p>omero-adi</p>
</body></html>
{{end}}

{{define "webhook"}}{{range $i, $o := .Orders}}{{if $i}}
{{end}}{{if .Broken}}OMERO import files CHANGED for {{chat .User}}: order {{chat .UUID}} ({{chat .Group}}), images {{.ImageIDs}}: {{range $j, $d := .Damage}}{{if $j}}; {{end}}{{chat $d.Target}} {{chat $d.Kind}}{{with $d.MovedTo}} to {{chat .}}{{end}}{{end}}. Put the files back{{if .Repairable}}, or run omero-adi integrity --repair{{end}}.{{else}}OMERO import {{if .Completed}}completed{{else}}FAILED{{end}} for {{chat .User}}: {{chat .Title}} into {{chat .Target}} ({{chat .Group}}){{if not .Completed}}: {{chat .Description}} Retry: {{chat .RetryCommand}}{{end}}{{end}}{{range .Links}} {{.URL}}{{end}}{{end}}{{end}}
`

// oneline makes a value one safe line: line breaks and other control characters are written as
// escapes (\n, \r, \t, \xNN), so a file name cannot forge lines or headers.
func oneline(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// chat is oneline for a chat message: Slack's escapes for &, < and > (Mattermost and Teams show
// them as written), so no value becomes a link, a mention or markup.
func chat(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(oneline(s))
}

// templates are the parsed templates: the built-in ones, replaced by those of the template file.
type templates struct {
	text *texttemplate.Template
	html *htmltemplate.Template
}

func loadTemplates(file string) (*templates, error) {
	funcs := map[string]any{"oneline": oneline, "chat": chat}
	t := &templates{
		text: texttemplate.Must(texttemplate.New("notify").Funcs(funcs).Parse(builtin)),
		html: htmltemplate.Must(htmltemplate.New("notify").Funcs(funcs).Parse(builtin)),
	}
	if file == "" {
		return t, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if _, err := t.text.Parse(string(b)); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if _, err := t.html.Parse(string(b)); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	// Render a sample, so that a template that cannot run is a settings error, not a lost mail.
	failed := Outcome{UUID: "sample", Event: EventFailed, Files: []string{"/data/a.tif"}}
	broken := Outcome{UUID: "sample", Event: EventBroken, Files: []string{"/data/a.tif"}, Result: &db.Result{Images: []int64{1}},
		Damage: []db.Damage{{Link: "/repo/a.tif", Target: "/data/a.tif", Kind: "deleted", Detail: "the file is gone"}}}
	for _, m := range []Message{{Name: "Ada", Orders: []Order{{Outcome: failed}}}, {Admin: true, Orders: []Order{{Outcome: broken}}}} {
		if _, err := t.render(m); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	}
	return t, nil
}

// rendered is a Message as text.
type rendered struct {
	subject, text, html, webhook string
}

func (t *templates) render(m Message) (rendered, error) {
	var r rendered
	for _, x := range []struct {
		name string
		dst  *string
	}{{"subject", &r.subject}, {"text", &r.text}, {"webhook", &r.webhook}} {
		var b bytes.Buffer
		if err := t.text.ExecuteTemplate(&b, x.name, m); err != nil {
			return r, fmt.Errorf("render %s: %w", x.name, err)
		}
		*x.dst = b.String()
	}
	var b bytes.Buffer
	if err := t.html.ExecuteTemplate(&b, "html", m); err != nil {
		return r, fmt.Errorf("render html: %w", err)
	}
	r.html = b.String()
	// A subject is one header line whatever the template made of it.
	r.subject = order.Clip(strings.Join(strings.Fields(oneline(r.subject)), " "), 200)
	return r, nil
}
