package web

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// The views are what both the pages and the API show: the templates render them, the API
// encodes them.

// who is the signed-in person as the pages and GET /api/* show them.
type who struct {
	User    string   `json:"user"`
	Admin   bool     `json:"admin"`
	OwnerOf []string `json:"owner_of"`
}

func whoView(v *session) who {
	return who{User: v.user, Admin: v.admin, OwnerOf: append([]string{}, v.ownerOf...)}
}

// summary is one order in a listing.
type summary struct {
	UUID            string    `json:"uuid"`
	Stage           string    `json:"stage"`
	Group           string    `json:"group"`
	User            string    `json:"user"`
	DestinationType string    `json:"destination_type"`
	DestinationID   string    `json:"destination_id"`
	FileCount       int       `json:"file_count"`
	FirstFiles      []string  `json:"first_files"` // the base names of the first few files
	Created         time.Time `json:"created"`
	Updated         time.Time `json:"updated"`
	// DurationSeconds: creation to the end for a finished order, to now for an open one.
	DurationSeconds float64 `json:"duration_seconds"`
	CancelRequested bool    `json:"cancel_requested"`
	Age             string  `json:"-"`
	Duration        string  `json:"-"`
	StageClass      string  `json:"-"`
}

// firstFiles is how many file names a listing shows.
const firstFiles = 3

func files(o db.Order) []string {
	list, err := o.FileList()
	if err != nil || list == nil {
		if o.Files == "" {
			return []string{}
		}
		return []string{o.Files} // a hand-written row that is not a JSON list: shown as it is
	}
	return list
}

func finished(stage string) bool {
	return stage == db.StageCompleted || stage == db.StageFailed || stage == db.StageCancelled
}

func (s *Server) summaryOf(l db.Listed, now time.Time) summary {
	o := l.Order
	fl := files(o)
	first := make([]string, 0, firstFiles)
	for _, f := range fl[:min(len(fl), firstFiles)] {
		first = append(first, s.scrub(path.Base(f)))
	}
	end := now
	if finished(o.Stage) {
		end = o.Timestamp
	}
	dur := max(end.Sub(l.Created), 0)
	return summary{
		UUID: o.UUID, Stage: o.Stage, Group: s.scrub(o.Group), User: s.scrub(o.User), DestinationType: o.DestinationType,
		DestinationID: s.scrub(o.DestinationID), FileCount: len(fl), FirstFiles: first, Created: l.Created, Updated: o.Timestamp,
		DurationSeconds: dur.Seconds(), CancelRequested: o.CancelRequested,
		Age: human(now.Sub(l.Created)), Duration: human(dur), StageClass: stageClass(o.Stage),
	}
}

// human is a duration as a person reads it: "45 s", "12 min", "3 h 5 min", "2 days".
func human(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// stageClass is the CSS class of a stage.
func stageClass(stage string) string {
	return strings.ToLower(strings.TrimPrefix(stage, "Import "))
}

// detail is one order: everything `orders show` prints, with links into OMERO.web, what the
// person may do, and for admins the CLI logs.
type detail struct {
	summary
	Source          string               `json:"source"`
	Attempt         int                  `json:"attempt"`
	Files           []string             `json:"files"`
	Description     string               `json:"description"`
	Preprocessing   *order.Preprocessing `json:"preprocessing"`
	Result          *db.Result           `json:"result"`
	ImportOptions   *string              `json:"import_options"`
	History         []event              `json:"history"`
	Links           []link               `json:"links"` // the destination and the created objects in OMERO.web
	CanRetry        bool                 `json:"can_retry"`
	CanCancel       bool                 `json:"can_cancel"`
	LeaseOwner      string               `json:"lease_owner,omitempty"`
	Logs            *logs                `json:"logs,omitempty"` // admins only
	PreprocessParam []string             `json:"-"`
}

type event struct {
	Stage       string    `json:"stage"`
	At          time.Time `json:"at"`
	Worker      string    `json:"worker"`
	Description string    `json:"description"`
	When        string    `json:"-"`
}

type link struct {
	Kind string `json:"kind"` // Dataset, Screen, Image, Plate, Fileset
	ID   int64  `json:"id"`
	URL  string `json:"url,omitempty"` // "" without webclient_url
}

type logs struct {
	LogFile  string `json:"log_file"`
	ErrsFile string `json:"errs_file"`
	ErrsTail string `json:"errs_tail"`
}

// webclient is the OMERO.web address that shows object kind:id ("" without webclient_url).
func (s *Server) webclient(kind string, id int64) string {
	return omero.ShowURL(s.cfg.WebclientURL, strings.ToLower(kind)+"-"+strconv.FormatInt(id, 10))
}

func (s *Server) detailOf(v *session, o db.Order, created time.Time, hist []db.Event, now time.Time) detail {
	if created.IsZero() {
		created = o.Timestamp
	}
	d := detail{
		summary: s.summaryOf(db.Listed{Order: o, Created: created}, now),
		Source:  s.scrub(o.Source), Attempt: o.Attempt, Description: s.scrub(o.Description),
		Preprocessing: o.Preprocessing, Result: o.Result, LeaseOwner: o.LeaseOwner, History: []event{}, Links: []link{},
	}
	for _, f := range files(o) {
		d.Files = append(d.Files, s.scrub(f))
	}
	if o.HasImportOptions {
		opts := s.scrub(o.ImportOptions)
		d.ImportOptions = &opts
	}
	for _, h := range hist {
		d.History = append(d.History, event{Stage: h.Stage, At: h.At, Worker: s.scrub(h.Worker), Description: s.scrub(h.Description),
			When: h.At.Local().Format("2006-01-02 15:04:05")})
	}
	if id, err := strconv.ParseInt(o.DestinationID, 10, 64); err == nil && id > 0 {
		d.Links = append(d.Links, link{Kind: o.DestinationType, ID: id, URL: s.webclient(o.DestinationType, id)})
	}
	if r := o.Result; r != nil {
		for _, id := range r.Images {
			d.Links = append(d.Links, link{Kind: "Image", ID: id, URL: s.webclient("image", id)})
		}
		for _, id := range r.Plates {
			d.Links = append(d.Links, link{Kind: "Plate", ID: id, URL: s.webclient("plate", id)})
		}
		for _, id := range r.Filesets {
			d.Links = append(d.Links, link{Kind: "Fileset", ID: id})
		}
	}
	if p := o.Preprocessing; p != nil {
		for k, val := range p.ExtraParams {
			d.PreprocessParam = append(d.PreprocessParam, "--"+k+" "+val)
		}
	}
	if v.canAct(o) {
		d.CanRetry = o.Stage == db.StageFailed || o.Stage == db.StageCancelled
		d.CanCancel = !finished(o.Stage) && !o.CancelRequested
	}
	if v.admin && s.d.LogFiles != nil {
		lf, ef := s.d.LogFiles(o.UUID)
		d.Logs = &logs{LogFile: lf, ErrsFile: ef}
		if s.d.ErrsTail != nil {
			d.Logs.ErrsTail = s.scrub(s.d.ErrsTail(o.UUID))
		}
	}
	return d
}

// stages are the stage filter's choices: the short name and the stage.
var stages = []struct{ Short, Stage string }{
	{"pending", db.StagePending}, {"started", db.StageStarted}, {"preprocessing", db.StagePreprocessing},
	{"completed", db.StageCompleted}, {"failed", db.StageFailed}, {"cancelled", db.StageCancelled},
}

// stageName accepts a stage or its short form ("failed"), as `orders list --stage` does.
func stageName(v string) (string, bool) {
	if v == "" {
		return "", true
	}
	for _, st := range stages {
		if strings.EqualFold(v, st.Short) || strings.EqualFold(v, st.Stage) {
			return st.Stage, true
		}
	}
	return "", false
}
