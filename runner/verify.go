package runner

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// Verification: what became of each file an order names, from what the import printed (its ids,
// its log's summary and error lines, see omero.Log) and the files of each created fileset as the
// server records them (read in the annotation batch, at no extra CLI start) or, when those could
// not be read, as the ManagedRepository links show them. A retry of a partial order starts from
// that record: the files in OMERO are not imported again.

// earlier is what an order's previous attempts put into OMERO, by the order's file path.
type earlier struct {
	result *db.Result
	files  map[string]db.FileResult // only the files (partly) in OMERO
}

// previous reads the order's stored result at claim time (orders retry and the SQL retry both
// keep it). A result with objects in OMERO but no per-file record, or with files that may be in
// OMERO, cannot tell what to import: the order fails and says how to import every file again.
func previous(o db.Order) (earlier, error) {
	e := earlier{files: map[string]db.FileResult{}}
	r := o.Result
	if r == nil || (len(r.Files) == 0 && len(r.Filesets) == 0) {
		return e, nil
	}
	const check = "check the order's objects in OMERO (remove them if they are incomplete)"
	if len(r.Files) == 0 {
		return e, retryAllf("an earlier attempt put %s into OMERO, but which of the order's files they hold is not recorded, so a retry could import files twice; %s.",
			filesetList(r.Filesets), check)
	}
	for _, f := range r.Files {
		switch f.State {
		case db.FileUnknown:
			return e, retryAllf("an earlier attempt may have put %s into OMERO, but it did not record its outcome (%s); %s.", f.Path, f.Reason, check)
		case db.FileImported, db.FilePartial:
			e.files[f.Path] = f
		}
	}
	e.result = r
	return e, nil
}

// done reports whether the order's file path is in OMERO from an earlier attempt.
func (e earlier) done(path string) bool { return e.files[path].State == db.FileImported }

// missing lists what a retry imports of a folder that an earlier attempt imported in part: the
// files below it that none of its filesets holds.
func (e earlier) missing(f string, real string) ([]string, error) {
	in := map[string]bool{}
	for _, p := range e.files[f].InOMERO {
		in[p] = true
	}
	var out []string
	err := filepath.WalkDir(real, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && !in[p] {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// verify works out the outcome of each file of the order after its import (res; rerr its error,
// nil when it exited 0), with entries the files of each fileset (fileset id -> client paths; a
// fileset without entries is matched to its file only when the order imported one path), and
// merges the earlier attempts' files.
func (r *Runner) verify(j *job, res omero.ImportResult, rerr error, entries map[int64][]string, prev earlier) db.Result {
	out := j.resultOf(res)
	if p := prev.result; p != nil {
		out.Filesets = append(append([]int64(nil), p.Filesets...), out.Filesets...)
		out.Images = append(append([]int64(nil), p.Images...), out.Images...)
		out.Plates = append(append([]int64(nil), p.Plates...), out.Plates...)
	}
	out.Summary = res.Log.Summary

	// Which item each fileset came from.
	byItem := map[*item][]omero.Fileset{}
	var unmatched []omero.Fileset
	for _, fs := range res.Filesets {
		var it *item
		for _, p := range entries[fs.ID] {
			if it = j.itemOf(p); it != nil {
				break
			}
		}
		if it == nil && len(j.items) == 1 && len(entries[fs.ID]) == 0 {
			it = &j.items[0]
		}
		if it == nil {
			unmatched = append(unmatched, fs)
			continue
		}
		byItem[it] = append(byItem[it], fs)
	}
	stopped := rerr != nil || res.ExitCode != 0

	for _, f := range j.Files {
		if prev.done(f.Path) {
			out.Files = append(out.Files, prev.files[f.Path])
			continue
		}
		fr := db.FileResult{Path: f.Path, State: db.FileImported}
		if p, ok := prev.files[f.Path]; ok { // a partial folder: what an earlier attempt imported of it
			fr.Filesets, fr.Images, fr.Plates, fr.InOMERO = p.Filesets, p.Images, p.Plates, p.InOMERO
		}
		var reasons []string
		tried, some := false, len(fr.Filesets) > 0
		for i := range j.items {
			it := &j.items[i]
			if it.origin != f.Path {
				continue
			}
			tried = true
			got := byItem[it]
			for _, id := range it.found {
				got = append(got, omero.Fileset{ID: id})
				out.Filesets = append(out.Filesets, id)
			}
			for _, fs := range got {
				fr.Filesets = append(fr.Filesets, fs.ID)
				fr.Images = append(fr.Images, fs.Images...)
				fr.Plates = append(fr.Plates, fs.Plates...)
				fr.InOMERO = append(fr.InOMERO, entries[fs.ID]...)
			}
			some = some || len(got) > 0
			failed := failuresBelow(res.Log.Failed, it.path)
			reasons = append(reasons, failed...)
			switch {
			case len(failed) > 0:
				fr.State = worse(fr.State, db.FileFailed)
			case len(got) > 0 && f.Dir && stopped:
				// The importer stopped at a failure: what else lies below the folder is unknown.
				fr.State = worse(fr.State, db.FileNotTried)
				reasons = append(reasons, "the importer stopped at a failure before it tried everything below the folder")
			case len(got) > 0:
			case res.Log.Filesets > len(res.Filesets):
				// The ids of some filesets were lost (log_dir filled up during the import).
				fr.State = worse(fr.State, db.FileUnknown)
				reasons = append(reasons, fmt.Sprintf("the importer's summary counts %s but it reported the ids of %d; it may be in OMERO",
					plural(res.Log.Filesets, "fileset"), len(res.Filesets)))
			case len(unmatched) > 0:
				fr.State = worse(fr.State, db.FileUnknown)
				reasons = append(reasons, "the import created "+filesetList(ids(unmatched))+" whose files could not be read; it may hold this file")
			case stopped:
				fr.State = worse(fr.State, db.FileNotTried)
				reasons = append(reasons, "the importer stopped at an earlier failure before it tried this file")
			default:
				fr.State = worse(fr.State, db.FileFailed)
				reasons = append(reasons, "the importer did not import it: it is not in a format OMERO reads, or it failed while the files were scanned (see "+r.errsFile(j)+")")
			}
		}
		if !tried {
			continue // preprocessing produced nothing for it: the order failed before the import
		}
		switch {
		case fr.State != db.FileImported && some && fr.State != db.FileUnknown:
			fr.State = db.FilePartial
		case fr.State == db.FileImported:
			fr.InOMERO = nil // every file below it is in OMERO
		}
		if fr.State != db.FilePartial {
			fr.InOMERO = nil
		}
		sort.Strings(fr.InOMERO)
		fr.Reason = strings.Join(reasons, "; ")
		out.Files = append(out.Files, fr)
	}
	out.Outcome = db.Outcome(out.Files)
	return out
}

// itemOf finds the item a fileset's file p came from: by its path, or by the path the importer
// records for it (omero.ClientPath: the server's names are made portable).
func (j *job) itemOf(p string) *item {
	if it, _ := j.source(p); it != nil {
		return it
	}
	for i := range j.items {
		if order.Within(omero.ClientPath(j.items[i].path), p) {
			return &j.items[i]
		}
	}
	return nil
}

// worse is the state of a file with two parts in states a and b.
func worse(a, b string) string {
	rank := map[string]int{db.FileImported: 0, db.FileNotTried: 1, db.FileFailed: 2, db.FileUnknown: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// failuresBelow lists what the importer's log says of path, or of the files below it.
func failuresBelow(failed map[string]string, path string) []string {
	var out []string
	for p, why := range failed {
		switch {
		case p == path:
			out = append(out, why)
		case order.Within(path, p):
			out = append(out, p+": "+why)
		}
	}
	sort.Strings(out)
	return out
}

func ids(fs []omero.Fileset) []int64 {
	out := make([]int64, len(fs))
	for i, f := range fs {
		out[i] = f.ID
	}
	return out
}

// errsFile is the order's CLI log with the importer's log and summary (omero.LogFiles).
func (r *Runner) errsFile(j *job) string {
	_, errs := omero.LogFiles(r.cfg.LogDir, j.Order.UUID)
	return errs
}

// preprocessingLog is the order's log of its preprocessing containers.
func (r *Runner) preprocessingLog(uuid string) string {
	return filepath.Join(r.cfg.LogDir, "preprocessing."+uuid+".log")
}
