// Package retention moves old files out of drop folders into a holding folder, per watch rule
// ([rules.retention], off by default), so that drop folders do not fill up with what will never
// be imported, without ever breaking an image: files no rule claims (ignored drops), files of the
// rule's orders that failed, and the originals of preprocessed orders whose converted files are
// what OMERO links to, each after its number of days. Nothing is deleted. Before each move the
// file (and every folder above it) is checked against every ManagedRepository link the agent
// recorded (db.LinksTo) and against the orders that still need it; every move is journalled with
// its reason (db.JournalMove) before it is made. See README.md, "In-place imports and your files".
package retention

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/rules"
)

// Store is what retention needs of the order database (db.Store implements it).
type Store interface {
	List(ctx context.Context, f db.Filter) ([]db.Order, error)
	Links(ctx context.Context, uuid string) ([]db.Link, error)
	LinksTo(ctx context.Context, path string) ([]db.LinkRef, error)
	ActiveOrdersNaming(ctx context.Context, path string, folders []string) ([]string, error)
	JournalMove(ctx context.Context, m db.Move) error
}

var _ Store = (*db.Store)(nil)

// Deps are what a Retention works with. Now may be nil (time.Now).
type Deps struct {
	Store   Store
	Rules   *rules.Set
	BaseDir string // the data root: paths in the holding folder are kept relative to it
	// ProcessedFolder is the name of the converted files' folder (processed_folder); it is never
	// walked for ignored drops.
	ProcessedFolder string
	// ServerTargets, when set, are where every link of the server's in-place filesets points
	// (sorted; integrity.Checker.ServerTargets): a file they name, hold or lie below stays too.
	ServerTargets []string
	Log           *logrus.Entry
	Now           func() time.Time
}

// Retention plans and makes the moves. Create it with New.
type Retention struct {
	d   Deps
	log *logrus.Entry
}

// New checks deps; it starts nothing.
func New(d Deps) (*Retention, error) {
	if d.Store == nil || d.Rules == nil {
		return nil, errors.New("retention: a store and the rules are required")
	}
	if !filepath.IsAbs(d.BaseDir) {
		return nil, fmt.Errorf("retention: data root %q is not an absolute path", d.BaseDir)
	}
	if d.Log == nil {
		d.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Retention{d: d, log: d.Log.WithField("component", "retention")}, nil
}

// Move is one planned move.
type Move struct {
	Rule, UUID          string
	Source, Destination string
	Reason              string
}

// Kept is a file that qualified for a move but stays, and why.
type Kept struct {
	Rule, Path, Reason string
}

// Plan is what a run would do.
type Plan struct {
	Moves []Move
	Kept  []Kept
}

// Plan lists the moves of every rule with retention on, and the files kept although old enough.
func (r *Retention) Plan(ctx context.Context) (Plan, error) {
	var p Plan
	for _, c := range r.d.Rules.Rules() {
		if !c.Retention.Enabled() {
			continue
		}
		cands, err := r.candidates(ctx, c)
		if err != nil {
			return p, err
		}
		for _, m := range cands {
			if why, err := r.unsafe(ctx, c, m.Source); err != nil {
				return p, err
			} else if why != "" {
				p.Kept = append(p.Kept, Kept{Rule: c.Name, Path: m.Source, Reason: why})
				continue
			}
			m.Destination = r.destination(c, m.Source)
			if _, err := os.Lstat(m.Destination); err == nil {
				p.Kept = append(p.Kept, Kept{Rule: c.Name, Path: m.Source, Reason: "the holding folder already has " + m.Destination})
				continue
			}
			p.Moves = append(p.Moves, m)
		}
	}
	return p, nil
}

// Apply makes the planned moves. Each file is checked again right before it moves; the journal
// line is written first, and a move that then fails gets a second line saying so. It returns the
// moves made and the files kept at the last moment.
func (r *Retention) Apply(ctx context.Context, p Plan) ([]Move, []Kept, error) {
	var done []Move
	var kept []Kept
	for _, m := range p.Moves {
		c := r.rule(m.Rule)
		if c == nil {
			continue
		}
		why, err := r.unsafe(ctx, c, m.Source)
		if err != nil {
			return done, kept, err
		}
		if why != "" {
			kept = append(kept, Kept{Rule: m.Rule, Path: m.Source, Reason: why})
			continue
		}
		if err := os.MkdirAll(filepath.Dir(m.Destination), 0o755); err != nil {
			return done, kept, fmt.Errorf("create holding folder: %w", err)
		}
		if err := r.d.Store.JournalMove(ctx, db.Move{Rule: m.Rule, UUID: m.UUID, Source: m.Source, Destination: m.Destination, Reason: m.Reason}); err != nil {
			return done, kept, err
		}
		if err := rename(m.Source, m.Destination); err != nil {
			r.log.WithError(err).WithField("path", m.Source).Warn("retention move failed")
			jerr := r.d.Store.JournalMove(ctx, db.Move{Rule: m.Rule, UUID: m.UUID, Source: m.Source, Destination: "",
				Reason: "not moved: " + err.Error() + "; the file stayed where it was"})
			if jerr != nil {
				return done, kept, jerr
			}
			kept = append(kept, Kept{Rule: m.Rule, Path: m.Source, Reason: err.Error()})
			continue
		}
		r.log.WithFields(logrus.Fields{"rule": m.Rule, "path": m.Source, "to": m.Destination, "reason": m.Reason}).Info("moved to the holding folder")
		done = append(done, m)
	}
	return done, kept, nil
}

// rename moves source to destination without replacing anything, on one filesystem only: a copy
// and delete across filesystems is not done (the original would be deleted).
func rename(source, destination string) error {
	if _, err := os.Lstat(destination); err == nil {
		return fmt.Errorf("%s already exists", destination)
	}
	if err := os.Rename(source, destination); err != nil {
		var le *os.LinkError
		if errors.As(err, &le) && strings.Contains(le.Err.Error(), "cross-device") {
			return fmt.Errorf("the holding folder is on another filesystem than %s: put it on the same one", source)
		}
		return err
	}
	return nil
}

func (r *Retention) rule(name string) *rules.Compiled {
	for _, c := range r.d.Rules.Rules() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// destination keeps the file's path below the data root inside <holding>/<rule>.
func (r *Retention) destination(c *rules.Compiled, source string) string {
	rel, err := filepath.Rel(r.d.BaseDir, source)
	if err != nil || !filepath.IsLocal(rel) {
		rel = strings.TrimPrefix(source, "/")
	}
	return filepath.Join(c.Retention.HoldingFolder, c.Name, rel)
}

// unsafe says why path must stay ("" when it may move): it is not inside the rule's folder, an
// OMERO link the agent recorded points at it, below it or at a folder holding it, or an order
// that has not ended names it.
func (r *Retention) unsafe(ctx context.Context, c *rules.Compiled, path string) (string, error) {
	if !order.Below(c.Folder(), path) {
		return fmt.Sprintf("not inside the rule's folder %s", c.Folder()), nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return "cannot read it: " + err.Error(), nil
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return "it is a symlink", nil
	}
	names := []string{path}
	if real, err := filepath.EvalSymlinks(path); err == nil && real != path {
		names = append(names, real)
	}
	for _, n := range names {
		refs, err := r.d.Store.LinksTo(ctx, n)
		if err != nil {
			return "", err
		}
		if len(refs) > 0 {
			return fmt.Sprintf("OMERO links to it: order %s, link %s -> %s", refs[0].UUID, refs[0].Path, refs[0].Target), nil
		}
	}
	for _, n := range names {
		if t := linkedOnServer(r.d.ServerTargets, n); t != "" {
			return "a link of an in-place fileset on the server points at " + t, nil
		}
	}
	var folders []string
	for d := filepath.Dir(path); order.Below(c.Folder(), d); d = filepath.Dir(d) {
		folders = append(folders, d)
	}
	active, err := r.d.Store.ActiveOrdersNaming(ctx, path, folders)
	if err != nil {
		return "", err
	}
	if len(active) > 0 {
		return "order " + active[0] + " has not ended and names it", nil
	}
	return "", nil
}

// linkedOnServer returns a target of sorted that is path, lies below it, or is a folder holding
// it; "" when none.
func linkedOnServer(sorted []string, path string) string {
	if len(sorted) == 0 {
		return ""
	}
	i := sort.SearchStrings(sorted, path)
	if i < len(sorted) && order.Within(path, sorted[i]) {
		return sorted[i]
	}
	if j := sort.SearchStrings(sorted, path+"/"); j < len(sorted) && order.Below(path, sorted[j]) {
		return sorted[j]
	}
	for d := filepath.Dir(path); d != "/" && d != "."; d = filepath.Dir(d) {
		if k := sort.SearchStrings(sorted, d); k < len(sorted) && sorted[k] == d {
			return d
		}
	}
	return ""
}

// candidates lists what rule c's retention makes old enough to move, before the safety checks.
func (r *Retention) candidates(ctx context.Context, c *rules.Compiled) ([]Move, error) {
	rt, now := c.Retention, r.d.Now()
	var out []Move
	if rt.FailedDays > 0 {
		orders, err := r.d.Store.List(ctx, db.Filter{Stage: db.StageFailed})
		if err != nil {
			return nil, err
		}
		for _, o := range orders {
			if o.Source != c.Name || !o.Timestamp.Before(now.AddDate(0, 0, -rt.FailedDays)) {
				continue
			}
			reason := fmt.Sprintf("file of order %s, which failed more than %d days ago (failed_days)", o.UUID, rt.FailedDays)
			if o.Result != nil && len(o.Result.Filesets) > 0 {
				continue // part of it reached OMERO before the failure, and its links were not recorded
			}
			out = append(out, orderFiles(c, o, reason)...)
		}
	}
	if rt.OriginalsDays > 0 {
		orders, err := r.d.Store.List(ctx, db.Filter{Stage: db.StageCompleted})
		if err != nil {
			return nil, err
		}
		for _, o := range orders {
			if o.Source != c.Name || o.Preprocessing == nil || !o.Timestamp.Before(now.AddDate(0, 0, -rt.OriginalsDays)) {
				continue
			}
			links, err := r.d.Store.Links(ctx, o.UUID)
			if err != nil {
				return nil, err
			}
			if len(links) == 0 {
				continue // what OMERO links to was not recorded: nothing proves the converted files are used
			}
			reason := fmt.Sprintf("original of order %s, converted and imported more than %d days ago; OMERO links to the converted files (originals_days)", o.UUID, rt.OriginalsDays)
			out = append(out, orderFiles(c, o, reason)...)
		}
	}
	if rt.IgnoredDays > 0 {
		ignored, err := r.ignored(ctx, c, now.AddDate(0, 0, -rt.IgnoredDays))
		if err != nil {
			return nil, err
		}
		out = append(out, ignored...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Source < out[j].Source })
	return dedupe(out), nil
}

// orderFiles are the files of order o that still exist, as moves with reason.
func orderFiles(c *rules.Compiled, o db.Order, reason string) []Move {
	files, err := o.FileList()
	if err != nil {
		return nil
	}
	var out []Move
	for _, f := range files {
		f = filepath.Clean(f)
		if _, err := os.Lstat(f); err == nil {
			out = append(out, Move{Rule: c.Name, UUID: o.UUID, Source: f, Reason: reason})
		}
	}
	return out
}

func dedupe(ms []Move) []Move {
	var out []Move
	for i, m := range ms {
		if i > 0 && m.Source == ms[i-1].Source {
			continue
		}
		out = append(out, m)
	}
	return out
}

// ignored lists the files below the rule's folder that no rule claims (nor a folder above them,
// for folder units), unchanged since before cutoff. Hidden and temporary names and the processed
// folder are never walked.
func (r *Retention) ignored(ctx context.Context, c *rules.Compiled, cutoff time.Time) ([]Move, error) {
	root := c.Folder()
	var out []Move
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if p != root && (rules.IgnoredName(d.Name()) || d.Name() == r.d.ProcessedFolder) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		fi, err := d.Info()
		if err != nil || !fi.ModTime().Before(cutoff) {
			return nil
		}
		why, claimed := r.claimed(p, root)
		if claimed {
			return nil
		}
		out = append(out, Move{Rule: c.Name, Source: p,
			Reason: fmt.Sprintf("ignored drop (%s), unchanged for more than %d days (ignored_days)", why, c.Retention.IgnoredDays)})
		return nil
	})
	return out, err
}

// claimed reports whether a rule claims path or a folder above it below root; else why not.
func (r *Retention) claimed(path, root string) (string, bool) {
	_, ok, why := r.d.Rules.Match(path)
	for d := filepath.Dir(path); !ok && order.Below(root, d); d = filepath.Dir(d) {
		_, ok, _ = r.d.Rules.Match(d)
	}
	return why, ok
}
