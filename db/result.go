package db

import (
	"fmt"
	"strconv"
	"strings"
)

// Outcomes of an order's import (Result.Outcome): whether every file the order names is in OMERO.
const (
	OutcomeComplete = "complete"         // every file of the order is in OMERO
	OutcomePartial  = "partial"          // some files are in OMERO, some are not
	OutcomeNothing  = "nothing imported" // no file of the order is in OMERO
)

// States of one file of an order (FileResult.State).
const (
	FileImported = "imported"  // in OMERO, as FileResult.Filesets
	FilePartial  = "partial"   // a folder of which some filesets are in OMERO (FileResult.InOMERO lists their files) and some are not
	FileFailed   = "failed"    // tried and not in OMERO; Reason says why
	FileNotTried = "not tried" // not in OMERO: the importer stopped before it
	FileUnknown  = "unknown"   // the import's record does not say whether it reached OMERO
)

// FileResult is what became of one file (or folder) the order names. Filesets, Images and Plates
// are the OMERO objects it is in; for a folder, everything imported from below it.
type FileResult struct {
	Path     string  `json:"path"` // as the order's files column names it
	State    string  `json:"state"`
	Filesets []int64 `json:"filesets,omitempty"`
	Images   []int64 `json:"images,omitempty"`
	Plates   []int64 `json:"plates,omitempty"`
	Reason   string  `json:"reason,omitempty"` // why it is not (entirely) in OMERO, in plain words
	// InOMERO lists, for a partial folder, the client paths below it that are in OMERO: a retry
	// imports the other files below it.
	InOMERO []string `json:"in_omero,omitempty"`
}

// In reports whether the file is entirely in OMERO.
func (f FileResult) In() bool { return f.State == FileImported }

// Outcome computes the order's outcome from its files: complete when every file is imported,
// nothing imported when none is even partly, else partial. No files: "".
func Outcome(files []FileResult) string {
	if len(files) == 0 {
		return ""
	}
	in, some := 0, 0
	for _, f := range files {
		switch {
		case f.In():
			in++
		case f.State == FilePartial || f.State == FileUnknown || len(f.Filesets) > 0:
			some++
		}
	}
	switch {
	case in == len(files):
		return OutcomeComplete
	case in == 0 && some == 0:
		return OutcomeNothing
	default:
		return OutcomePartial
	}
}

// Describe says in plain words which files of the order are in OMERO (with their Fileset, Image
// and Plate ids) and which are not (with why), e.g.
//
//	2 of 3 files are in OMERO: /data/a.tif as Fileset 55 (Image 101); /data/b.tif as Fileset 56
//	(Images 102, 103). Not in OMERO: /data/c.tif (failed: …).
//
// Each list names at most limit files (0: all) and then says how many more there are. A result
// without per-file outcomes (written before they were recorded) names its objects only. It is
// the text of an order's description after a partial or empty import, and what a notification
// says about the files.
func (r Result) Describe(limit int) string {
	if len(r.Files) == 0 {
		if len(r.Filesets) == 0 && len(r.Images) == 0 && len(r.Plates) == 0 {
			return "Nothing of the order is in OMERO."
		}
		return "In OMERO: " + objects(r.Filesets, r.Images, r.Plates) + "."
	}
	var in, part, out []string
	for _, f := range r.Files {
		switch {
		case f.In():
			in = append(in, f.Path+" as "+objects(f.Filesets, f.Images, f.Plates))
		case f.State == FilePartial:
			part = append(part, fmt.Sprintf("%s as %s (not the rest: %s)", f.Path, objects(f.Filesets, f.Images, f.Plates), f.Reason))
		default:
			why := f.State
			if f.Reason != "" {
				why += ": " + f.Reason
			}
			out = append(out, f.Path+" ("+why+")")
		}
	}
	n := len(r.Files)
	var b strings.Builder
	switch {
	case len(in) == n:
		fmt.Fprintf(&b, "%s in OMERO: %s.", allOf(n), list(in, limit))
	case len(in) == 0:
		fmt.Fprintf(&b, "%s entirely in OMERO.", noneOf(n))
	default:
		verb := "are"
		if len(in) == 1 {
			verb = "is"
		}
		fmt.Fprintf(&b, "%d of %d files %s in OMERO: %s.", len(in), n, verb, list(in, limit))
	}
	if len(part) > 0 {
		fmt.Fprintf(&b, " In OMERO in part: %s.", list(part, limit))
	}
	if len(out) > 0 {
		fmt.Fprintf(&b, " Not in OMERO: %s.", list(out, limit))
	}
	return b.String()
}

func allOf(n int) string {
	if n == 1 {
		return "The file is"
	}
	return "All " + strconv.Itoa(n) + " files are"
}

func noneOf(n int) string {
	if n == 1 {
		return "The file is not"
	}
	return "None of the " + strconv.Itoa(n) + " files is"
}

// list joins items with "; ", at most limit of them (0: all), then "and N more".
func list(items []string, limit int) string {
	if limit > 0 && len(items) > limit {
		return strings.Join(items[:limit], "; ") + fmt.Sprintf("; and %d more", len(items)-limit)
	}
	return strings.Join(items, "; ")
}

// objects names OMERO objects: "Fileset 55 (Images 101, 102; Plate 4)"; without filesets (a
// registered OME-Zarr creates images without one) the others alone: "Images 7, 8".
func objects(filesets, images, plates []int64) string {
	var inner []string
	for _, g := range []struct {
		kind string
		ids  []int64
	}{{"Image", images}, {"Plate", plates}} {
		if t := named(g.kind, g.ids); t != "" {
			inner = append(inner, t)
		}
	}
	s := named("Fileset", filesets)
	switch {
	case s == "" && len(inner) == 0:
		return "an unknown fileset"
	case s == "":
		return strings.Join(inner, "; ")
	case len(inner) > 0:
		s += " (" + strings.Join(inner, "; ") + ")"
	}
	return s
}

// named is "Image 101" or "Images 101, 102", "" for no ids.
func named(kind string, ids []int64) string {
	if len(ids) == 0 {
		return ""
	}
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatInt(id, 10)
	}
	if len(ids) > 1 {
		kind += "s"
	}
	return kind + " " + strings.Join(s, ", ")
}
