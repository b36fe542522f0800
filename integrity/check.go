// Package integrity checks that what OMERO links to after an in-place (ln_s) import is still
// there: for every completed order with recorded links (db.Link, written by the runner after the
// import and the redirect), each ManagedRepository link exists, still points where it did, and its
// target exists with the recorded kind, size and time; optionally the target's SHA-1 is compared
// with the OriginalFile hash OMERO recorded at import, read through runner/omero. A broken order
// is described (moved, renamed, deleted, truncated, replaced, repointed, unlinked), stored with
// the order (db.SetIntegrity) and handed to an optional Reporter; a target that moved within its
// data root is looked for by name and size, and Repair re-points a link only to a proven match.
// The agent runs the check periodically (Checker.Run); `omero-adi integrity` runs it once. See
// README.md, "In-place imports and your files".
package integrity

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// Kinds of damage (db.Damage.Kind).
const (
	Moved     = "moved"      // the target is gone; a file of the same name and size is elsewhere in its root
	Renamed   = "renamed"    // the target is gone; a file of the same size and time is in its folder
	Deleted   = "deleted"    // the target is gone, nothing like it found
	Truncated = "truncated"  // the target is smaller than at import
	Replaced  = "replaced"   // the target is another file now (other size, kind or time, or content with hashing)
	Repointed = "repointed"  // the link points somewhere else than the agent recorded
	Unlinked  = "unlinked"   // the link itself is gone from the ManagedRepository
	Unread    = "unreadable" // the target or link cannot be read (permissions, I/O)
)

// Store is what the check needs of the order database (db.Store implements it).
type Store interface {
	LinkedOrders(ctx context.Context, f db.LinkedFilter) ([]db.LinkedOrder, error)
	Links(ctx context.Context, uuid string) ([]db.Link, error)
	CountLinks(ctx context.Context) (int, error)
	Integrities(ctx context.Context, uuids []string) (map[string]db.Integrity, error)
	SetIntegrities(ctx context.Context, ins []db.Integrity, notices []db.Notice) error
	RepointLink(ctx context.Context, uuid string, l db.Link) error
}

var _ Store = (*db.Store)(nil)

// OMERO is what hashing needs of the CLI adapter (*omero.Client implements it): a session as the
// order's user in its group, the OriginalFiles of its filesets, and the logout.
type OMERO interface {
	Login(ctx context.Context, orderUUID, user, group string) (*omero.Session, error)
	OriginalFiles(ctx context.Context, s *omero.Session, filesetIDs []int64) ([]omero.OriginalFile, int, error)
	InPlaceFiles(ctx context.Context, s *omero.Session, offset, limit int) ([]omero.ServerFile, error)
	Close(ctx context.Context, s *omero.Session)
}

var _ OMERO = (*omero.Client)(nil)

// Reporter turns every order that a check found broken, or broken differently than at its
// previous check (Broken.New), into the notices (outbox rows) that report it; they are written
// with the check's outcome, in its transaction, so that a report is neither lost nor written
// twice (notify.Notifier implements it; the agent plugs it in here; see README.md).
type Reporter interface {
	Broken(b Broken) []db.Notice
}

// ReporterFunc adapts a function to Reporter.
type ReporterFunc func(b Broken) []db.Notice

// Broken implements Reporter.
func (f ReporterFunc) Broken(b Broken) []db.Notice { return f(b) }

// Deps are the Checker's collaborators. OMERO may be nil (no hashing, no repair proofs); Reporter
// and Registerer may be nil.
type Deps struct {
	Store       Store
	OMERO       OMERO
	AdminUser   string // the admin whose session reads every group's filesets (--all-filesets)
	Reporter    Reporter
	ManagedRepo string      // the ManagedRepository as this host sees it
	Roots       order.Roots // where a moved target is looked for: the data root (or group root) holding it
	Log         *logrus.Entry
	Registerer  prometheus.Registerer
}

// Checker checks recorded links. Create it with New.
type Checker struct {
	cfg Config
	d   Deps
	log *logrus.Entry
	m   *metrics

	hashAfter string // sample hashing resumes after this order in the next run
}

// New validates cfg and deps; it starts nothing.
func New(cfg Config, d Deps) (*Checker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("integrity: %w", err)
	}
	if d.Store == nil {
		return nil, errors.New("integrity: a store is required")
	}
	if !filepath.IsAbs(d.ManagedRepo) {
		return nil, fmt.Errorf("integrity: ManagedRepository %q is not an absolute path", d.ManagedRepo)
	}
	if d.Log == nil {
		d.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	m, err := newMetrics(d.Registerer)
	if err != nil {
		return nil, fmt.Errorf("integrity: register metrics: %w", err)
	}
	return &Checker{cfg: cfg, d: d, log: d.Log.WithField("component", "integrity"), m: m}, nil
}

// Options shape one check.
type Options struct {
	Since        time.Time // only orders finished at or after Since (zero: all)
	Hash         string    // HashNone, HashSample or HashAll
	Sample       int       // with HashSample: orders hashed
	MaxCLIStarts int       // CLI starts allowed for reading checksums
	Rate         int       // files looked at per second; 0: as fast as possible
	Repair       bool      // re-point links to proven matches of moved targets
	DryRun       bool      // with Repair: only list what would be re-pointed
	// AllFilesets also checks the links of every in-place fileset of the server (other
	// importers' too), within what is left of MaxCLIStarts; damage goes to FoundServer.
	AllFilesets bool
	FoundServer func(ServerDamage)
}

// Broken is an order with damaged links.
type Broken struct {
	UUID   string
	Group  string
	User   string
	Images []int64
	Damage []db.Damage
	New    bool // not broken, or broken differently, at the previous check
}

// Summary says in one line what happened to the order's files, e.g. "2 deleted, 1 moved".
func (b Broken) Summary() string {
	n := map[string]int{}
	var kinds []string
	for _, d := range b.Damage {
		if n[d.Kind] == 0 {
			kinds = append(kinds, d.Kind)
		}
		n[d.Kind]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", n[k], k)
	}
	return strings.Join(parts, ", ")
}

// Line is the order in one line, for people (the command's output, notifications): its uuid, its
// image ids, and what happened to each damaged link's file.
func (b Broken) Line() string {
	ids := make([]string, len(b.Images))
	for i, id := range b.Images {
		ids[i] = strconv.FormatInt(id, 10)
	}
	if len(ids) == 0 {
		ids = []string{"none"}
	}
	parts := make([]string, len(b.Damage))
	for i, d := range b.Damage {
		parts[i] = Describe(d)
	}
	return fmt.Sprintf("%s images %s: %s: %s", b.UUID, strings.Join(ids, ","), b.Summary(), strings.Join(parts, "; "))
}

// Describe is one damaged link for people: the file, what happened to it, and what to do.
func Describe(d db.Damage) string {
	if d.MovedTo != "" {
		return fmt.Sprintf("%s %s to %s", d.Target, d.Kind, d.MovedTo)
	}
	return fmt.Sprintf("%s %s: %s", d.Target, d.Kind, d.Detail)
}

// Repair is one link Repair re-pointed (or, with DryRun or a refusal, would have).
type Repair struct {
	UUID, Link, From, To string
	Done                 bool
	Refused              string // why the link was left alone; "" when it was (or would be) re-pointed
}

// Report is the outcome of one check.
type Report struct {
	Orders, Links, Broken int
	Hashed                int // files whose SHA-1 was compared
	CLIStarts             int
	// With AllFilesets: the server's in-place files looked at, those damaged, and whether every
	// page was read within the CLI budget.
	ServerFiles, ServerBroken int
	ServerComplete            bool
	Repairs                   []Repair
	Duration                  time.Duration
}

// Check checks every completed order with recorded links (see Options), stores each order's
// outcome and calls found (if not nil) for each broken order, as it is found. Memory does not grow
// with the number of orders: they are read a page at a time, their links one order at a time.
func (c *Checker) Check(ctx context.Context, opts Options, found func(Broken)) (Report, error) {
	start := time.Now()
	var rep Report
	r := &run{c: c, opts: opts, rep: &rep, pace: newPacer(opts.Rate)}
	after := ""
	for {
		page, err := c.d.Store.LinkedOrders(ctx, db.LinkedFilter{Since: opts.Since, After: after, Limit: orderPage})
		if err != nil {
			return rep, err
		}
		if err := r.page(ctx, page, found); err != nil {
			return rep, err
		}
		if len(page) < orderPage {
			break
		}
		after = page[len(page)-1].UUID
	}
	if opts.AllFilesets {
		if err := r.checkServer(ctx, opts.FoundServer); err != nil {
			return rep, err
		}
	}
	if opts.Hash == HashSample && r.sampled < opts.Sample {
		c.hashAfter = "" // the turn went round: the next run starts from the first order
	}
	rep.Duration = time.Since(start)
	c.m.record(rep)
	return rep, nil
}

// orderPage is how many orders one read of the store returns.
const orderPage = 500

// run is the state of one Check.
type run struct {
	c       *Checker
	opts    Options
	rep     *Report
	pace    *pacer
	sampled int
}

// page checks a page of orders and stores their outcomes, with the Reporter's notices of the
// newly broken ones, in one write; then the broken ones go to found.
func (r *run) page(ctx context.Context, page []db.LinkedOrder, found func(Broken)) error {
	outcomes := make([]db.Integrity, len(page))
	uuids := make([]string, len(page))
	pctx, stop := context.WithCancel(ctx)
	defer stop() // ends the prefetch when the page stops early
	next := r.prefetch(pctx, page)
	for i, o := range page {
		ld := <-next
		if ld.err != nil {
			return ld.err
		}
		in, err := r.order(ctx, o, ld.links)
		if err != nil {
			return err
		}
		outcomes[i], uuids[i] = in, o.UUID
	}
	prev, err := r.c.d.Store.Integrities(ctx, uuids)
	if err != nil {
		return err
	}
	var broken []Broken
	var notices []db.Notice
	for i, in := range outcomes {
		if !in.Broken {
			continue
		}
		o := page[i]
		p, seen := prev[o.UUID]
		b := Broken{UUID: o.UUID, Group: o.Group, User: o.User, Images: o.Images, Damage: in.Damage,
			New: !seen || !p.Broken || !sameDamage(p.Damage, in.Damage)}
		broken = append(broken, b)
		if b.New && r.c.d.Reporter != nil {
			for _, nt := range r.c.d.Reporter.Broken(b) {
				nt.UUID = b.UUID
				notices = append(notices, nt)
			}
		}
	}
	if err := r.c.d.Store.SetIntegrities(ctx, outcomes, notices); err != nil {
		return err
	}
	for _, b := range broken {
		r.rep.Broken++
		if found != nil {
			found(b)
		}
	}
	return nil
}

// loaded is the links of one order, read ahead.
type loaded struct {
	links []db.Link
	err   error
}

// prefetch reads the links of the page's orders, in order, a couple of orders ahead of the check,
// so that the database and the filesystem work at the same time. It stops at the first error
// (sent) or when ctx ends.
func (r *run) prefetch(ctx context.Context, page []db.LinkedOrder) <-chan loaded {
	ch := make(chan loaded, 2)
	go func() {
		for _, o := range page {
			links, err := r.c.d.Store.Links(ctx, o.UUID)
			select {
			case ch <- loaded{links, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// order checks one order's links and repairs them when asked.
func (r *run) order(ctx context.Context, o db.LinkedOrder, links []db.Link) (db.Integrity, error) {
	var err error
	r.rep.Orders++
	r.rep.Links += len(links)
	damage, err := r.inspect(ctx, links)
	if err != nil {
		return db.Integrity{}, err
	}
	var originals map[string]omero.OriginalFile
	if r.hashes(o) || (r.opts.Repair && repairable(damage)) {
		originals = r.originals(ctx, o, links)
	}
	if originals != nil {
		damage = append(damage, r.compare(ctx, links, damage, originals)...)
	}
	if r.opts.Repair && originals != nil && repairable(damage) {
		if damage, err = r.repair(ctx, o.UUID, links, damage, originals); err != nil {
			return db.Integrity{}, err
		}
	}
	sort.Slice(damage, func(i, j int) bool { return damage[i].Link < damage[j].Link })
	return db.Integrity{UUID: o.UUID, Links: len(links), Broken: len(damage) > 0, Damage: damage}, nil
}

func sameDamage(a, b []db.Damage) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Link != b[i].Link || a[i].Kind != b[i].Kind {
			return false
		}
	}
	return true
}

// inspect looks at every link of an order and describes what changed; moved targets are looked
// for afterwards, once per order.
func (r *run) inspect(ctx context.Context, links []db.Link) ([]db.Damage, error) {
	found := make([]*db.Damage, len(links))
	if r.pace.every == 0 && len(links) >= 2*statWorkers {
		// Unpaced (the command): a few stats at once, as the filesystem (a share above all)
		// answers each with a wait.
		var wg sync.WaitGroup
		for w := 0; w < statWorkers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := w; i < len(links); i += statWorkers {
					found[i] = inspectLink(links[i])
				}
			}(w)
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	} else {
		for i, l := range links {
			if err := r.pace.wait(ctx); err != nil {
				return nil, err
			}
			found[i] = inspectLink(l)
		}
	}
	var damage []db.Damage
	var missing []int // indexes into damage of deleted targets
	for _, d := range found {
		if d == nil {
			continue
		}
		if d.Kind == Deleted {
			missing = append(missing, len(damage))
		}
		damage = append(damage, *d)
	}
	if len(missing) > 0 {
		if err := r.findMoved(ctx, links, damage, missing); err != nil {
			return nil, err
		}
	}
	return damage, nil
}

// statWorkers is how many links an unpaced check looks at at once.
const statWorkers = 4

// inspectLink compares one link and its target with what was recorded; nil when nothing changed.
// One stat through the link that finds the recorded file (device, inode, kind, size and time)
// answers for an intact link; anything else is looked at closely.
func inspectLink(l db.Link) *db.Damage {
	if l.Ino != 0 {
		if fi, err := os.Stat(l.Path); err == nil && unchanged(fi, l) {
			return nil
		}
	}
	dmg := func(kind, format string, args ...any) *db.Damage {
		return &db.Damage{Link: l.Path, Target: l.Target, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	now, err := redirect.ReadLink(l.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dmg(Unlinked, "the link in the ManagedRepository is gone; the image cannot open; ask the OMERO admin to restore it")
	case errors.Is(err, syscall.EINVAL):
		return dmg(Replaced, "the link in the ManagedRepository was replaced by a plain file or folder")
	case err != nil:
		return dmg(Unread, "cannot read the link: %v", err)
	case now != l.Target:
		return dmg(Repointed, "the link points at %s now, not at %s as at import", now, l.Target)
	}
	fi, err := os.Stat(l.Target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dmg(Deleted, "the file is gone (deleted, or moved or renamed out of sight); put it back at %s", l.Target)
	case err != nil:
		return dmg(Unread, "cannot read the file: %v", err)
	case fi.IsDir() != l.Dir:
		return dmg(Replaced, "a %s stands where the %s was", kind(fi.IsDir()), kind(l.Dir))
	case l.Dir:
		return nil // a folder's size and time change with its contents; its files have links of their own
	case fi.Size() < l.Size:
		return dmg(Truncated, "the file has %d bytes, %d at import; restore it from a backup", fi.Size(), l.Size)
	case fi.Size() != l.Size:
		return dmg(Replaced, "the file has %d bytes, %d at import; restore the original", fi.Size(), l.Size)
	case !fi.ModTime().Equal(l.ModTime):
		return dmg(Replaced, "the file was written at %s, after the import (%s), with the same size; restore the original "+
			"(`omero-adi integrity --hash all` compares its content with OMERO's checksum)",
			fi.ModTime().UTC().Format(time.RFC3339), l.ModTime.UTC().Format(time.RFC3339))
	}
	return nil
}

// unchanged reports whether fi is the recorded target as it was.
func unchanged(fi fs.FileInfo, l db.Link) bool {
	dev, ino := redirect.FileID(fi)
	if dev != l.Dev || ino != l.Ino || fi.IsDir() != l.Dir {
		return false
	}
	return l.Dir || (fi.Size() == l.Size && fi.ModTime().Equal(l.ModTime))
}

func kind(dir bool) string {
	if dir {
		return "folder"
	}
	return "file"
}

// findMoved looks, for each deleted target (damage[i] for i in missing), for a file of the same
// name and size in the data root that held it (moved), or of the same size and time in its old
// folder (renamed). A single match is named in MovedTo; several are named in the detail only.
func (r *run) findMoved(ctx context.Context, links []db.Link, damage []db.Damage, missing []int) error {
	rec := map[string]db.Link{}
	for _, l := range links {
		rec[l.Path] = l
	}
	byRoot := map[string][]int{}
	for _, i := range missing {
		if root := r.c.root(damage[i].Target); root != "" && !rec[damage[i].Link].Dir {
			byRoot[root] = append(byRoot[root], i)
		}
	}
	for root, idx := range byRoot {
		found := map[int][]string{}
		renamed := map[int][]string{}
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // an unreadable folder holds no candidate we could prove
			}
			if !d.Type().IsRegular() {
				return ctx.Err()
			}
			for _, i := range idx {
				l := rec[damage[i].Link]
				sameName, sameDir := d.Name() == filepath.Base(l.Target), filepath.Dir(p) == filepath.Dir(l.Target)
				if !sameName && !sameDir {
					continue
				}
				if err := r.pace.wait(ctx); err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil || fi.Size() != l.Size {
					continue
				}
				switch {
				case sameName:
					found[i] = append(found[i], p)
				case fi.ModTime().Equal(l.ModTime):
					renamed[i] = append(renamed[i], p)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, i := range idx {
			describeMove(&damage[i], found[i], renamed[i])
		}
	}
	return nil
}

func describeMove(d *db.Damage, moved, renamed []string) {
	kind, cands := Moved, moved
	if len(cands) == 0 {
		kind, cands = Renamed, renamed
	}
	switch {
	case len(cands) == 1:
		d.Kind, d.MovedTo = kind, cands[0]
		d.Detail = fmt.Sprintf("the file is gone from %s; a file of the same size is at %s: move it back, or run "+
			"`omero-adi integrity --repair` to re-point the link once OMERO's checksum proves it is the same file", d.Target, cands[0])
	case len(cands) > 1:
		d.Kind = kind
		d.Detail = fmt.Sprintf("the file is gone from %s; %d files of the same size could be it (%s): move the right one back",
			d.Target, len(cands), strings.Join(first(cands, 3), ", "))
	}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], "…")
	}
	return s
}

// root is the deepest data root (a group root or base_dir) holding path, "" when none.
func (c *Checker) root(path string) string {
	best := ""
	consider := func(r string) {
		if r != "" && order.Within(r, path) && len(r) > len(best) {
			best = r
		}
	}
	consider(c.d.Roots.BaseDir)
	for _, roots := range c.d.Roots.Groups {
		for _, r := range roots {
			consider(r)
		}
	}
	return best
}

// hashes reports whether this order's files are compared with OMERO's checksums in this run.
func (r *run) hashes(o db.LinkedOrder) bool {
	switch r.opts.Hash {
	case HashAll:
		return true
	case HashSample:
		if r.sampled >= r.opts.Sample || o.UUID <= r.c.hashAfter {
			return false
		}
		r.sampled++
		r.c.hashAfter = o.UUID
		return true
	}
	return false
}

// originals reads what OMERO recorded of the order's files, keyed by path below the
// ManagedRepository, within the run's CLI budget; nil when it cannot (logged).
func (r *run) originals(ctx context.Context, o db.LinkedOrder, links []db.Link) map[string]omero.OriginalFile {
	log := r.c.log.WithField("order", o.UUID)
	if r.c.d.OMERO == nil {
		return nil
	}
	if r.rep.CLIStarts+3 > r.opts.MaxCLIStarts {
		log.Debug("checksums not read: the run's CLI budget (max_cli_starts) is spent")
		return nil
	}
	seen := map[int64]bool{}
	var ids []int64
	for _, l := range links {
		if l.FilesetID > 0 && !seen[l.FilesetID] {
			seen[l.FilesetID] = true
			ids = append(ids, l.FilesetID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	s, err := r.c.d.OMERO.Login(ctx, o.UUID, o.User, o.Group)
	r.rep.CLIStarts++
	if err != nil {
		log.WithError(err).Warn("read checksums: log in")
		return nil
	}
	files, starts, err := r.c.d.OMERO.OriginalFiles(ctx, s, ids)
	r.c.d.OMERO.Close(ctx, s)
	r.rep.CLIStarts += starts + 1
	if err != nil {
		log.WithError(err).Warn("read checksums")
		return nil
	}
	out := make(map[string]omero.OriginalFile, len(files))
	for _, f := range files {
		out[f.Path] = f
	}
	return out
}

// sha1Hasher names OMERO's SHA-1 checksum algorithm (ome/omero-blitz ChecksumAlgorithm SHA1-160).
const sha1Hasher = "SHA1-160"

// compare hashes every intact-looking file link whose OriginalFile has a SHA-1 and describes a
// mismatch.
func (r *run) compare(ctx context.Context, links []db.Link, damage []db.Damage, originals map[string]omero.OriginalFile) []db.Damage {
	hurt := map[string]bool{}
	for _, d := range damage {
		hurt[d.Link] = true
	}
	var out []db.Damage
	for _, l := range links {
		if hurt[l.Path] || l.Dir || ctx.Err() != nil {
			continue
		}
		of, ok := originals[r.c.repoPath(l.Path)]
		if !ok || of.Hasher != sha1Hasher || of.Hash == "" {
			continue
		}
		sum, err := sha1Of(l.Target)
		r.rep.Hashed++
		switch {
		case err != nil:
			out = append(out, db.Damage{Link: l.Path, Target: l.Target, Kind: Unread, Detail: fmt.Sprintf("cannot read the file: %v", err)})
		case !strings.EqualFold(sum, of.Hash):
			out = append(out, db.Damage{Link: l.Path, Target: l.Target, Kind: Replaced,
				Detail: "the file's content differs from the SHA-1 OMERO recorded at import (same size); restore the original"})
		}
	}
	return out
}

// repoPath is a link's path below the ManagedRepository (OriginalFile path + name).
func (c *Checker) repoPath(link string) string {
	rel, err := filepath.Rel(c.d.ManagedRepo, link)
	if err != nil {
		return ""
	}
	return filepath.ToSlash(rel)
}

func sha1Of(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha1.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// paceSleep is the least a pacer sleeps: it lets work pile up to this much ahead of the pace and
// then sleeps it off, so that a slow check wakes up a few times a second, not once a file.
const paceSleep = 100 * time.Millisecond

// pacer spaces out the files a check looks at: at most rate per second on average (0: no limit).
type pacer struct {
	every time.Duration
	next  time.Time
}

func newPacer(rate int) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{every: time.Second / time.Duration(rate)}
}

func (p *pacer) wait(ctx context.Context) error {
	if p.every == 0 {
		return ctx.Err()
	}
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	d := p.next.Sub(now)
	p.next = p.next.Add(p.every)
	if d < paceSleep {
		return ctx.Err()
	}
	return retry.Sleep(ctx, d)
}
