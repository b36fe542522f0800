package order

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseRow(t *testing.T) {
	id := int64(7)
	good := Row{UUID: "u-1", Group: "Demo", User: "alice", DestinationType: "dataset", DestinationID: "151", Files: `["/data/a.tif"]`}
	pre := &Preprocessing{ID: 7, Container: "img:1", InputFile: DefaultInputFile, OutputFolder: "/data"}
	for _, tc := range []struct {
		name string
		edit func(*Row)
		want string // "" for a row that parses
	}{
		{"plain", func(*Row) {}, ""},
		{"empty options", func(r *Row) { r.ImportOptions = "{}" }, ""},
		{"schema 1", func(r *Row) { r.ImportOptions = `{"schema": 1, "plateLabelName": null}` }, ""},
		{"schema 2 without operations", func(r *Row) { r.ImportOptions = `{"schema": 2, "registration": {}, "operations": []}` }, ""},
		{"with preprocessing", func(r *Row) { r.PreprocessingID, r.Preprocessing = &id, pre }, ""},
		{"bad target first", func(r *Row) { r.DestinationType, r.ImportOptions = "Project", "{" }, "destination_type:"},
		{"malformed options", func(r *Row) { r.ImportOptions = `{"schema": 2,` }, "import_options: is not a JSON object"},
		{"unknown schema", func(r *Row) { r.ImportOptions = `{"schema": 3}` }, "import_options: schema 3 is not supported"},
		{"bad operations", func(r *Row) { r.ImportOptions = `{"schema": 2, "operations": 1}` }, "import_options: operations is not a list"},
		{"operation", func(r *Row) { r.ImportOptions = `{"schema": 2, "operations": [{"kind": "biomero.shallow-zarr"}, {}]}` },
			"import_options: asks for operation biomero.shallow-zarr, (no kind), which omero-adi does not perform"},
		{"missing preprocessing row", func(r *Row) { r.PreprocessingID = &id }, "preprocessing_id: 7 names no row of imports_preprocessing"},
		{"bad files", func(r *Row) { r.Files = "[" }, "files: is not a JSON list"},
		{"no user", func(r *Row) { r.User = "" }, "user_name: is empty"},
		{"bad preprocessing row", func(r *Row) {
			p := *pre.Copy()
			p.Container = ""
			r.PreprocessingID, r.Preprocessing = &id, &p
		}, "imports_preprocessing.container: required: name the container image (row 7)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.edit(&r)
			d, err := ParseRow(r)
			if tc.want == "" {
				if err != nil || d.Target != (Target{Kind: Dataset, ID: 151}) || len(d.Files) != 1 || d.User != "alice" {
					t.Fatalf("ParseRow = %+v, %v", d, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseRow = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		name, s string
		n       int
		want    string
	}{
		{"short", "abc", 3, "abc"},
		{"cut", "abcdef", 3, "abc…"},
		{"empty", "", 0, ""},
		{"inside a character", "aé", 2, "a…"}, // é is two bytes
		{"after a character", "aéb", 3, "aé…"},
		{"invalid bytes", "\xff\xfe\xfd", 1, "\xff…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Clip(tc.s, tc.n)
			if got != tc.want {
				t.Fatalf("Clip(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
			}
			if utf8.ValidString(tc.s) && !utf8.ValidString(got) {
				t.Fatalf("Clip(%q, %d) = %q splits a character", tc.s, tc.n, got)
			}
		})
	}
}
