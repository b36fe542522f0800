package db

import "testing"

func TestResultDescribe(t *testing.T) {
	a := FileResult{Path: "/data/a.tif", State: FileImported, Filesets: []int64{55}, Images: []int64{101}}
	b := FileResult{Path: "/data/b.tif", State: FileImported, Filesets: []int64{56}, Images: []int64{102, 103}, Plates: []int64{4}}
	c := FileResult{Path: "/data/c.tif", State: FileFailed, Reason: "the server failed to import it"}
	d := FileResult{Path: "/data/d.tif", State: FileNotTried}
	run := FileResult{Path: "/data/run", State: FilePartial, Filesets: []int64{57}, Images: []int64{104}, Reason: "/data/run/x.tif: failed"}
	for _, tc := range []struct {
		name    string
		r       Result
		limit   int
		want    string
		outcome string
	}{
		{"complete", Result{Files: []FileResult{a, b}}, 0,
			"All 2 files are in OMERO: /data/a.tif as Fileset 55 (Image 101); /data/b.tif as Fileset 56 (Images 102, 103; Plate 4).", OutcomeComplete},
		{"one file", Result{Files: []FileResult{a}}, 0, "The file is in OMERO: /data/a.tif as Fileset 55 (Image 101).", OutcomeComplete},
		{"partial", Result{Files: []FileResult{a, c, d}}, 0,
			"1 of 3 files is in OMERO: /data/a.tif as Fileset 55 (Image 101). Not in OMERO: /data/c.tif (failed: the server failed to import it); /data/d.tif (not tried).", OutcomePartial},
		{"nothing", Result{Files: []FileResult{c, d}}, 0,
			"None of the 2 files is entirely in OMERO. Not in OMERO: /data/c.tif (failed: the server failed to import it); /data/d.tif (not tried).", OutcomeNothing},
		{"a folder in part", Result{Files: []FileResult{run, d}}, 0,
			"None of the 2 files is entirely in OMERO. In OMERO in part: /data/run as Fileset 57 (Image 104) (not the rest: /data/run/x.tif: failed). Not in OMERO: /data/d.tif (not tried).", OutcomePartial},
		{"limited", Result{Files: []FileResult{a, b, c}}, 1,
			"2 of 3 files are in OMERO: /data/a.tif as Fileset 55 (Image 101); and 1 more. Not in OMERO: /data/c.tif (failed: the server failed to import it).", OutcomePartial},
		{"no per-file record", Result{Filesets: []int64{55}, Images: []int64{101}}, 0, "In OMERO: Fileset 55 (Image 101).", ""},
		{"registered zarr", Result{Files: []FileResult{{Path: "/data/z.zarr", State: FileImported, Images: []int64{7, 8}}}}, 0,
			"The file is in OMERO: /data/z.zarr as Images 7, 8.", OutcomeComplete},
		{"empty", Result{}, 0, "Nothing of the order is in OMERO.", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.Describe(tc.limit); got != tc.want {
				t.Errorf("Describe =\n%s\nwant\n%s", got, tc.want)
			}
			if got := Outcome(tc.r.Files); got != tc.outcome {
				t.Errorf("Outcome = %q, want %q", got, tc.outcome)
			}
		})
	}
}
