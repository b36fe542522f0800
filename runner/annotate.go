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

	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

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

// rename collects the names their container chose for Images, where that differs from the file
// name (written by Finish).
func (r *Runner) rename(j *job, res omero.ImportResult, sources map[int64]fileset, renames map[int64]string) {
	for _, fs := range res.Filesets {
		src := sources[fs.ID]
		if len(src.targets) == 0 {
			continue
		}
		it, _ := j.source(src.targets[0])
		if it == nil || it.output == nil || it.output.Name == "" || it.output.Name == filepath.Base(it.path) {
			continue
		}
		name := it.output.Name
		for _, img := range fs.Images {
			renames[img] = name
		}
	}
}

// annotate gives each target's MapAnnotation (created by Prepare, perr its error) the keys the old
// service wrote, into values for Finish. Failures are recorded in the order's history and do not
// fail the order.
func (r *Runner) annotate(ctx context.Context, j *job, res omero.ImportResult, sources map[int64]fileset, targets [][]string,
	anns map[string]string, perr error, values map[string][][2]string) {
	stamp := time.Now().UTC().Format("2006-01-02 15:04:05")
	var missing []string
	for i, fs := range res.Filesets {
		var it *item
		origin := ""
		if src := sources[fs.ID]; len(src.targets) > 0 {
			it, origin = j.source(src.targets[0])
		} else if len(j.Files) > 0 {
			origin = j.Files[0].Path
		}
		kv := r.keyValues(j, origin, it, stamp)
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

func (r *Runner) keyValues(j *job, origin string, it *item, stamp string) [][2]string {
	o := j.Order
	var out preprocess.Output // the container's result of it; zero without one
	if it != nil && it.output != nil {
		out = *it.output
	}
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
	if out.Processed != "" {
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
		for _, pair := range out.KeyValues {
			kv = append(kv, [2]string{"processing_output_" + pair[0], pair[1]})
		}
	}
	dir := filepath.Dir(origin)
	csvPaths := []string{filepath.Join(dir, "metadata.csv"), filepath.Join(dir, r.cfg.ProcessedFolder, "metadata.csv")}
	if out.ProcessedDir != "" {
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
