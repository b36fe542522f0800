package runner

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/fspath"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

func (r *Runner) spec(j *job) preprocess.Spec {
	return preprocess.Spec{
		OrderUUID:     j.Order.UUID,
		Preprocessing: *j.Order.Preprocessing,
		LogPath:       filepath.Join(r.cfg.LogDir, "preprocessing."+j.Order.UUID+".log"),
	}
}

// preprocess runs the order's container on each file and decides what is imported: the local temp
// copies when there is an alt output folder (redirected to .processed after the import), else the
// converted files in .processed.
func (r *Runner) preprocess(ctx context.Context, j *job) error {
	if r.pre == nil {
		return failf("preprocessing_id: this agent has no preprocessing configured ([preprocessing] runtime), so container %q cannot run.", j.Order.Preprocessing.Container)
	}
	real := make([]string, len(j.Files))
	for i, f := range j.Files {
		if f.Dir {
			return failf("files[%d]: %q is a folder; preprocessing containers take files, so list the files instead.", i, f.Path)
		}
		real[i] = f.Real
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
	for _, out := range res.Outputs {
		path := out.Processed
		if res.TempDir != "" {
			path = out.Alt
		}
		j.imports = append(j.imports, path)
		j.origin[path] = j.originOfInput(out.Input)
		j.outputs[path] = out
	}
	return nil
}

// describePreprocessing turns a failed preprocessing run into the order's description: what went
// wrong, with which container on which file, and where the container's output is.
func describePreprocessing(p *order.Preprocessing, err error) error {
	var pe *preprocess.Error
	switch {
	case errors.As(err, &pe):
		desc := fmt.Sprintf("%v: container %s on file %s: %s", pe.Err, pe.Container, pe.File, pe.Detail)
		if pe.LogPath != "" {
			desc += "; the container's output is in " + pe.LogPath
		}
		return failf("%s.", desc)
	case errors.Is(err, preprocess.ErrSpec):
		return failf("imports_preprocessing row %d cannot be used: %v.", p.ID, err)
	default:
		return failf("preprocessing with %s failed: %v.", p.Container, err)
	}
}

// originOfInput maps a preprocessed input (a resolved path) back to the order's file as given.
func (j *job) originOfInput(input string) string {
	for _, f := range j.Files {
		if f.Real == input {
			return f.Path
		}
	}
	return input
}

// redirect repoints the ManagedRepository links of every fileset of a finished import from the
// local temp copy to the converted files in .processed, then deletes the temp folder. When any
// link cannot be redirected (or the filesets' folders are unknown) the temp folder is kept, since
// links still point into it, and the order fails without a retry hint: its images are in OMERO.
func (r *Runner) redirect(j *job, res omero.ImportResult, sources map[int64]fileset, serr error) error {
	n, err := r.redirectLinks(j, res, sources, serr)
	if err != nil {
		done := summary(j, resultOf(res))
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
		return &failure{desc: strings.TrimRight(f.desc, ". ") + ". " + note, imported: f.imported}
	}
	r.event(ctx, j, note)
	return cause
}

// rename collects the names their container chose for Images, where that differs from the file
// name (written by Finish).
func (r *Runner) rename(j *job, res omero.ImportResult, sources map[int64]fileset, renames map[int64]string) {
	for _, fs := range res.Filesets {
		src := sources[fs.ID]
		if len(src.targets) == 0 {
			continue
		}
		imported := j.importedPathOf(src.targets[0])
		name := j.outputs[imported].Name
		if name == "" || name == filepath.Base(imported) {
			continue
		}
		for _, img := range fs.Images {
			renames[img] = name
		}
	}
}

// importedPathOf finds which imported path a link target belongs to (the path itself, or a
// folder that holds it; after redirection, its .processed twin).
func (j *job) importedPathOf(target string) string {
	for imported := range j.origin {
		if imported == target || fspath.Within(imported, target) {
			return imported
		}
	}
	if j.pre != nil {
		for _, out := range j.pre.Outputs {
			if out.Processed == target || fspath.Within(out.Processed, target) {
				if out.Alt != "" && j.pre.TempDir != "" {
					return out.Alt
				}
				return out.Processed
			}
		}
	}
	return target
}

// annotationTargets lists, per fileset of res, what gets a MapAnnotation: its Plates, or its
// Images when it has no Plate or AnnotatePlateImages is set (then both).
func (r *Runner) annotationTargets(res omero.ImportResult) [][]string {
	out := make([][]string, len(res.Filesets))
	for i, fs := range res.Filesets {
		for _, id := range fs.Plates {
			out[i] = append(out[i], "Plate:"+strconv.FormatInt(id, 10))
		}
		if len(fs.Plates) == 0 || r.cfg.AnnotatePlateImages {
			for _, id := range fs.Images {
				out[i] = append(out[i], "Image:"+strconv.FormatInt(id, 10))
			}
		}
	}
	return out
}

func flatten(lists [][]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// annotate gives each target's MapAnnotation (created by Prepare, perr its error) the keys the old
// service wrote, into values for Finish. Failures are recorded in the order's history and do not
// fail the order.
func (r *Runner) annotate(ctx context.Context, j *job, res omero.ImportResult, sources map[int64]fileset, targets [][]string,
	anns map[string]string, perr error, values map[string][][2]string) {
	stamp := time.Now().UTC().Format("2006-01-02 15:04:05")
	var missing []string
	for i, fs := range res.Filesets {
		imported, origin := "", ""
		if src := sources[fs.ID]; len(src.targets) > 0 {
			imported = j.importedPathOf(src.targets[0])
			origin = j.originOf(src.targets[0])
			if o, ok := j.origin[imported]; ok && j.pre != nil {
				origin = o
			}
		} else if len(j.Files) > 0 {
			origin = j.Files[0].Path
		}
		kv := r.keyValues(j, origin, imported, stamp)
		for _, t := range targets[i] {
			if ann, ok := anns[t]; ok {
				values[ann] = kv
			} else {
				missing = append(missing, t)
			}
		}
	}
	if len(missing) > 0 {
		r.event(ctx, j, fmt.Sprintf("annotation of %s failed: %v", strings.Join(missing, ", "), perr))
	}
}

func (r *Runner) keyValues(j *job, origin, imported, stamp string) [][2]string {
	o := j.Order
	paths := make([]string, len(j.Files))
	for i, f := range j.Files {
		paths[i] = f.Path
	}
	files, _ := json.Marshal(paths)
	fileNames := o.FileNames
	if fileNames == "" {
		names := make([]string, len(paths))
		for i, f := range paths {
			names[i] = filepath.Base(f)
		}
		b, _ := json.Marshal(names)
		fileNames = string(b)
	}
	kv := [][2]string{
		{"UUID", o.UUID},
		{"Filepath", origin},
		{"Group", o.Group},
		{"Username", o.User},
		{"DestinationID", o.DestinationID},
		{"DestinationType", o.DestinationType},
		{"Files", string(files)},
		{"FileNames", fileNames},
	}
	if out, ok := j.outputs[imported]; ok && out.Processed != "" {
		// The container's result on the share that the import links to (BIOMERO.importer 1.4).
		kv = append(kv, [2]string{"Imported_from", out.Processed})
	}
	if p := o.Preprocessing; p != nil {
		kv = append(kv, [2]string{"preprocessing_container", p.Container})
		keys := make([]string, 0, len(p.ExtraParams))
		for k := range p.ExtraParams {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			kv = append(kv, [2]string{"preprocessing_" + k, p.ExtraParams[k]})
		}
		for _, pair := range j.outputs[imported].KeyValues {
			kv = append(kv, [2]string{"processing_output_" + pair[0], pair[1]})
		}
	}
	dir := filepath.Dir(origin)
	csvPaths := []string{filepath.Join(dir, "metadata.csv"), filepath.Join(dir, r.cfg.ProcessedFolder, "metadata.csv")}
	if out, ok := j.outputs[imported]; ok && out.ProcessedDir != "" {
		// A container may write a metadata.csv beside its results, in the order's .processed folder.
		csvPaths = append(csvPaths, filepath.Join(out.ProcessedDir, "metadata.csv"))
	}
	for _, csvPath := range csvPaths {
		pairs, err := readMetadataCSV(csvPath)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				j.log.WithError(err).WithField("path", csvPath).Warn("read metadata.csv")
			}
			continue
		}
		for _, p := range pairs {
			kv = append(kv, [2]string{"csv_" + p[0], p[1]})
		}
	}
	kv = append(kv, [2]string{"Import_Timestamp", stamp})
	return kv
}

// maxCSV bounds how much of a metadata.csv is read.
const maxCSV = 1 << 20

// readMetadataCSV reads a two-column key,value CSV; a "key,value" header row is skipped.
func readMetadataCSV(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(io.LimitReader(f, maxCSV))
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	var out [][2]string
	for line := 1; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, fmt.Errorf("%s: %w", path, err)
		}
		if len(rec) < 2 || strings.TrimSpace(rec[0]) == "" {
			continue
		}
		k, v := strings.TrimSpace(rec[0]), strings.TrimSpace(rec[1])
		if line == 1 && strings.EqualFold(k, "key") && strings.EqualFold(v, "value") {
			continue
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}
