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
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

func (r *Runner) spec(j *job) preprocess.Spec {
	p := j.Order.Preprocessing
	return preprocess.Spec{
		OrderUUID:       j.Order.UUID,
		Container:       p.Container,
		InputFile:       p.InputFile,
		OutputFolder:    p.OutputFolder,
		AltOutputFolder: p.AltOutputFolder,
		ExtraParams:     p.ExtraParams,
		LogPath:         filepath.Join(r.cfg.LogDir, "preprocessing."+j.Order.UUID+".log"),
	}
}

// preprocess runs the order's container on each file and decides what is imported: the local temp
// copies when there is an alt output folder (redirected to .processed after the import), else the
// converted files in .processed.
func (r *Runner) preprocess(ctx context.Context, j *job) error {
	if r.pre == nil {
		return failf("preprocessing_id: this agent has no preprocessing configured ([preprocessing] runtime), so container %q cannot run.", j.Order.Preprocessing.Container)
	}
	for i, dir := range j.Dirs {
		if dir {
			return failf("files[%d]: %q is a folder; preprocessing containers take files, so list the files instead.", i, j.Files[i])
		}
	}
	if err := r.store.SetStage(ctx, j.lease, db.StagePreprocessing, "preprocessing with "+j.Order.Preprocessing.Container); err != nil {
		return fmt.Errorf("set stage: %w", err)
	}
	res, err := r.pre.Run(ctx, r.spec(j), j.Real)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return failf("preprocessing with %s failed: %v.", j.Order.Preprocessing.Container, err)
	}
	if len(res.Outputs) == 0 {
		return failf("preprocessing with %s produced no output; see %s.", j.Order.Preprocessing.Container, r.spec(j).LogPath)
	}
	j.pre = &res
	for _, out := range res.Outputs {
		path := out.Processed
		if res.TempDir != "" {
			path = out.Alt
		}
		j.imports = append(j.imports, path)
		j.origin[path] = j.originOfInput(out.Input)
		j.names[path] = out.Name
		j.kv[path] = out.KeyValues
	}
	return nil
}

// originOfInput maps a preprocessed input (a resolved path) back to the order's file as given.
func (j *job) originOfInput(input string) string {
	for i, real := range j.Real {
		if real == input {
			return j.Files[i]
		}
	}
	return input
}

// redirect repoints the ManagedRepository links of every fileset from the local temp copy to the
// converted files in .processed, then deletes the temp folder. On failure the temp folder is kept,
// since links still point into it.
func (r *Runner) redirect(j *job, sources map[int64]fileset) error {
	var prefixes []string
	for _, fs := range sources {
		prefixes = append(prefixes, fs.prefix)
	}
	sort.Strings(prefixes)
	n, err := redirect.Redirect(r.cfg.ManagedRepo, prefixes, j.pre.Redirects)
	if err != nil {
		return failf("imported, but redirecting the OMERO links from the temp copy to .processed failed: %v. "+
			"The temp folder %s is kept so the images still open; finish by hand, then delete it.", err, j.pre.TempDir)
	}
	j.log.WithField("links", n).Debug("links redirected to .processed")
	if err := r.pre.RemoveTemp(j.pre.TempDir); err != nil {
		j.log.WithError(err).Warn("remove temp folder")
	}
	return nil
}

// rename gives Images the names their container chose, where that differs from the file name.
func (r *Runner) rename(ctx context.Context, j *job, sess *omero.Session, res omero.ImportResult, sources map[int64]fileset) {
	for _, fs := range res.Filesets {
		src := sources[fs.ID]
		if len(src.targets) == 0 {
			continue
		}
		imported := j.importedPathOf(src.targets[0])
		name := j.names[imported]
		if name == "" || name == filepath.Base(imported) {
			continue
		}
		for _, img := range fs.Images {
			if err := r.imp.RenameImage(ctx, sess, img, name); err != nil {
				r.event(ctx, j, fmt.Sprintf("rename Image:%d to %q failed: %v", img, name, err))
			}
		}
	}
}

// importedPathOf finds which imported path a link target belongs to (the path itself, or a
// folder that holds it; after redirection, its .processed twin).
func (j *job) importedPathOf(target string) string {
	for imported := range j.origin {
		if imported == target || within(imported, target) {
			return imported
		}
	}
	if j.pre != nil {
		for _, out := range j.pre.Outputs {
			if out.Processed == target || within(out.Processed, target) {
				if out.Alt != "" && j.pre.TempDir != "" {
					return out.Alt
				}
				return out.Processed
			}
		}
	}
	return target
}

// annotate attaches one MapAnnotation per Image or Plate with the keys the old service wrote.
// Failures are recorded in the order's history and do not fail the order.
func (r *Runner) annotate(ctx context.Context, j *job, sess *omero.Session, res omero.ImportResult, sources map[int64]fileset) {
	stamp := time.Now().UTC().Format("2006-01-02 15:04:05")
	for _, fs := range res.Filesets {
		imported, origin := "", ""
		if src := sources[fs.ID]; len(src.targets) > 0 {
			imported = j.importedPathOf(src.targets[0])
			origin = j.originOf(src.targets[0])
			if o, ok := j.origin[imported]; ok && j.pre != nil {
				origin = o
			}
		} else if len(j.Files) > 0 {
			origin = j.Files[0]
		}
		kv := r.keyValues(j, origin, imported, stamp)
		var targets []string
		for _, id := range fs.Images {
			targets = append(targets, "Image:"+strconv.FormatInt(id, 10))
		}
		for _, id := range fs.Plates {
			targets = append(targets, "Plate:"+strconv.FormatInt(id, 10))
		}
		for _, t := range targets {
			if err := r.imp.Annotate(ctx, sess, r.cfg.Namespace, kv, []string{t}); err != nil {
				r.event(ctx, j, fmt.Sprintf("annotation of %s failed: %v", t, err))
			}
		}
	}
}

func (r *Runner) keyValues(j *job, origin, imported, stamp string) [][2]string {
	o := j.Order
	files, _ := json.Marshal(j.Files)
	fileNames := o.FileNames
	if fileNames == "" {
		names := make([]string, len(j.Files))
		for i, f := range j.Files {
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
		for _, pair := range j.kv[imported] {
			kv = append(kv, [2]string{"processing_output_" + pair[0], pair[1]})
		}
	}
	dir := filepath.Dir(origin)
	for _, csvPath := range []string{filepath.Join(dir, "metadata.csv"), filepath.Join(dir, ".processed", "metadata.csv")} {
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
