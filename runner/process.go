package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/fspath"
	"github.com/omero-adi/omero-adi/runner/child"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// Importer is what the runner needs of the OMERO CLI adapter (omero.Client implements it).
type Importer interface {
	Login(ctx context.Context, orderUUID, user, group string) (*omero.Session, error)
	Close(ctx context.Context, s *omero.Session)
	ImportArgs(s *omero.Session, req omero.ImportRequest) []string
	Import(ctx context.Context, s *omero.Session, req omero.ImportRequest) (omero.ImportResult, error)
	Prepare(ctx context.Context, s *omero.Session, filesetIDs []int64, ns string, targets []string) (omero.Prepared, error)
	Finish(ctx context.Context, s *omero.Session, w omero.Write) error
}

// Preprocessor runs an order's preprocessing container (preprocess.Runner implements it).
type Preprocessor interface {
	Run(ctx context.Context, spec preprocess.Spec, files []string) (preprocess.Result, error)
	Command(spec preprocess.Spec, file string) []string
	RemoveTemp(tmpDir string) error
}

var (
	_ Importer     = (*omero.Client)(nil)
	_ Preprocessor = (*preprocess.Runner)(nil)
)

// Causes of an order's context ending early.
var (
	errLeaseLost       = errors.New("lease lost")
	errCancelRequested = errors.New("cancel requested")
)

// failure is an outcome that ends the order Import Failed with a description for people.
// imported marks a failure after the images reached OMERO, where a retry would import them again.
type failure struct {
	desc     string
	imported bool
}

func (f *failure) Error() string { return f.desc }

func failf(format string, args ...any) error { return &failure{desc: fmt.Sprintf(format, args...)} }

// writeTimeout bounds one try of a database write of an order.
const writeTimeout = 15 * time.Second

// maxWriteBackoff bounds the wait between tries of an order's final writes while the database is
// away, so the outcome lands soon after it is back (well within one lease).
const maxWriteBackoff = 2 * time.Second

// outcome is what a running order has to leave in the database besides its stage: the ids its
// import created and history events that could not be written when they happened (database away).
// The final writes carry what is still unsaved.
type outcome struct {
	result  db.Result
	unsaved bool // result not stored yet
	events  []pendingEvent
}

type pendingEvent struct{ stage, desc string }

// process runs one claimed order to its end and records the outcome. While the database is away
// the outcome is kept and written once it answers again. If the order's lease was lost (recovery
// or another worker owns it now) the stage is not written; an import that reached OMERO says so in
// the order's history.
func (r *Runner) process(work context.Context, o db.Order) {
	start := time.Now()
	log := r.log.WithFields(logrus.Fields{"order": o.UUID, "user": o.User, "group": o.Group})
	log.WithField("attempt", o.Attempt).Info("order claimed")
	lease := o.Lease()

	ctx, cancel := context.WithCancelCause(work)
	forget := r.hold(lease, cancel)
	defer forget()
	hbDone := make(chan struct{})
	go r.heartbeat(ctx, lease, cancel, hbDone, log)
	out := &outcome{}
	desc, err := r.execute(ctx, o, log, out)
	cause := context.Cause(ctx)
	cancel(nil)
	<-hbDone

	stage := db.StageCompleted
	switch {
	case errors.Is(cause, errLeaseLost) || errors.Is(err, db.ErrLeaseLost):
		r.leaseLost(work, o, out, log)
		return
	case errors.Is(cause, errCancelRequested):
		stage = db.StageCancelled
		desc = "cancelled on request while running; anything imported before the cancel stays in OMERO. " + retryHint(o.UUID, false)
	case work.Err() != nil:
		// Shutdown grace period is over: hand the order to recovery.
		wctx, wcancel := context.WithTimeout(context.WithoutCancel(work), writeTimeout)
		defer wcancel()
		if err := r.saveOutcome(wctx, lease, out); err != nil {
			log.WithError(err).Warn("record import result")
		}
		if err := r.store.Release(wctx, lease); err != nil {
			log.WithError(err).Warn("release order")
		}
		log.Warn("order interrupted by shutdown; released for recovery")
		r.m.finished.WithLabelValues("released").Inc()
		return
	case err != nil:
		stage = db.StageFailed
		var f *failure
		if errors.As(err, &f) || errors.Is(err, ErrInvalidOrder) {
			desc = err.Error()
		} else {
			desc = "unexpected error: " + err.Error()
		}
		hint := retryHint(o.UUID, errors.Is(err, ErrInvalidOrder))
		if f != nil && f.imported {
			hint = "The images are in OMERO (see the order's result): do not retry the order, that would import them again."
		}
		desc = strings.TrimRight(desc, ". ") + ". " + hint
	}
	err = r.retryWrites(work, log, func(ctx context.Context) error {
		if err := r.saveOutcome(ctx, lease, out); err != nil {
			return err
		}
		return r.store.Finish(ctx, lease, stage, desc)
	})
	switch {
	case errors.Is(err, db.ErrLeaseLost):
		r.leaseLost(work, o, out, log)
		return
	case err != nil:
		log.WithError(err).WithFields(logrus.Fields{"stage": stage, "description": desc}).
			Error("record order outcome: gave up at shutdown; recovery will handle the order")
		return
	}
	r.m.finished.WithLabelValues(metricLabel(stage)).Inc()
	r.m.duration.Observe(time.Since(start).Seconds())
	entry := log.WithFields(logrus.Fields{"stage": stage, "seconds": time.Since(start).Seconds()})
	if stage == db.StageFailed {
		entry.WithField("description", desc).Warn("order failed")
	} else {
		entry.Info("order finished")
	}
}

// saveOutcome writes what out still holds: the import's ids (fenced by the lease) and the
// history events that waited.
func (r *Runner) saveOutcome(ctx context.Context, lease db.Lease, out *outcome) error {
	if out.unsaved {
		if err := r.store.SetResult(ctx, lease, out.result); err != nil {
			return err
		}
		out.unsaved = false
	}
	for len(out.events) > 0 {
		e := out.events[0]
		if err := r.store.AddEvent(ctx, lease.UUID, e.stage, e.desc); err != nil {
			return err
		}
		out.events = out.events[1:]
	}
	return nil
}

// retryWrites runs write until it succeeds or its lease is lost, with backoff while the database
// does not answer. Meanwhile the runner claims nothing. It gives up only when the shutdown grace
// period is over.
func (r *Runner) retryWrites(work context.Context, log *logrus.Entry, write func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	waiting := false
	defer func() {
		if waiting {
			r.writing.Add(-1)
		}
	}()
	for {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(work), writeTimeout)
		err := write(ctx)
		cancel()
		r.reached(err)
		if err == nil || errors.Is(err, db.ErrLeaseLost) {
			if waiting {
				log.Info("database answers again: order outcome recorded")
			}
			return err
		}
		if !waiting {
			waiting = true
			r.writing.Add(1)
			log.WithError(err).Warn("record order outcome: the database does not answer; keeping the outcome and retrying")
		} else {
			log.WithError(err).Debug("record order outcome")
		}
		select {
		case <-work.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxWriteBackoff, r.cfg.Lease/4)
	}
}

// leaseLost handles an order that is no longer this worker's. Nothing of its stage is written;
// if its import reached OMERO, the order's history says so, so the images do not vanish from view.
func (r *Runner) leaseLost(work context.Context, o db.Order, out *outcome, log *logrus.Entry) {
	r.m.finished.WithLabelValues("lease_lost").Inc()
	if len(out.result.Filesets) == 0 {
		log.Warn("lease lost: another worker or recovery owns the order now; dropping it")
		return
	}
	desc := fmt.Sprintf("imported as %s (%s), but the order was recovered meanwhile (this worker lost its lease): "+
		"the images are in OMERO; do not retry the order, that would import them again",
		filesetList(out.result.Filesets), objectList(out.result))
	log.WithField("event", desc).Error("lease lost after the import reached OMERO")
	err := r.retryWrites(work, log, func(ctx context.Context) error {
		cur, err := r.store.Get(ctx, o.UUID)
		if err != nil {
			return err
		}
		return r.store.AddEvent(ctx, o.UUID, cur.Stage, desc)
	})
	if err != nil {
		log.WithError(err).Error("record order event")
	}
}

// filesetList names filesets: "Fileset 12" or "Filesets 12, 13".
func filesetList(ids []int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	if len(ids) == 1 {
		return "Fileset " + s[0]
	}
	return "Filesets " + strings.Join(s, ", ")
}

// retryHint tells a person how to run the order again.
func retryHint(uuid string, fixFirst bool) string {
	how := fmt.Sprintf("omero-adi orders retry %s (or in SQL: UPDATE imports SET stage = 'Import Pending' WHERE uuid = '%s';)", uuid, uuid)
	if fixFirst {
		return "Fix the order's row, then retry with: " + how
	}
	return "Retry with: " + how
}

func metricLabel(stage string) string {
	switch stage {
	case db.StageCompleted:
		return "completed"
	case db.StageCancelled:
		return "cancelled"
	default:
		return "failed"
	}
}

// maxBeat bounds the heartbeat interval: a cancel request is noticed within it.
const maxBeat = 5 * time.Second

// retryBeat is the heartbeat interval while the database does not answer.
const retryBeat = 500 * time.Millisecond

// heartbeat renews the lease every Lease/3 (at most maxBeat; retryBeat after a failure) until ctx ends; a lost lease or a
// cancel request cancels the order's context with that cause, which stops its import.
func (r *Runner) heartbeat(ctx context.Context, lease db.Lease, cancel context.CancelCauseFunc, done chan<- struct{}, log *logrus.Entry) {
	defer close(done)
	every := min(r.cfg.Lease/3, maxBeat)
	t := time.NewTimer(every)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cancelRequested, err := r.store.Heartbeat(ctx, lease, r.cfg.Lease)
		if ctx.Err() == nil {
			r.reached(err)
		}
		// After a failed beat, try again soon: the lease is renewed as soon as the database answers.
		t.Reset(every)
		if err != nil && !errors.Is(err, db.ErrLeaseLost) {
			t.Reset(min(every, retryBeat))
		}
		switch {
		case errors.Is(err, db.ErrLeaseLost):
			cancel(errLeaseLost)
			return
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			// The lease is still valid until it expires; the next beat tries again.
			if !warned {
				log.WithError(err).Warn("renew lease")
				warned = true
			} else {
				log.WithError(err).Debug("renew lease")
			}
		case cancelRequested:
			log.Info("cancel requested: stopping the order")
			cancel(errCancelRequested)
			return
		default:
			warned = false
		}
	}
}

// job is the state of one order on its way through the stages.
type job struct {
	checked
	log     *logrus.Entry
	lease   db.Lease
	pre     *preprocess.Result
	imports []string                     // paths handed to omero import
	origin  map[string]string            // imported path -> the original file it came from
	outputs map[string]preprocess.Output // imported path -> the container's result it is
	out     *outcome
}

// execute does the work of one order and returns the description of a success, or an error.
func (r *Runner) execute(ctx context.Context, o db.Order, log *logrus.Entry, out *outcome) (string, error) {
	c, err := validate(r.cfg.Roots, o)
	if err != nil {
		return "", err
	}
	j := &job{checked: c, log: log, lease: o.Lease(), origin: map[string]string{}, outputs: map[string]preprocess.Output{}, out: out}
	if r.cfg.DryRun {
		return r.dryRun(j), nil
	}
	if o.Preprocessing != nil {
		if err := r.preprocess(ctx, j); err != nil {
			return "", err
		}
	} else {
		for _, f := range j.Files {
			// Import the resolved path that validation checked, not a link that could change since.
			j.imports = append(j.imports, f.Real)
			j.origin[f.Real] = f.Path
		}
	}
	sess, err := r.imp.Login(ctx, o.UUID, o.User, o.Group)
	if err != nil {
		err = describeOMERO("log in to OMERO as user "+strconv.Quote(o.User)+" in group "+strconv.Quote(o.Group), err)
		return "", r.abandonTemp(ctx, j, nil, omero.ImportResult{}, err)
	}
	defer r.imp.Close(context.WithoutCancel(ctx), sess)

	res, err := r.imp.Import(ctx, sess, r.importRequest(j))
	if err != nil {
		ferr := describeOMERO("import into "+j.Target.String(), err)
		// Keep what was imported before the failure with the order, and warn the person who retries.
		if ids := j.resultOf(res); ids.Filesets != nil {
			if err := r.saveResult(ctx, j, ids); err != nil {
				return "", err
			}
			ferr = failf("%v %s (%s) reached OMERO before the failure: remove them in OMERO before a retry, which imports every file again.",
				ferr, plural(len(ids.Filesets), "fileset"), objectList(ids))
		}
		return "", r.abandonTemp(ctx, j, sess, res, ferr)
	}
	ids := j.resultOf(res)
	if err := r.saveResult(ctx, j, ids); err != nil {
		return "", r.abandonTemp(ctx, j, sess, res, err)
	}
	// One batch reads every fileset's templatePrefix and creates the annotations and their links;
	// a second writes every key-value pair and name and logs out (see package omero).
	targets := r.annotationTargets(res)
	prep, perr := r.imp.Prepare(ctx, sess, filesetIDs(res), r.cfg.Namespace, flatten(targets))
	sources, serr := r.filesetSources(res, prep.Prefixes, perr)
	// A failed redirect still lets the images be renamed and annotated: they are in OMERO and open
	// through the temp folder, which is kept.
	var redirectErr error
	if j.pre != nil && j.pre.TempDir != "" {
		redirectErr = r.redirect(j, res, sources, serr)
	} else if serr != nil {
		r.event(ctx, j, "could not read the ManagedRepository layout of the import: "+serr.Error())
	}
	w := omero.Write{Values: map[string][][2]string{}, Renames: map[int64]string{}}
	if j.pre != nil && j.Target.Kind == "Dataset" {
		r.rename(j, res, sources, w.Renames)
	}
	r.annotate(ctx, j, res, sources, targets, prep.Annotations, perr, w.Values)
	if err := r.imp.Finish(ctx, sess, w); err != nil {
		r.event(ctx, j, fmt.Sprintf("writing the annotations and image names failed: %v", err))
	}
	if redirectErr != nil {
		return "", redirectErr
	}
	return summary(j, ids), nil
}

func (r *Runner) importRequest(j *job) omero.ImportRequest {
	req := omero.ImportRequest{OrderUUID: j.Order.UUID, Paths: j.imports, Target: j.Target}
	for _, f := range j.Files {
		if f.Dir && j.pre == nil {
			req.Depth = folderDepth
		}
	}
	return req
}

// folderDepth is the --depth given for folder imports: deep enough for nested acquisition trees.
const folderDepth = 10

// resultOf is what an import created, with the temp folder it read from.
func (j *job) resultOf(res omero.ImportResult) db.Result {
	out := resultOf(res)
	if j.pre != nil {
		out.TempDir = j.pre.TempDir
	}
	return out
}

func resultOf(res omero.ImportResult) db.Result {
	var out db.Result
	for _, fs := range res.Filesets {
		out.Filesets = append(out.Filesets, fs.ID)
		out.Images = append(out.Images, fs.Images...)
		out.Plates = append(out.Plates, fs.Plates...)
	}
	return out
}

func summary(j *job, ids db.Result) string {
	var parts []string
	if n := len(ids.Images); n > 0 {
		parts = append(parts, plural(n, "image"))
	}
	if n := len(ids.Plates); n > 0 {
		parts = append(parts, plural(n, "plate"))
	}
	s := fmt.Sprintf("imported %s from %s into %s (%s)", strings.Join(parts, " and "),
		plural(len(j.Files), "path"), j.Target, plural(len(ids.Filesets), "fileset"))
	if j.pre != nil {
		s += fmt.Sprintf(" after preprocessing with %s", j.Order.Preprocessing.Container)
	}
	return s
}

// objectList names the images and plates of a result: "Image:1,2 Plate:4".
func objectList(ids db.Result) string {
	var parts []string
	for _, g := range []struct {
		kind string
		ids  []int64
	}{{"Image", ids.Images}, {"Plate", ids.Plates}} {
		if len(g.ids) == 0 {
			continue
		}
		s := make([]string, len(g.ids))
		for i, id := range g.ids {
			s[i] = strconv.FormatInt(id, 10)
		}
		parts = append(parts, g.kind+":"+strings.Join(s, ","))
	}
	return strings.Join(parts, " ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}

// describeOMERO turns an adapter error into an order description: what was tried and why it failed.
func describeOMERO(what string, err error) error {
	return failf("%s failed: %v.", what, err)
}

// saveResult keeps the ids an import created with the order and stores them (fenced). When the
// database does not answer they are stored with the order's final writes; only a lost lease is an
// error.
func (r *Runner) saveResult(ctx context.Context, j *job, ids db.Result) error {
	j.out.result, j.out.unsaved = ids, true
	err := r.store.SetResult(context.WithoutCancel(ctx), j.lease, ids)
	r.reached(err)
	switch {
	case err == nil:
		j.out.unsaved = false
	case errors.Is(err, db.ErrLeaseLost):
		return err
	default:
		j.log.WithError(err).Warn("record import result: kept for the order's final writes")
	}
	return nil
}

// event records a history event of the order; when the database does not answer, the event
// waits for the order's final writes.
func (r *Runner) event(ctx context.Context, j *job, desc string) {
	j.log.WithField("event", desc).Warn("order event")
	err := r.store.AddEvent(context.WithoutCancel(ctx), j.Order.UUID, j.Order.Stage, desc)
	r.reached(err)
	if err != nil {
		j.log.WithError(err).Warn("record order event: kept for the order's final writes")
		j.out.events = append(j.out.events, pendingEvent{stage: j.Order.Stage, desc: desc})
	}
}

// dryRun builds the exact commands the order would run and describes them.
func (r *Runner) dryRun(j *job) string {
	var cmds []string
	var paths []string
	for _, f := range j.Files {
		paths = append(paths, f.Real)
	}
	if p := j.Order.Preprocessing; p != nil && r.pre != nil {
		spec := r.spec(j)
		for _, f := range paths {
			cmds = append(cmds, child.Quote(r.pre.Command(spec, f)))
		}
		// What is imported is what the container reports; name the place it goes.
		where := "{the container's results in the local temp folder}"
		if p.AltOutputFolder == "" {
			where = "{the container's results in .processed}"
		}
		paths = []string{where}
	}
	j.imports = paths
	sess := &omero.Session{Key: "SESSION-KEY", User: j.Order.User, Group: j.Order.Group}
	argv := r.imp.ImportArgs(sess, r.importRequest(j))
	cmds = append(cmds, child.Quote(argv))
	j.log.WithField("commands", cmds).Info("dry run: would run")
	return fmt.Sprintf("dry run: as user %q in group %q: %s", j.Order.User, j.Order.Group, strings.Join(cmds, " && "))
}

func filesetIDs(res omero.ImportResult) []int64 {
	ids := make([]int64, len(res.Filesets))
	for i, fs := range res.Filesets {
		ids[i] = fs.ID
	}
	return ids
}

// filesetSources reads, for every fileset the import created, the client paths its
// ManagedRepository links point to, below the templatePrefixes Prepare read (perr: its error).
func (r *Runner) filesetSources(res omero.ImportResult, prefixes map[int64]string, perr error) (map[int64]fileset, error) {
	out := map[int64]fileset{}
	var errs []string
	for _, id := range filesetIDs(res) {
		prefix, ok := prefixes[id]
		if !ok && perr != nil {
			return out, fmt.Errorf("template prefixes: %w", perr)
		}
		if !ok {
			errs = append(errs, fmt.Sprintf("fileset %d has no templatePrefix", id))
			continue
		}
		links, err := readLinks(filepath.Join(r.cfg.ManagedRepo, prefix))
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		fs := fileset{prefix: prefix}
		for _, l := range links {
			fs.targets = append(fs.targets, l.target)
		}
		sort.Strings(fs.targets)
		out[id] = fs
	}
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

type fileset struct {
	prefix  string
	targets []string // absolute client paths the fileset's links point to
}

// originOf maps a link target back to the order's original file (or, for folders, the file below it).
func (j *job) originOf(target string) string {
	if o, ok := j.origin[target]; ok {
		return o
	}
	for imported, orig := range j.origin {
		if fspath.Within(imported, target) {
			return filepath.Join(orig, strings.TrimPrefix(target, imported))
		}
	}
	for _, f := range j.Files {
		if fspath.Within(f.Real, target) {
			return filepath.Join(f.Path, strings.TrimPrefix(target, f.Real))
		}
	}
	return target
}

type link struct{ path, target string }

// readLinks lists the symlinks below dir with their absolute targets.
func readLinks(dir string) ([]link, error) {
	var out []link
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink == 0 {
			return nil
		}
		t, err := os.Readlink(p)
		if err != nil {
			return err
		}
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		out = append(out, link{path: p, target: filepath.Clean(t)})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read links below %s: %w", dir, err)
	}
	return out, nil
}
