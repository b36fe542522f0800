package runner

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// Every text a person reads about how an order ended is written here: the description of a
// success (summary), of a failure (failureText: what went wrong and what to do, with a retry hint
// or the warning not to retry after the images reached OMERO), of a cancel, and the history event
// of an import whose lease was lost.

// failure is an outcome that ends the order Import Failed with a description for people.
// imported marks a failure after the images reached OMERO, where a retry would import them again;
// partial one where the order's result says which files are in OMERO, so that a retry imports
// only the others; all one where only a retry of every file can follow (orders retry --all).
type failure struct {
	desc     string
	imported bool
	partial  bool
	all      bool
}

// describeLimit bounds how many files a description names in each of its lists (in OMERO, not
// in OMERO); `orders show` lists every file.
const describeLimit = 20

// importCause says how an import that left files out ended: when its log names the files that
// failed (the description lists them) with the importer's summary and where its log is, else
// with the adapter's error (its advice and the log's last lines).
func (r *Runner) importCause(j *job, res omero.ImportResult, ierr error) error {
	what := "import into " + j.Target.String()
	sum := res.Log.Summary
	if sum == "" {
		sum = "no summary"
	}
	switch {
	case ierr != nil && len(res.Log.Failed) == 0:
		return describeOMERO(what, ierr)
	case res.ExitCode != 0:
		return failf("%s stopped at a failed fileset (exit status %d; the importer's summary: %s; its log: %s).", what, res.ExitCode, sum, r.errsFile(j))
	default:
		return failf("%s left files out (the importer's summary: %s; its log: %s).", what, sum, r.errsFile(j))
	}
}

// partialFailure is the failure of an import that left some or none of the order's files in
// OMERO (ver says which): cause, then the files in plain words. A file that preprocessing made
// into several images, some of them in OMERO, cannot be retried without importing those again.
func partialFailure(j *job, cause error, ver db.Result) error {
	desc := strings.TrimRight(cause.Error(), ". ") + ". " + ver.Describe(describeLimit)
	if ver.Outcome == db.OutcomeNothing {
		return failf("%s", desc)
	}
	for _, f := range ver.Files {
		if f.State == db.FilePartial && j.pre != nil {
			return &failure{desc: desc, imported: true}
		}
	}
	return &failure{desc: desc, partial: true}
}

func (f *failure) Error() string { return f.desc }

func failf(format string, args ...any) error { return &failure{desc: fmt.Sprintf(format, args...)} }

// retryAllf is a failure after which only a retry of every file can follow.
func retryAllf(format string, args ...any) error {
	return &failure{desc: fmt.Sprintf(format, args...), all: true}
}

// describeOMERO turns an adapter error into an order description: what was tried and why it failed.
func describeOMERO(what string, err error) error {
	return failf("%s failed: %v.", what, err)
}

// describePreprocessing turns a failed preprocessing run into the order's description: what went
// wrong, with which container on which file, and where the container's output is (a
// *preprocess.Error says all that).
func describePreprocessing(p *order.Preprocessing, err error) error {
	var pe *preprocess.Error
	switch {
	case errors.As(err, &pe):
		return failf("%v.", pe)
	case errors.Is(err, preprocess.ErrSpec):
		return failf("imports_preprocessing row %d cannot be used: %v.", p.ID, err)
	default:
		return failf("preprocessing with %s failed: %v.", p.Container, err)
	}
}

// retryHint tells a person how to run the order again.
func retryHint(uuid string, fixFirst bool) string {
	how := fmt.Sprintf("omero-adi orders retry %s (or in SQL: UPDATE imports SET stage = 'Import Pending' WHERE uuid = '%s';)", uuid, uuid)
	if fixFirst {
		return "Fix the order's row, then retry with: " + how
	}
	return "Retry with: " + how
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

// failureText is the description of an order that failed with err: err's text (a *failure or an
// invalid row; anything else is unexpected), then how to retry, or, when the images reached
// OMERO, not to.
func failureText(uuid string, err error) string {
	var f *failure
	desc := err.Error()
	if !errors.As(err, &f) && !errors.Is(err, order.ErrInvalid) {
		desc = "unexpected error: " + desc
	}
	hint := retryHint(uuid, errors.Is(err, order.ErrInvalid))
	switch {
	case f != nil && f.imported:
		hint = "The images are in OMERO (see the order's result): do not retry the order, that would import them again."
	case f != nil && f.partial:
		hint = "A retry imports only the files that are not in OMERO yet. " + hint + " With --all it imports every file again."
	case f != nil && f.all:
		hint = fmt.Sprintf("Once checked, import every file again with: omero-adi orders retry --all %s (or in SQL: UPDATE imports SET stage = 'Import Pending', result = NULL WHERE uuid = '%s';)", uuid, uuid)
	}
	return strings.TrimRight(desc, ". ") + ". " + hint
}

// cancelledText is the description of an order cancelled while it ran.
func cancelledText(uuid string) string {
	return "cancelled on request while running; anything imported before the cancel stays in OMERO. " + retryHint(uuid, false)
}

// lostAfterImportText is the history event of an order whose import reached OMERO after this
// worker lost its lease.
func lostAfterImportText(res db.Result) string {
	if len(res.Filesets) == 0 {
		return fmt.Sprintf("registered as %s, but the order was recovered meanwhile (this worker lost its lease): "+
			"the images are in OMERO; do not retry the order, that would register them again", objectList(res))
	}
	return fmt.Sprintf("imported as %s (%s), but the order was recovered meanwhile (this worker lost its lease): "+
		"the images are in OMERO; do not retry the order, that would import them again",
		filesetList(res.Filesets), objectList(res))
}
