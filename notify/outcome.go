package notify

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/integrity"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// Events a notification announces, one switch each (Config.Completed, Config.Failed,
// Config.Broken).
const (
	EventCompleted = "completed"
	EventFailed    = "failed"
	EventBroken    = "broken" // a completed in-place order whose files changed since (integrity)
)

// Outcome is what a notice carries (its payload, as JSON): the order as it ended. It is built
// from the order alone (outcomeOf), so what the order knows today is all it says: stage,
// description, files and the ids of db.Result. A richer per-file outcome stored with the order's
// result is added here, in outcomeOf, and shown by the templates.
type Outcome struct {
	UUID        string     `json:"uuid"`
	Attempt     int        `json:"attempt"`
	User        string     `json:"user"`
	Name        string     `json:"name,omitempty"`  // the requester's name, "" when unknown
	Email       string     `json:"email,omitempty"` // their address, "" when unknown
	Group       string     `json:"group"`
	TargetKind  string     `json:"target_kind"` // Dataset or Screen
	TargetID    string     `json:"target_id"`   // as the order holds it: "151" or "name:NAME"
	Event       string     `json:"event"`       // EventCompleted or EventFailed
	Description string     `json:"description,omitempty"`
	Files       []string   `json:"files"`
	Result      *db.Result `json:"result,omitempty"`
	Logs        []string   `json:"logs,omitempty"` // the order's log files on the agent's host
	FinishedAt  time.Time  `json:"finished_at"`    // when it ended; EventBroken: when the check found it
	// Damage is, for EventBroken, what happened to which file (Files are the damaged ones).
	Damage []db.Damage `json:"damage,omitempty"`
}

// brokenOutcome is the Outcome of an order the integrity check found broken (b), p its user's
// name and address (nil when unknown), now the time of the check.
func brokenOutcome(b integrity.Broken, p *omero.Person, now time.Time) Outcome {
	out := Outcome{UUID: b.UUID, User: b.User, Group: b.Group, Event: EventBroken, Damage: b.Damage,
		Result: &db.Result{Images: b.Images}, FinishedAt: now.UTC(), Files: []string{}}
	seen := map[string]bool{}
	for _, d := range b.Damage {
		if !seen[d.Target] {
			seen[d.Target] = true
			out.Files = append(out.Files, d.Target)
		}
	}
	if p != nil {
		out.Name, out.Email = p.Name(), p.Email
	}
	return out
}

// Broken reports whether the notice is of an order whose files changed after its import.
func (o Outcome) Broken() bool { return o.Event == EventBroken }

// ImageIDs are the ids of the order's images, e.g. "101, 102" ("none" when it has none).
func (o Outcome) ImageIDs() string {
	if o.Result == nil || len(o.Result.Images) == 0 {
		return "none"
	}
	ids := make([]string, len(o.Result.Images))
	for i, id := range o.Result.Images {
		ids[i] = strconv.FormatInt(id, 10)
	}
	return strings.Join(ids, ", ")
}

// Summary says in a few words what happened to a broken order's files, e.g. "2 deleted, 1 moved".
func (o Outcome) Summary() string { return integrity.Broken{Damage: o.Damage}.Summary() }

// Repairable reports whether a damaged file of a broken order was found elsewhere: `omero-adi
// integrity --repair` can then re-point its link.
func (o Outcome) Repairable() bool {
	for _, d := range o.Damage {
		if d.MovedTo != "" {
			return true
		}
	}
	return false
}

// outcomeOf is the Outcome of o (with its final stage, description and result), p its user's
// name and address (nil when unknown) and logs its log files.
func outcomeOf(o db.Order, p *omero.Person, logs []string, now time.Time) Outcome {
	out := Outcome{UUID: o.UUID, Attempt: o.Attempt, User: o.User, Group: o.Group, TargetKind: o.DestinationType,
		TargetID: o.DestinationID, Event: eventOf(o.Stage), Description: o.Description, Result: o.Result,
		Logs: logs, FinishedAt: now.UTC()}
	if files, err := o.FileList(); err == nil {
		out.Files = files
	} else {
		out.Files = []string{o.Files}
	}
	if p != nil {
		out.Name, out.Email = p.Name(), p.Email
	}
	return out
}

func eventOf(stage string) string {
	switch stage {
	case db.StageCompleted:
		return EventCompleted
	case db.StageFailed:
		return EventFailed
	}
	return ""
}

// Completed reports whether the order ended Import Completed.
func (o Outcome) Completed() bool { return o.Event == EventCompleted }

// Target names the destination, e.g. "Dataset 151" or "Screen named \"plates\"".
func (o Outcome) Target() string {
	if name, ok := strings.CutPrefix(o.TargetID, "name:"); ok {
		return fmt.Sprintf("%s named %q", o.TargetKind, name)
	}
	return o.TargetKind + " " + o.TargetID
}

// Title is a short name of the order for a subject: its first file's name, and how many more.
func (o Outcome) Title() string {
	if len(o.Files) == 0 {
		return o.UUID
	}
	first := o.Files[0]
	if i := strings.LastIndex(strings.TrimRight(first, "/"), "/"); i >= 0 {
		first = strings.TrimRight(first, "/")[i+1:]
	}
	if len(o.Files) > 1 {
		return fmt.Sprintf("%s and %d more", first, len(o.Files)-1)
	}
	return first
}

// safeWord matches a value that needs no quoting in a shell or SQL line.
var safeWord = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// RetryCommand is how an admin retries the order on the agent's host.
func (o Outcome) RetryCommand() string {
	id := o.UUID
	if !safeWord.MatchString(id) {
		id = "'" + strings.ReplaceAll(id, "'", `'"'"'`) + "'"
	}
	return "omero-adi orders retry " + id
}

// RetrySQL is the documented retry in the orders database.
func (o Outcome) RetrySQL() string {
	return "UPDATE imports SET stage = 'Import Pending' WHERE uuid = '" + strings.ReplaceAll(o.UUID, "'", "''") + "';"
}

// Link is a labelled URL into OMERO.web.
type Link struct {
	Label, URL string
}

// maxShown bounds how many images one link selects; more are reached through their dataset.
const maxShown = 100

// Links are the OMERO.web links of the order (omero.ShowURL: its images, plates, and its dataset or
// screen), built on webclient; none without it.
func (o Outcome) Links(webclient string) []Link {
	if webclient == "" {
		return nil
	}
	show := func(items ...string) string { return omero.ShowURL(webclient, items...) }
	var out []Link
	if r := o.Result; r != nil {
		if n := len(r.Images); n > 0 && n <= maxShown && len(r.Plates) == 0 {
			items := make([]string, n)
			for i, id := range r.Images {
				items[i] = "image-" + strconv.FormatInt(id, 10)
			}
			out = append(out, Link{Label: plural(n, "image"), URL: show(items...)})
		}
		for _, id := range r.Plates {
			out = append(out, Link{Label: "plate " + strconv.FormatInt(id, 10), URL: show("plate-" + strconv.FormatInt(id, 10))})
		}
	}
	if id, err := strconv.ParseInt(o.TargetID, 10, 64); err == nil && id > 0 {
		kind := strings.ToLower(o.TargetKind)
		if kind == "dataset" || kind == "screen" {
			out = append(out, Link{Label: o.Target(), URL: show(kind + "-" + strconv.FormatInt(id, 10))})
		}
	}
	return out
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
