package runner

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/child"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// job is one order on its way through the pipeline: the checked row, and one item per path that
// omero import gets.
type job struct {
	checked
	log   *logrus.Entry
	lease db.Lease
	pre   *preprocess.Result // nil without preprocessing
	items []item
	out   *outcome
}

// item is one path handed to omero import and where it came from.
type item struct {
	path   string             // a checked file (resolved), or a container's result
	origin string             // the order's file it came from, as given
	output *preprocess.Output // the container's result; nil without preprocessing
	found  []int64            // a retry found it in these filesets already: not imported again
}

// paths lists what omero import gets.
func (j *job) paths() []string {
	var out []string
	for _, it := range j.items {
		if len(it.found) == 0 {
			out = append(out, it.path)
		}
	}
	return out
}

// source finds the item a ManagedRepository link target belongs to (its path or, for a folder,
// a file below it; after redirection, the item's result in .processed) and the order's file the
// target came from. Without such an item it returns nil and the target.
func (j *job) source(target string) (*item, string) {
	for i := range j.items {
		it := &j.items[i]
		switch {
		case it.output != nil && (order.Within(it.path, target) || order.Within(it.output.Processed, target)):
			return it, it.origin
		case order.Within(it.path, target):
			return it, filepath.Join(it.origin, strings.TrimPrefix(target, it.path))
		}
	}
	return nil, target
}

// execute does the work of one order, in this order: validate the row; preprocess (when the order
// has a preprocessing row); log in as the order's user; import; record the ids the import created;
// read the filesets' ManagedRepository folders and create the annotations; redirect the links from
// the local temp folder to .processed; rename Images and write the annotations; log out. It returns
// the description of a success, or an error (a *failure carries the description of a failure).
func (r *Runner) execute(ctx context.Context, o db.Order, log *logrus.Entry, out *outcome) (string, error) {
	c, err := validate(r.cfg.Roots, o)
	if err != nil {
		return "", err
	}
	j := &job{checked: c, log: log, lease: o.Lease(), out: out}
	// A Zarr registered in place takes the import's place (see zarr.go).
	if zarrs, err := r.zarrPlan(j); err != nil || zarrs != nil {
		switch {
		case err != nil:
			return "", err
		case r.cfg.DryRun:
			return r.zarrDryRun(j, zarrs), nil
		}
		return r.register(ctx, j, zarrs)
	}
	if r.cfg.DryRun {
		return r.dryRun(j), nil
	}
	// A retry imports only what earlier attempts did not put into OMERO.
	prev, err := previous(o)
	if err != nil {
		return "", err
	}
	if o.Preprocessing != nil {
		if err := r.preprocess(ctx, j, prev); err != nil {
			return "", err
		}
	} else if err := r.plainItems(j, prev); err != nil {
		return "", err
	}
	if len(j.items) == 0 && prev.result != nil {
		ver := r.verify(j, omero.ImportResult{}, nil, nil, prev)
		if err := r.saveResult(ctx, j, ver); err != nil {
			return "", err
		}
		return nothingLeft(ver), nil
	}
	sess, err := r.login(ctx, j, prev)
	if err != nil {
		err = describeOMERO("log in to OMERO as user "+strconv.Quote(o.User)+" in group "+strconv.Quote(o.Group), err)
		return "", r.abandonTemp(ctx, j, nil, omero.ImportResult{}, err)
	}
	defer r.imp.Close(context.WithoutCancel(ctx), sess)
	j.out.person = sess.Person
	if len(j.paths()) == 0 {
		// A retry found every file it was to import in OMERO already.
		ver := r.verify(j, omero.ImportResult{}, nil, nil, prev)
		if err := r.saveResult(ctx, j, ver); err != nil {
			return "", r.abandonTemp(ctx, j, sess, omero.ImportResult{}, err)
		}
		r.removeTempIfAny(j)
		return nothingLeft(ver), nil
	}

	res, ierr := r.imp.Import(ctx, sess, r.importRequest(j, j.paths()))
	if ierr != nil && (ctx.Err() != nil || len(res.Filesets) == 0) {
		ferr := describeOMERO("import into "+j.Target.String(), ierr)
		if ids := j.resultOf(res); ids.Filesets != nil {
			// Stopped (cancel, shutdown) after filesets reached OMERO: keep their ids.
			if err := r.saveResult(ctx, j, ids); err != nil {
				return "", err
			}
			ferr = failf("%v %s (%s) reached OMERO before the failure: remove them in OMERO before a retry, which imports every file again.",
				ferr, plural(len(ids.Filesets), "fileset"), objectList(ids))
		} else if ctx.Err() == nil && ran(ierr) {
			// The importer ran and nothing of this attempt reached OMERO: say which file failed how.
			ver := r.verify(j, res, ierr, nil, prev)
			if err := r.saveResult(ctx, j, ver); err != nil {
				return "", err
			}
			ferr = partialFailure(j, r.importCause(j, res, ierr), ver)
		}
		return "", r.abandonTemp(ctx, j, sess, res, ferr)
	}
	if err := r.saveResult(ctx, j, r.merged(j, res, prev)); err != nil {
		return "", r.abandonTemp(ctx, j, sess, res, err)
	}
	// One batch reads every fileset's templatePrefix and files and creates the annotations and
	// their links; a second writes every key-value pair and name and logs out (see package omero).
	targets := r.annotationTargets(res)
	prep, perr := r.imp.Prepare(ctx, sess, filesetIDs(res), r.cfg.AnnotationNamespace, flatten(targets))
	sources, serr := r.filesetSources(res, prep.Prefixes, perr)
	ver := r.verify(j, res, ierr, fileEntries(prep, sources), prev)
	if err := r.saveResult(ctx, j, ver); err != nil {
		return "", r.abandonTemp(ctx, j, sess, res, err)
	}
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
	// Every link the import made is recorded, a partial import's too: retention and the integrity
	// checks must know what OMERO points at.
	if serr == nil {
		if err := r.recordLinks(ctx, j, sources); err != nil {
			return "", err
		}
	}
	if ver.Outcome != db.OutcomeComplete {
		return "", partialFailure(j, r.importCause(j, res, ierr), ver)
	}
	return summary(j, ver), nil
}

// login opens the order's session. A retry also asks OMERO, in the same CLI start, whether it
// holds any file it is about to import (a fileset in flight when an earlier attempt stopped may
// have finished on the server unreported): those are not imported again.
func (r *Runner) login(ctx context.Context, j *job, prev earlier) (*omero.Session, error) {
	if prev.result == nil {
		return r.imp.Login(ctx, j.Order.UUID, j.Order.User, j.Order.Group)
	}
	sess, found, lerr, err := r.imp.LoginFinding(ctx, j.Order.UUID, j.Order.User, j.Order.Group, j.paths())
	if err != nil {
		return nil, err
	}
	if lerr != nil {
		r.event(ctx, j, "could not ask OMERO which files it holds already (the retry imports every missing file): "+lerr.Error())
	}
	for i := range j.items {
		if ids := found[j.items[i].path]; len(ids) > 0 {
			j.items[i].found = ids
			r.event(ctx, j, fmt.Sprintf("%s is in OMERO already (%s), from an earlier attempt that did not report it: not imported again", j.items[i].path, filesetList(ids)))
		}
	}
	return sess, nil
}

// nothingLeft describes a retry that found every file of the order in OMERO already.
func nothingLeft(ver db.Result) string {
	return "nothing to import: every file was in OMERO from an earlier attempt. " + ver.Describe(describeLimit)
}

// removeTempIfAny removes the local temp folder of a preprocessed order that imported nothing.
func (r *Runner) removeTempIfAny(j *job) {
	if j.pre != nil && j.pre.TempDir != "" {
		r.removeTemp(j)
	}
}

// plainItems lists what an order without preprocessing imports: each file not in OMERO yet, by
// the resolved path that validation checked (not a link that could change since); of a folder an
// earlier attempt imported in part, the files below it that are not in OMERO.
func (r *Runner) plainItems(j *job, prev earlier) error {
	for _, f := range j.Files {
		switch {
		case prev.done(f.Path):
		case prev.files[f.Path].State == db.FilePartial:
			missing, err := prev.missing(f.Path, f.Real)
			if err != nil {
				return failf("files: cannot list what is below %s to import the rest of it: %v.", f.Path, err)
			}
			for _, m := range missing {
				j.items = append(j.items, item{path: m, origin: f.Path})
			}
		default:
			j.items = append(j.items, item{path: f.Real, origin: f.Path})
		}
	}
	return nil
}

// merged is the result right after the import, before it is verified: the objects of this and
// the earlier attempts, the earlier files, and the files of this attempt as may-be-in-OMERO, so
// that an attempt interrupted now is never retried as if they were not.
func (r *Runner) merged(j *job, res omero.ImportResult, prev earlier) db.Result {
	out := r.verify(j, omero.ImportResult{}, nil, nil, prev)
	ids := j.resultOf(res)
	out.Filesets = append(out.Filesets, ids.Filesets...)
	out.Images = append(out.Images, ids.Images...)
	out.Plates = append(out.Plates, ids.Plates...)
	out.Summary = res.Log.Summary
	for i := range out.Files {
		if f := &out.Files[i]; !prev.done(f.Path) {
			f.State, f.Reason = db.FileUnknown, "imported by attempt "+strconv.Itoa(j.Order.Attempt)+", which did not record what became of it"
		}
	}
	out.Outcome = ""
	return out
}

// fileEntries are the files of each fileset: as the server lists them (Prepare) and as the
// ManagedRepository links show them (the exact client paths, where the server's are sanitized).
func fileEntries(prep omero.Prepared, sources map[int64]fileset) map[int64][]string {
	out := map[int64][]string{}
	for id, paths := range prep.Entries {
		out[id] = append(out[id], paths...)
	}
	for id, src := range sources {
		for _, t := range src.targets {
			if !slices.Contains(out[id], t) {
				out[id] = append(out[id], t)
			}
		}
	}
	return out
}

// ran reports whether an import error comes from an import that ran (a failed fileset, or exit 0
// without ids), rather than from a session or connection that never let it start.
func ran(err error) bool {
	return errors.Is(err, omero.ErrImport) || errors.Is(err, omero.ErrNoImport)
}

// recordLinks stores every ManagedRepository link of the order's filesets, as they point after
// redirection, with their targets' size and time, for the integrity check (package integrity).
// A link that cannot be read is recorded in the history, not a failure: the images are in OMERO.
// Only a lost lease is an error.
func (r *Runner) recordLinks(ctx context.Context, j *job, sources map[int64]fileset) error {
	var links []db.Link
	for id, src := range sources {
		found, err := redirect.Links(r.cfg.ManagedRepo, src.prefix)
		if err != nil {
			r.event(ctx, j, "the links of the import were not recorded for the integrity check: "+err.Error())
			return nil
		}
		for _, l := range found {
			links = append(links, db.Link{FilesetID: id, Path: l.Path, Target: l.Target, Dir: l.Dir, Size: l.Size, ModTime: l.ModTime, Dev: l.Dev, Ino: l.Ino})
		}
	}
	err := r.store.SetLinks(context.WithoutCancel(ctx), j.lease, links)
	r.reached(err)
	switch {
	case errors.Is(err, db.ErrLeaseLost):
		return err
	case err != nil:
		j.log.WithError(err).Warn("record links")
	}
	return nil
}

func (r *Runner) spec(j *job) preprocess.Spec {
	return preprocess.Spec{
		OrderUUID:     j.Order.UUID,
		Preprocessing: *j.Order.Preprocessing,
		LogPath:       r.preprocessingLog(j.Order.UUID),
	}
}

// preprocess runs the order's container on each file and decides what is imported: the local temp
// copies when there is an alt output folder (redirected to .processed after the import), else the
// converted files in .processed.
func (r *Runner) preprocess(ctx context.Context, j *job, prev earlier) error {
	if r.pre == nil {
		return failf("preprocessing_id: this agent has no preprocessing configured ([preprocessing] runtime), so container %q cannot run.", j.Order.Preprocessing.Container)
	}
	var real []string
	for i, f := range j.Files {
		if f.Dir {
			return failf("files[%d]: %q is a folder; preprocessing containers take files, so list the files instead.", i, f.Path)
		}
		switch prev.files[f.Path].State {
		case db.FileImported:
			continue
		case db.FilePartial:
			return retryAllf("files[%d]: an earlier attempt imported part of what preprocessing made of %s (%s); a retry of the rest would import it twice: check it in OMERO (remove what is incomplete).",
				i, f.Path, prev.files[f.Path].Reason)
		}
		real = append(real, f.Real)
	}
	if len(real) == 0 {
		return nil
	}
	// The stage is what people see; while the database does not answer, the order preprocesses
	// under Import Started (its lease still fences every later write).
	err := r.store.SetStage(ctx, j.lease, db.StagePreprocessing, "preprocessing with "+j.Order.Preprocessing.Container)
	r.reached(err)
	switch {
	case errors.Is(err, db.ErrLeaseLost):
		return err
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		j.log.WithError(err).Warn("set stage Import Preprocessing")
	}
	res, err := r.pre.Run(ctx, r.spec(j), real)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return describePreprocessing(j.Order.Preprocessing, err)
	}
	if len(res.Outputs) == 0 {
		if res.TempDir != "" {
			if err := r.pre.RemoveTemp(res.TempDir); err != nil {
				j.log.WithError(err).Warn("remove temp folder")
			}
		}
		return failf("preprocessing with %s produced no output; see %s.", j.Order.Preprocessing.Container, r.spec(j).LogPath)
	}
	j.pre = &res
	if res.TempDir != "" {
		// Recorded before the import: if this agent dies while OMERO's links point into the temp
		// folder, recovery names it.
		if err := r.saveResult(ctx, j, db.Result{TempDir: res.TempDir}); err != nil {
			return err
		}
	}
	for i, out := range res.Outputs {
		it := item{path: out.Processed, origin: out.Input, output: &res.Outputs[i]}
		if res.TempDir != "" {
			it.path = out.Alt
		}
		for _, f := range j.Files {
			if f.Real == out.Input {
				it.origin = f.Path
			}
		}
		j.items = append(j.items, it)
	}
	return nil
}

func (r *Runner) importRequest(j *job, paths []string) omero.ImportRequest {
	req := omero.ImportRequest{OrderUUID: j.Order.UUID, Paths: paths, Target: j.Target}
	for _, f := range j.Files {
		if f.Dir && j.pre == nil {
			req.Depth = folderDepth
		}
	}
	return req
}

// folderDepth is the --depth given for folder imports: deep enough for nested acquisition trees.
const folderDepth = 10

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

// redirect repoints the ManagedRepository links of every fileset of a finished import from the
// local temp copy to the converted files in .processed, then deletes the temp folder. When any
// link cannot be redirected (or the filesets' folders are unknown) the temp folder is kept, since
// links still point into it, and the order fails without a retry hint: its images are in OMERO.
func (r *Runner) redirect(j *job, res omero.ImportResult, sources map[int64]fileset, serr error) error {
	n, err := r.redirectLinks(j, res, sources, serr)
	if err != nil {
		done := summary(j, createdIDs(res))
		if errors.Is(err, redirect.ErrIncomplete) {
			return &failure{imported: true, desc: fmt.Sprintf("%s, but %v %s", done, err, j.pre.TempDir)}
		}
		return &failure{imported: true, desc: fmt.Sprintf("%s, but the links in OMERO's ManagedRepository were not redirected "+
			"from the local temp folder to .processed: %v. The temp folder %s is kept so that the images open; point each "+
			"link of the order at the same file below .processed by hand, then delete the temp folder", done, err, j.pre.TempDir)}
	}
	j.log.WithField("links", n).Debug("links redirected to .processed")
	r.removeTemp(j)
	return nil
}

// redirectLinks redirects the links of every fileset the import reported; it refuses when the
// templatePrefix of any of them is unknown, as links there could not be checked.
func (r *Runner) redirectLinks(j *job, res omero.ImportResult, sources map[int64]fileset, serr error) (int, error) {
	if len(res.Filesets) == 0 {
		return 0, nil
	}
	if serr != nil {
		return 0, fmt.Errorf("the ManagedRepository layout of the import could not be read: %w", serr)
	}
	var prefixes []string
	for _, fs := range res.Filesets {
		src, ok := sources[fs.ID]
		if !ok || src.prefix == "" {
			return 0, fmt.Errorf("the templatePrefix of fileset %d is unknown", fs.ID)
		}
		prefixes = append(prefixes, src.prefix)
	}
	sort.Strings(prefixes)
	return redirect.Redirect(r.cfg.ManagedRepo, prefixes, j.pre.Redirects)
}

func (r *Runner) removeTemp(j *job) {
	if err := r.pre.RemoveTemp(j.pre.TempDir); err != nil {
		j.log.WithError(err).WithField("path", j.pre.TempDir).Warn("remove temp folder")
	}
}

// abandonTemp settles the temp folder of an order that stopped after preprocessing but before its
// links were redirected (login refused, import failed or cancelled, result not recorded): the
// filesets the import reported are redirected to .processed, then the temp folder is removed. If
// that fails, the temp folder is kept and cause's description (or, for a cancelled order, its
// history) says so. Without a temp folder it returns cause unchanged.
func (r *Runner) abandonTemp(ctx context.Context, j *job, sess *omero.Session, res omero.ImportResult, cause error) error {
	if j.pre == nil || j.pre.TempDir == "" {
		return cause
	}
	var err error
	if len(res.Filesets) > 0 {
		// The order's context may be over (cancel, shutdown): the clean-up gets its own time.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
		prep, perr := r.imp.Prepare(cctx, sess, filesetIDs(res), "", nil)
		cancel()
		sources, serr := r.filesetSources(res, prep.Prefixes, perr)
		_, err = r.redirectLinks(j, res, sources, serr)
	}
	if err == nil {
		r.removeTemp(j)
		return cause
	}
	note := fmt.Sprintf("The filesets imported before the failure still link into the local temp folder %s, which is kept "+
		"so that they open: %v", j.pre.TempDir, err)
	j.log.WithError(err).WithField("path", j.pre.TempDir).Warn("temp folder kept: links of a partial import point into it")
	var f *failure
	if errors.As(cause, &f) {
		return &failure{desc: strings.TrimRight(f.desc, ". ") + ". " + note, imported: f.imported, partial: f.partial}
	}
	r.event(ctx, j, note)
	return cause
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
	return dryRunText(j, r.commands(j))
}

// dryRunText logs and describes the commands a dry run would run.
func dryRunText(j *job, cmds []string) string {
	j.log.WithField("commands", cmds).Info("dry run: would run")
	return fmt.Sprintf(db.DryRunPrefix+" as user %q in group %q: %s", j.Order.User, j.Order.Group, strings.Join(cmds, " && "))
}

// previewSession stands for the order's session in the commands a dry run shows.
func previewSession(j *job) *omero.Session {
	return &omero.Session{Key: "SESSION-KEY", User: j.Order.User, Group: j.Order.Group}
}

// Preview returns the exact commands order o would run, in their order, and changes nothing: the
// login (`omero load` with the lines it reads from stdin as a here-document; the admin password in
// its environment),
// each file's preprocessing container, and the import, whose session key is a placeholder. It
// validates the order as a run does first; an order that would fail there returns that error.
func (r *Runner) Preview(o db.Order) ([]string, error) {
	c, err := validate(r.cfg.Roots, o)
	if err != nil {
		return nil, err
	}
	argv, stdin := r.imp.LoginArgs(o.User, o.Group)
	login := "OMERO_PASSWORD=… " + child.Quote(argv) + " <<'EOF'\n" + stdin + "EOF"
	return append([]string{login}, r.commands(&job{checked: c, log: r.log})...), nil
}

// commands are the exact preprocessing and import commands of a job (quoted for a shell), the
// import's session key a placeholder.
func (r *Runner) commands(j *job) []string {
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
	argv := r.imp.ImportArgs(previewSession(j), r.importRequest(j, paths))
	return append(cmds, child.Quote(argv))
}

// resultOf is what an import created, with the temp folder it read from.
func (j *job) resultOf(res omero.ImportResult) db.Result {
	out := createdIDs(res)
	if j.pre != nil {
		out.TempDir = j.pre.TempDir
	}
	return out
}

// createdIDs lists the filesets, images and plates an import created.
func createdIDs(res omero.ImportResult) db.Result {
	var out db.Result
	for _, fs := range res.Filesets {
		out.Filesets = append(out.Filesets, fs.ID)
		out.Images = append(out.Images, fs.Images...)
		out.Plates = append(out.Plates, fs.Plates...)
	}
	return out
}

func filesetIDs(res omero.ImportResult) []int64 {
	ids := make([]int64, len(res.Filesets))
	for i, fs := range res.Filesets {
		ids[i] = fs.ID
	}
	return ids
}

// filesetSources asks redirect, for every fileset the import created, for the client paths its
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
		targets, err := redirect.Targets(r.cfg.ManagedRepo, prefix)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		out[id] = fileset{prefix: prefix, targets: targets}
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
