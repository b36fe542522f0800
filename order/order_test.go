package order

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDestination(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		err  string // in the error; "" when valid
	}{
		{in: "Dataset:151", want: Target{Kind: Dataset, ID: 151}},
		{in: "dataset:151", want: Target{Kind: Dataset, ID: 151}},
		{in: "Screen:7", want: Target{Kind: Screen, ID: 7}},
		{in: "Dataset:name:x", want: Target{Kind: Dataset, Name: "x"}},
		{in: "Screen:name:plates 2024", want: Target{Kind: Screen, Name: "plates 2024"}},
		{in: "Dataset:name:a:b", want: Target{Kind: Dataset, Name: "a:b"}},
		{in: "", err: "destination: required"},
		{in: "151", err: `"151" is not one of`},
		{in: "Project:1", err: `"Project" is neither Dataset nor Screen`},
		{in: "Dataset:0", err: `"0" is neither a positive Dataset id nor name:NAME`},
		{in: "Dataset:-1", err: `"-1" is neither a positive Dataset id`},
		{in: "Dataset:+1", err: `"+1" is neither`},
		{in: "Dataset:1e3", err: `"1e3" is neither`},
		{in: "Dataset:99999999999999999999", err: "is neither"},
		{in: "Dataset:name:", err: `"name:" names no Dataset`},
		{in: "Screen:name:  ", err: "names no Screen"},
		{in: "Dataset:name:a\nb", err: "control character"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseDestination(tc.in)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseDestination(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
				}
				// The columns parse back to the same target.
				back, err := ParseTarget(got.TypeColumn(), got.IDColumn())
				if err != nil || back != got {
					t.Fatalf("ParseTarget(%q, %q) = %+v, %v", got.TypeColumn(), got.IDColumn(), back, err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != "destination" || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("ParseDestination(%q) = %v, want a destination error containing %q", tc.in, err, tc.err)
			}
		})
	}
}

func TestParseTargetNamesTheColumn(t *testing.T) {
	if _, err := ParseTarget("Project", "1"); err == nil || !strings.HasPrefix(err.Error(), "destination_type: ") {
		t.Errorf("bad kind: %v", err)
	}
	if _, err := ParseTarget("Dataset", "12a"); err == nil || !strings.HasPrefix(err.Error(), `destination_id: "12a"`) {
		t.Errorf("bad id: %v", err)
	}
	if got, err := ParseTarget(" Screen ", " 201 "); err != nil || got != (Target{Kind: Screen, ID: 201}) {
		t.Errorf("spaces around a row's columns: %+v, %v", got, err)
	}
}

func TestTargetString(t *testing.T) {
	if s := (Target{Kind: Dataset, ID: 151}).String(); s != "Dataset 151" {
		t.Errorf("String = %q", s)
	}
	if s := (Target{Kind: Screen, Name: "x"}).String(); s != `Screen named "x"` {
		t.Errorf("String = %q", s)
	}
}

func TestDraftValidate(t *testing.T) {
	good := Draft{Group: "Demo", User: "alice", Target: Target{Kind: Dataset, ID: 151}, Files: []string{"/data/a.tif"}}
	if err := good.Validate(); err != nil {
		t.Fatalf("good draft: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Draft)
		want string
	}{
		{"no user", func(d *Draft) { d.User = " " }, "user_name: is empty"},
		{"no group", func(d *Draft) { d.Group = "" }, "group_name: is empty"},
		{"control in user", func(d *Draft) { d.User = "a\nb" }, "user_name"},
		{"zero target", func(d *Draft) { d.Target = Target{Kind: Dataset} }, `destination_id: "0"`},
		{"negative target", func(d *Draft) { d.Target.ID = -3 }, `destination_id: "-3"`},
		{"bad kind", func(d *Draft) { d.Target.Kind = "Project" }, `destination_type: "Project"`},
		{"no files", func(d *Draft) { d.Files = nil }, "files: lists no file"},
		{"relative file", func(d *Draft) { d.Files = []string{"/data/a.tif", "b.tif"} }, `files[1]: "b.tif" is not an absolute path`},
		{"dot-dot", func(d *Draft) { d.Files = []string{"/data/../etc/passwd"} }, `files[0]: "/data/../etc/passwd" contains ".."`},
		{"line break", func(d *Draft) { d.Files = []string{"/data/a\n.tif"} }, "files[0]: "},
		{"long uuid", func(d *Draft) { d.UUID = strings.Repeat("a", 37) }, "uuid: "},
		{"bad preprocessing", func(d *Draft) { d.Preprocessing = &Preprocessing{InputFile: "{Files}", OutputFolder: "/data"} }, "preprocessing.container: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			d.Files = append([]string(nil), good.Files...)
			tc.edit(&d)
			err := d.Validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestPreprocessingCheck(t *testing.T) {
	good := Preprocessing{Container: "img:1", InputFile: DefaultInputFile, OutputFolder: "/data", AltOutputFolder: "/out",
		ExtraParams: map[string]string{"saveoption": "single"}}
	if err := good.Check(); err != nil {
		t.Fatalf("good: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Preprocessing)
		want string
	}{
		{"no container", func(p *Preprocessing) { p.Container = "" }, "preprocessing.container: required"},
		{"flag as container", func(p *Preprocessing) { p.Container = "--privileged" }, `preprocessing.container: "--privileged"`},
		{"no input file", func(p *Preprocessing) { p.InputFile = "" }, "preprocessing.input_file: required"},
		{"no output folder", func(p *Preprocessing) { p.OutputFolder = "" }, "preprocessing.output_folder: required"},
		{"relative output folder", func(p *Preprocessing) { p.OutputFolder = "data" }, `preprocessing.output_folder: "data" is not an absolute path`},
		{"root output folder", func(p *Preprocessing) { p.OutputFolder = "/" }, `preprocessing.output_folder: "/"`},
		{"colon in alt", func(p *Preprocessing) { p.AltOutputFolder = "/out:rw" }, `preprocessing.alt_output_folder: "/out:rw"`},
		{"alt inside output", func(p *Preprocessing) { p.AltOutputFolder = "/data/out" }, "overlaps"},
		{"reserved param", func(p *Preprocessing) { p.ExtraParams = map[string]string{"inputFile": "x"} }, `bad parameter name "inputFile"`},
		{"flag param", func(p *Preprocessing) { p.ExtraParams = map[string]string{"--x": "1"} }, `bad parameter name "--x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := *good.Copy()
			tc.edit(&p)
			if err := p.Check(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
	c := good.Copy()
	c.ExtraParams["saveoption"] = "changed"
	if good.ExtraParams["saveoption"] != "single" {
		t.Fatal("Copy shares extra_params")
	}
}

func TestRootsCheck(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "data")
	for _, p := range []string{"demo/a.tif", "lab/b.tif", "demo/folder/c.tif"} {
		p = filepath.Join(base, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	outside := filepath.Join(dir, "outside.tif")
	if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(base, "demo", "link.tif")); err != nil {
		t.Fatal(err)
	}
	r := Roots{BaseDir: base, Groups: map[string][]string{"Lab": {filepath.Join(base, "lab")}, "Gone": {"/nonexistent"}}}
	got, err := r.Check("Demo", []string{base + "/demo//a.tif", base + "/demo/folder"})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Path != base+"/demo/a.tif" || got[0].Dir || !got[1].Dir || got[1].Real != base+"/demo/folder" {
		t.Fatalf("Check = %+v", got)
	}
	for _, tc := range []struct {
		name, group, file, want string
	}{
		{"missing", "Demo", base + "/demo/nope.tif", "does not exist"},
		{"outside", "Demo", outside, "outside the allowed roots"},
		{"link outside", "Demo", base + "/demo/link.tif", "resolves to"},
		{"outside the group's roots", "Lab", base + "/demo/a.tif", "outside the allowed roots"},
		{"group without a root", "Gone", base + "/demo/a.tif", "group_name"},
		{"relative", "Demo", "demo/a.tif", "not an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Check(tc.group, []string{tc.file})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWithinAndBelow(t *testing.T) {
	cases := []struct {
		root, path    string
		within, below bool
	}{
		{"/data", "/data", true, false},
		{"/data", "/data/a.tif", true, true},
		{"/data", "/data/x/y", true, true},
		{"/data", "/database", false, false},
		{"/data", "/", false, false},
		{"/data", "/etc/passwd", false, false},
		{"/", "/", true, false},
		{"/", "/etc", true, true},
		{"/data/", "/data/a", false, false}, // not clean: callers clean first
	}
	for _, c := range cases {
		if got := Within(c.root, c.path); got != c.within {
			t.Errorf("Within(%q, %q) = %v, want %v", c.root, c.path, got, c.within)
		}
		if got := Below(c.root, c.path); got != c.below {
			t.Errorf("Below(%q, %q) = %v, want %v", c.root, c.path, got, c.below)
		}
	}
}
