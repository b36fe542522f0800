package runner_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/runner"
)

// maxStarts is the process budget of an order: `omero load` (login + sessions key), the import,
// and two `omero load` batches (see package omero).
const maxStarts = 4

// TestStartsPerOrder: a one-file order and a 24-image plate each start the CLI at most four times;
// a plate is annotated on the Plate only unless annotate_plate_images is set; a metadata.csv value
// that looks like an option reaches the annotation unchanged.
func TestStartsPerOrder(t *testing.T) {
	cases := []struct {
		name        string
		plateImages bool
	}{{"plate only", false}, {"plate images too", true}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t, engines[0].url, withConfig(func(cfg *runner.Config) { cfg.AnnotatePlateImages = c.plateImages }))
			f := e.file("demo/alice/one.tif", "pixels")
			e.file("demo/alice/metadata.csv", "key,value\ntemperature,-20C\n--flag,-k\n")
			p := e.file("demo/alice/wells__series_24.plate", "plate")
			e.start()

			before := len(e.double.State(t).Calls)
			o := e.expect(e.insert("alice", "Demo", "151", "Dataset", []string{f}), db.StageCompleted, 20*time.Second)
			if n := len(e.double.State(t).Calls) - before; n > maxStarts {
				t.Errorf("one file: %d CLI starts, want at most %d", n, maxStarts)
			}
			st := e.double.State(t)
			ann := annotationOf(t, st, fmt.Sprintf("Image:%d", o.Result.Images[0]))
			if ann["csv_temperature"] != "-20C" || ann["csv_--flag"] != "-k" {
				t.Errorf("values like options: %v", ann)
			}

			before = len(st.Calls)
			o = e.expect(e.insert("alice", "Demo", "201", "Screen", []string{p}), db.StageCompleted, 20*time.Second)
			if n := len(e.double.State(t).Calls) - before; n > maxStarts {
				t.Errorf("24-image plate: %d CLI starts, want at most %d", n, maxStarts)
			}
			if len(o.Result.Plates) != 1 || len(o.Result.Images) != 24 {
				t.Fatalf("plate result %+v", o.Result)
			}
			st = e.double.State(t)
			if ann := annotationOf(t, st, fmt.Sprintf("Plate:%d", o.Result.Plates[0])); ann["UUID"] != o.UUID {
				t.Errorf("plate annotation %v", ann)
			}
			imageLinks := 0
			for _, l := range st.Links {
				for _, id := range o.Result.Images {
					if l.Parent == fmt.Sprintf("Image:%d", id) {
						imageLinks++
					}
				}
			}
			if want := map[bool]int{false: 0, true: 24}[c.plateImages]; imageLinks != want {
				t.Errorf("images of the plate annotated: %d, want %d", imageLinks, want)
			}
			for _, s := range st.Sessions {
				if !s.Closed {
					t.Errorf("session %s left open", s.Key)
				}
			}
		})
	}
}
