package runner

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/omero"
)

// EntryReader reads the files of filesets as OMERO holds them now (omero.Client implements it):
// fileset id -> client paths; a fileset missing from the map does not exist.
type EntryReader interface {
	Entries(ctx context.Context, filesetIDs []int64) (map[int64][]string, error)
}

// Check is the verdict of `orders verify` on one order.
type Check struct {
	UUID, Stage, Outcome string
	Files, InOMERO       int // files the order names; of them, recorded as in OMERO
	Filesets, Found      int // filesets recorded; of them, in OMERO now
	// Complete is true when every file of the order is in OMERO and still has its fileset.
	Complete bool
	// Problems says what is missing, in plain words.
	Problems []string
}

// CheckOrders re-checks finished orders against OMERO now: each fileset their results record
// still exists, and each file recorded as in OMERO is still in its filesets. It reads every
// fileset of every order with one EntryReader call (one CLI start). An order that is not
// finished, or recorded nothing in OMERO and does not say it should have, is reported as it is.
func CheckOrders(ctx context.Context, er EntryReader, orders []db.Order) ([]Check, error) {
	var all []int64
	for _, o := range orders {
		if o.Result != nil {
			all = append(all, o.Result.Filesets...)
		}
	}
	entries, err := er.Entries(ctx, all)
	if err != nil {
		return nil, fmt.Errorf("check orders: %w", err)
	}
	out := make([]Check, 0, len(orders))
	for _, o := range orders {
		out = append(out, checkOrder(o, entries))
	}
	return out, nil
}

func checkOrder(o db.Order, entries map[int64][]string) Check {
	c := Check{UUID: o.UUID, Stage: o.Stage, Complete: true}
	files, _ := o.FileList()
	c.Files = len(files)
	switch o.Stage {
	case db.StageCompleted, db.StageFailed, db.StageCancelled:
	default:
		c.Complete = false
		c.Problems = append(c.Problems, "not finished")
		return c
	}
	r := o.Result
	if r == nil || (len(r.Files) == 0 && len(r.Filesets) == 0) {
		c.Outcome = db.OutcomeNothing
		if o.Stage == db.StageCompleted && len(files) > 0 && !strings.HasPrefix(o.Description, "dry run") {
			c.Complete = false
			c.Problems = append(c.Problems, "completed without a recorded result")
		} else if o.Stage != db.StageCompleted {
			c.Complete = false
			c.Problems = append(c.Problems, "nothing of it is in OMERO")
		}
		return c
	}
	c.Outcome, c.Filesets = r.Outcome, len(r.Filesets)
	for _, id := range r.Filesets {
		if _, ok := entries[id]; ok {
			c.Found++
		} else {
			c.Complete = false
			c.Problems = append(c.Problems, fmt.Sprintf("Fileset %d no longer exists", id))
		}
	}
	if len(r.Files) == 0 {
		c.Complete = false
		c.Problems = append(c.Problems, "the result does not say which file is in which fileset")
		return c
	}
	for _, f := range r.Files {
		if !f.In() {
			c.Complete = false
			c.Problems = append(c.Problems, fmt.Sprintf("%s is not in OMERO (%s)", f.Path, f.State))
			continue
		}
		c.InOMERO++
		for _, id := range f.Filesets {
			paths, ok := entries[id]
			if !ok {
				continue // named above
			}
			// The import read the resolved path, or a converted file (preprocessing).
			if o.Preprocessing == nil && !holds(paths, f.Path) {
				c.Complete = false
				c.Problems = append(c.Problems, fmt.Sprintf("Fileset %d no longer holds %s", id, f.Path))
			}
		}
	}
	sort.Strings(c.Problems)
	return c
}

// holds reports whether a fileset's client paths hold path (a file, or a folder's files), also
// under the path's resolved name, and as the importer records names (omero.ClientPath).
func holds(paths []string, path string) bool {
	roots := []string{filepath.Clean(path), omero.ClientPath(path)}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		roots = append(roots, real, omero.ClientPath(real))
	}
	for _, p := range paths {
		for _, r := range roots {
			if order.Within(r, p) {
				return true
			}
		}
	}
	return false
}
