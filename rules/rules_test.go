package rules

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/order"
)

// base returns a valid rule; cases change what they test.
func base() Rule {
	return Rule{
		Name:        "demo-confocal",
		Group:       "Demo",
		Path:        "/data/demo/{user}/dropbox",
		Users:       []string{"alice", "bob"},
		Include:     []string{"**/*.tif", "**/*.lif"},
		Exclude:     []string{"**/tmp/**"},
		Destination: "Dataset:151",
	}
}

func with(f func(r *Rule)) Rule {
	r := base()
	f(&r)
	return r
}

var testRoots = map[string][]string{"Demo": {"/data/demo", "/data/Demo"}}

func mustCompile(t *testing.T, rs ...Rule) *Set {
	t.Helper()
	s, err := Compile(rs, "/data", testRoots)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return s
}

func TestDecodeSettle(t *testing.T) {
	tests := []struct {
		name    string
		in      string // the TOML value of settle
		want    time.Duration
		wantErr string
	}{
		{"seconds", `"60s"`, time.Minute, ""},
		{"compound", `"1m30s"`, 90 * time.Second, ""},
		{"millis", `"250ms"`, 250 * time.Millisecond, ""},
		{"string without unit", `"60"`, 0, "60"},
		{"number", `60`, 0, `rules.settle: write a duration as a string such as "30s"`},
		{"garbage", `"soon"`, 0, "soon"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode("[[rules]]\nname = \"r\"\nsettle = " + tt.in + "\n")
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode(settle = %s) = %v, want an error naming %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || len(rs) != 1 || rs[0].Settle != tt.want {
				t.Fatalf("Decode(settle = %s) = %+v, %v; want settle %v", tt.in, rs, err, tt.want)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
		check   func(t *testing.T, rs []Rule)
	}{
		{
			name: "full rule",
			in: `
[[rules]]
name = "demo-confocal"
group = "Demo"
path = "/data/demo/{user}/dropbox"
users = ["alice", "bob"]
include = ["**/*.tif", "**/*.lif"]
exclude = ["**/tmp/**"]
unit = "folder"
settle = "90s"
marker = "transfer.done"
destination = "Dataset:name:{dir}"
[rules.preprocessing]
container = "cellularimagingcf/convertleica-docker:v1.2.0"
input_file = "{Files}"
output_folder = "/data"
alt_output_folder = "/out"
extra_params = { saveoption = "single" }
`,
			check: func(t *testing.T, rs []Rule) {
				want := []Rule{{
					Name: "demo-confocal", Group: "Demo", Path: "/data/demo/{user}/dropbox",
					Users: []string{"alice", "bob"}, Include: []string{"**/*.tif", "**/*.lif"},
					Exclude: []string{"**/tmp/**"}, Unit: "folder", Settle: 90 * time.Second,
					Marker: "transfer.done", Destination: "Dataset:name:{dir}",
					Preprocessing: &order.Preprocessing{
						Container: "cellularimagingcf/convertleica-docker:v1.2.0", InputFile: "{Files}",
						OutputFolder: "/data", AltOutputFolder: "/out",
						ExtraParams: map[string]string{"saveoption": "single"},
					},
				}}
				if !reflect.DeepEqual(rs, want) {
					t.Fatalf("got %+v\nwant %+v", rs, want)
				}
			},
		},
		{name: "unknown key", in: "[[rules]]\nname = \"x\"\npaht = \"/data/x\"\n", wantErr: `unknown key "rules.paht"`},
		{name: "unknown preprocessing key", in: "[[rules]]\nname = \"x\"\n[rules.preprocessing]\nimage = \"a\"\n", wantErr: "rules.preprocessing.image"},
		{name: "bad duration", in: "[[rules]]\nname = \"x\"\nsettle = \"sixty\"\n", wantErr: `invalid duration: "sixty"`},
		{name: "duration as number", in: "[[rules]]\nname = \"x\"\nsettle = 60\n", wantErr: "settle"},
		{name: "no rules", in: "", check: func(t *testing.T, rs []Rule) {
			if len(rs) != 0 {
				t.Fatalf("got %d rules", len(rs))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Decode(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			tt.check(t, rs)
		})
	}
}

func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("20-b.toml", "[[rules]]\nname = \"b\"\n[[rules]]\nname = \"c\"\n")
	write("10-a.toml", "[[rules]]\nname = \"a\"\n")
	write("README.md", "not toml")
	write(".hidden.toml", "garbage = = =")
	rs, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(names, want) {
		t.Fatalf("names = %v, want %v", names, want)
	}

	write("30-bad.toml", "[[rules]]\nnmae = \"x\"\n")
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "30-bad.toml") || !errors.Is(err, ErrInvalid) {
		t.Fatalf("LoadDir with a bad file: %v, want error naming 30-bad.toml and wrapping ErrInvalid", err)
	}
	if _, err := LoadDir(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("LoadDir(missing) = %v, want fs.ErrNotExist", err)
	}
}

func TestIgnoredName(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"a.tif", false},
		{"plate 1.lif", false},
		{"tmpfile.tif", false},
		{".hidden", true},
		{".processed", true},
		{".a.tif.Xy12Ab", true}, // rsync temp
		{"a.tif.part", true},
		{"a.TMP", true},
		{"~$report.docx", true},
		{"~report.docx", false},
		{"", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IgnoredName(tt.name); got != tt.want {
				t.Fatalf("IgnoredName(%q) = %v, want %v", tt.name, got, tt.want)
			}
		})
	}
}

func TestZarrModes(t *testing.T) {
	set, err := Compile([]Rule{with(func(r *Rule) { r.Zarr = "Import" }),
		with(func(r *Rule) { r.Name = "other"; r.Path = "/data/demo/facility/in"; r.Users = nil; r.User = "alice" })}, "/data", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := set.ZarrModes()
	if len(got) != 1 || got["demo-confocal"] != order.ZarrImport {
		t.Errorf("ZarrModes() = %v, want only demo-confocal: import (a rule without zarr uses [omero] zarr)", got)
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		want  string // substring of the error; "" means valid
	}{
		{"valid", []Rule{base()}, ""},
		{"valid literal user", []Rule{with(func(r *Rule) { r.Path = "/data/demo/facility/in"; r.Users = nil; r.User = "alice" })}, ""},
		{"valid group placeholder", []Rule{with(func(r *Rule) {
			r.Group = "{group}"
			r.Groups = []string{"Demo"}
			r.Path = "/data/{group}/{user}/dropbox"
		})}, ""},
		{"bad include", []Rule{with(func(r *Rule) { r.Include = []string{"**["} })}, `rules[0] (demo-confocal).include: bad pattern "**["`},
		{"bad exclude", []Rule{with(func(r *Rule) { r.Exclude = []string{"[a-"} })}, `rules[0] (demo-confocal).exclude: bad pattern "[a-"`},
		{"absolute include", []Rule{with(func(r *Rule) { r.Include = []string{"/data/**"} })}, `.include: pattern must be relative`},
		{"dotdot include", []Rule{with(func(r *Rule) { r.Include = []string{"../**"} })}, `.include: pattern may not contain`},
		{"empty name", []Rule{with(func(r *Rule) { r.Name = "" })}, "rules[0].name: required"},
		{"duplicate name", []Rule{base(), with(func(r *Rule) { r.Path = "/data/demo/shared/in"; r.Users = nil; r.User = "bob" })}, "rules[1] (demo-confocal).name: duplicate of rules[0]"},
		{"no group", []Rule{with(func(r *Rule) { r.Group = "" })}, ".group: required"},
		{"no path", []Rule{with(func(r *Rule) { r.Path = "" })}, ".path: required"},
		{"relative path", []Rule{with(func(r *Rule) { r.Path = "data/demo" })}, `.path: "data/demo" is not an absolute path`},
		{"dotdot path", []Rule{with(func(r *Rule) { r.Path = "/data/demo/../../etc" })}, `is not a clean path`},
		{"trailing slash", []Rule{with(func(r *Rule) { r.Path = "/data/demo/{user}/" })}, `is not a clean path`},
		{"outside data root", []Rule{with(func(r *Rule) { r.Path = "/srv/{user}/in" })}, `.path: "/srv/{user}/in" is outside the data root "/data"`},
		{"prefix but not inside", []Rule{with(func(r *Rule) { r.Path = "/database/{user}" })}, `is outside the data root`},
		{"placeholder above data root", []Rule{with(func(r *Rule) { r.Path = "/{user}/in" })}, `is outside the data root`},
		{"partial placeholder", []Rule{with(func(r *Rule) { r.Path = "/data/demo/u-{user}" })}, `must be {user} or {group} and a whole path segment`},
		{"unknown placeholder", []Rule{with(func(r *Rule) { r.Path = "/data/demo/{who}" })}, `placeholder "{who}"`},
		{"user twice", []Rule{with(func(r *Rule) { r.Path = "/data/demo/{user}/{user}" })}, `uses {user} twice`},
		{"captured user without allowlist", []Rule{with(func(r *Rule) { r.Users = nil })}, `.users: required when {user} is captured`},
		{"wildcard allowlist", []Rule{with(func(r *Rule) { r.Users = []string{"*"} })}, `.users: bad user name "*"`},
		{"no user at all", []Rule{with(func(r *Rule) { r.Path = "/data/demo/in"; r.Users = nil })}, `.user: required`},
		{"user and captured user", []Rule{with(func(r *Rule) { r.User = "carol" })}, `.user: "carol" set, but path`},
		{"users without placeholder", []Rule{with(func(r *Rule) { r.Path = "/data/demo/in"; r.User = "alice" })}, `.users: only used when path captures {user}`},
		{"group placeholder without allowlist", []Rule{with(func(r *Rule) { r.Group = "{group}"; r.Path = "/data/{group}/{user}" })}, `.groups: required`},
		{"group placeholder not in path", []Rule{with(func(r *Rule) { r.Group = "{group}"; r.Groups = []string{"Demo"} })}, `.group: "{group}" needs {group} in path`},
		{"captured group with literal group", []Rule{with(func(r *Rule) { r.Path = "/data/{group}/{user}" })}, `captures {group} but group is "Demo"`},
		{"bad unit", []Rule{with(func(r *Rule) { r.Unit = "files" })}, `.unit: unknown unit "files"`},
		{"negative settle", []Rule{with(func(r *Rule) { r.Settle = -time.Second })}, `.settle: negative duration`},
		{"marker on file unit", []Rule{with(func(r *Rule) { r.Marker = "done" })}, `.marker: "done": a marker only completes folder units`},
		{"marker with slash", []Rule{with(func(r *Rule) { r.Unit = "folder"; r.Marker = "a/done" })}, `.marker: bad file name "a/done"`},
		{"no destination", []Rule{with(func(r *Rule) { r.Destination = "" })}, `.destination: required`},
		{"unknown destination kind", []Rule{with(func(r *Rule) { r.Destination = "Project:1" })}, `.destination: "Project:1": "Project" is neither Dataset nor Screen`},
		{"destination without kind", []Rule{with(func(r *Rule) { r.Destination = "151" })}, `.destination: "151" is not one of Dataset:ID`},
		{"non-numeric id", []Rule{with(func(r *Rule) { r.Destination = "Dataset:abc" })}, `.destination: "Dataset:abc": "abc" is neither a positive Dataset id nor name:NAME`},
		{"zero id", []Rule{with(func(r *Rule) { r.Destination = "Screen:0" })}, `"Screen:0": "0" is neither a positive Screen id`},
		{"empty name destination", []Rule{with(func(r *Rule) { r.Destination = "Dataset:name:" })}, `"Dataset:name:": "name:" names no Dataset`},
		{"unknown destination placeholder", []Rule{with(func(r *Rule) { r.Destination = "Dataset:name:{date}" })}, `unknown placeholder {date}`},
		{"valid name destination", []Rule{with(func(r *Rule) { r.Destination = "Dataset:name:{user}-{dir}" })}, ""},
		{"zarr register", []Rule{with(func(r *Rule) { r.Zarr = "register" })}, ""},
		{"zarr refuse", []Rule{with(func(r *Rule) { r.Zarr = "refuse" })}, ""},
		{"bad zarr", []Rule{with(func(r *Rule) { r.Zarr = "link" })}, `rules[0] (demo-confocal).zarr: "link" is none of register, import, refuse`},
		{"valid screen", []Rule{with(func(r *Rule) { r.Destination = "screen:7" })}, ""},
		{"preprocessing without container", []Rule{with(func(r *Rule) { r.Preprocessing = &order.Preprocessing{OutputFolder: "/data"} })}, `.preprocessing.container: required`},
		{"preprocessing without output folder", []Rule{with(func(r *Rule) { r.Preprocessing = &order.Preprocessing{Container: "img"} })}, `.preprocessing.output_folder: required`},
		{"preprocessing relative alt", []Rule{with(func(r *Rule) {
			r.Preprocessing = &order.Preprocessing{Container: "img", OutputFolder: "/data", AltOutputFolder: "out"}
		})}, `.preprocessing.alt_output_folder: "out" is not an absolute path`},
		{"preprocessing bad param", []Rule{with(func(r *Rule) {
			r.Preprocessing = &order.Preprocessing{Container: "img", OutputFolder: "/data", ExtraParams: map[string]string{"--x": "1"}}
		})}, `.preprocessing.extra_params: bad parameter name "--x"`},
		{"retention off", []Rule{with(func(r *Rule) { r.Retention = &Retention{} })}, ""},
		{"retention valid", []Rule{with(func(r *Rule) { r.Retention = &Retention{HoldingFolder: "/data/holding", FailedDays: 30} })}, ""},
		{"retention without holding folder", []Rule{with(func(r *Rule) { r.Retention = &Retention{IgnoredDays: 30} })}, `.retention.holding_folder: required`},
		{"retention relative holding folder", []Rule{with(func(r *Rule) { r.Retention = &Retention{HoldingFolder: "hold", FailedDays: 1} })}, `.retention.holding_folder: "hold" is not a clean absolute path`},
		{"retention holding inside the rule", []Rule{with(func(r *Rule) { r.Retention = &Retention{HoldingFolder: "/data/demo/hold", FailedDays: 1} })}, `.retention.holding_folder: "/data/demo/hold" is inside the rule's folder`},
		{"retention negative days", []Rule{with(func(r *Rule) { r.Retention = &Retention{HoldingFolder: "/data/h", OriginalsDays: -1} })}, `.retention.originals_days: must be 0 (off)`},
		{"outside group roots", []Rule{with(func(r *Rule) { r.Path = "/data/other/{user}" })}, `folder "/data/other" is outside the roots of group "Demo"`},
		{"captured group outside its roots", []Rule{with(func(r *Rule) {
			r.Group = "{group}"
			r.Groups = []string{"Demo", "Free"}
			r.Path = "/data/x/{group}/{user}"
		})}, `folder "/data/x/Demo" is outside the roots of group "Demo"`},
		{"error names second rule", []Rule{base(), with(func(r *Rule) {
			r.Name = "two"
			r.Path = "/data/demo/x"
			r.Users = nil
			r.User = "a"
			r.Include = []string{"**["}
		})}, `rules[1] (two).include: bad pattern "**["`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.rules, "/data", testRoots)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v\nwant one containing %q", err, tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestCompileReportsAllProblems(t *testing.T) {
	_, err := Compile([]Rule{with(func(r *Rule) { r.Unit = "x"; r.Destination = "y" })}, "/data", nil)
	if err == nil || !strings.Contains(err.Error(), ".unit:") || !strings.Contains(err.Error(), ".destination:") {
		t.Fatalf("error = %v, want both the unit and the destination named", err)
	}
	if _, err := Compile(nil, "data", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("relative data root: %v", err)
	}
}

func TestCompileDefaults(t *testing.T) {
	r := with(func(r *Rule) {
		r.Include = nil
		r.Preprocessing = &order.Preprocessing{Container: "img", OutputFolder: "/data", ExtraParams: map[string]string{"a": "b"}}
	})
	s := mustCompile(t, r)
	c := s.Rules()[0]
	if c.Unit != UnitFile || c.Settle != DefaultSettle || !reflect.DeepEqual(c.Include, []string{"**"}) {
		t.Fatalf("defaults: unit %q settle %v include %v", c.Unit, c.Settle, c.Include)
	}
	if c.Preprocessing.InputFile != "{Files}" {
		t.Fatalf("input_file default = %q", c.Preprocessing.InputFile)
	}
	r.Preprocessing.ExtraParams["a"] = "changed"
	if c.Preprocessing.ExtraParams["a"] != "b" {
		t.Fatal("compiled rule shares the caller's extra_params map")
	}
}

func TestCompileOverlap(t *testing.T) {
	lit := func(name, path string, f func(r *Rule)) Rule {
		r := Rule{Name: name, Group: "Demo", Path: path, User: "alice", Destination: "Dataset:1"}
		if f != nil {
			f(&r)
		}
		return r
	}
	tests := []struct {
		name  string
		rules []Rule
		want  string // "" = accepted
	}{
		{"disjoint literal folders", []Rule{lit("a", "/data/demo/a", nil), lit("b", "/data/demo/b", nil)}, ""},
		{"same folder", []Rule{lit("a", "/data/demo/a", nil), lit("b", "/data/demo/a", nil)}, `rules[1] (b).path: overlaps rules[0] (a)`},
		{"same folder, separated by excluding the other's includes", []Rule{
			lit("a", "/data/demo/a", func(r *Rule) { r.Include = []string{"**/*.tif"}; r.Exclude = []string{"**/*.lif"} }),
			lit("b", "/data/demo/a", func(r *Rule) { r.Include = []string{"**/*.lif"} }),
		}, ""},
		{"same folder, exclusion only partial", []Rule{
			lit("a", "/data/demo/a", func(r *Rule) { r.Exclude = []string{"**/*.lif"} }),
			lit("b", "/data/demo/a", func(r *Rule) { r.Include = []string{"**/*.lif", "**/*.czi"} }),
		}, "overlaps"},
		{"nested folder", []Rule{lit("outer", "/data/demo", nil), lit("inner", "/data/demo/x/in", nil)}, `rules[1] (inner).path: overlaps rules[0] (outer)`},
		{"nested folder, declared first", []Rule{lit("inner", "/data/demo/x/in", nil), lit("outer", "/data/demo", nil)}, `rules[1] (outer).path: overlaps rules[0] (inner)`},
		{"nested folder excluded as a whole", []Rule{lit("outer", "/data/demo", func(r *Rule) { r.Exclude = []string{"x/in/**"} }), lit("inner", "/data/demo/x/in", nil)}, ""},
		{"nested folder excluded by parent", []Rule{lit("outer", "/data/demo", func(r *Rule) { r.Exclude = []string{"x/**"} }), lit("inner", "/data/demo/x/in", nil)}, "overlaps"},
		{"nested folder, outer only takes direct children", []Rule{lit("outer", "/data/demo", func(r *Rule) { r.Include = []string{"*.tif"} }), lit("inner", "/data/demo/x", nil)}, ""},
		{"nested folder, outer takes depth two", []Rule{lit("outer", "/data/demo", func(r *Rule) { r.Include = []string{"*/*.tif"} }), lit("inner", "/data/demo/x", nil)}, "overlaps"},
		{"placeholder can name the literal folder", []Rule{
			base(),
			lit("shared", "/data/demo/alice/dropbox/special", nil),
		}, "overlaps"},
		{"placeholder excluded with a star", []Rule{
			lit("outer", "/data/demo", func(r *Rule) { r.Exclude = []string{"*/dropbox/**"} }),
			base(),
		}, ""},
		{"placeholder vs different literal tail", []Rule{
			base(),
			lit("screens", "/data/demo/shared/screens", nil),
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.rules, "/data", nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Compile: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Compile error = %v\nwant one containing %q", err, tt.want)
			}
		})
	}
}

func TestRoots(t *testing.T) {
	s, err := Compile([]Rule{
		base(),
		Rule{Name: "screens", Group: "Demo", Path: "/data/demo/shared/screens", User: "bob", Destination: "Screen:3"},
		Rule{Name: "other", Group: "Demo", Path: "/data/demo2/in", User: "bob", Destination: "Screen:3"},
	}, "/data", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range s.Roots() {
		var names []string
		for _, c := range r.Rules {
			names = append(names, c.Name)
		}
		got = append(got, r.Path+":"+strings.Join(names, ","))
	}
	want := []string{"/data/demo:demo-confocal,screens", "/data/demo2/in:other"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("roots = %v, want %v", got, want)
	}
}

func TestMatch(t *testing.T) {
	s := mustCompile(t,
		base(),
		Rule{
			Name: "plates", Group: "{group}", Groups: []string{"Demo"}, Path: "/data/{group}/plates",
			User: "robot", Unit: "folder", Marker: "transfer.done", Include: []string{"*/**"},
			Exclude: []string{"*/thumbs"}, Destination: "Screen:name:{group}-{dir}",
		},
	)
	tests := []struct {
		name     string
		path     string
		wantRule string
		wantUnit string
		wantVars map[string]string
		marker   bool
		why      string // substring of the reason when not matched
		denied   bool
	}{
		{name: "file in dropbox", path: "/data/demo/alice/dropbox/a.tif", wantRule: "demo-confocal",
			wantUnit: "/data/demo/alice/dropbox/a.tif", wantVars: map[string]string{"user": "alice", "group": "Demo", "dir": "dropbox"}},
		{name: "nested file", path: "/data/demo/bob/dropbox/exp1/day2/b.lif", wantRule: "demo-confocal",
			wantUnit: "/data/demo/bob/dropbox/exp1/day2/b.lif", wantVars: map[string]string{"user": "bob", "group": "Demo", "dir": "exp1"}},
		{name: "not included", path: "/data/demo/alice/dropbox/a.txt", why: `"a.txt" matches no include pattern`},
		{name: "excluded folder", path: "/data/demo/alice/dropbox/x/tmp/a.tif", why: "is excluded"},
		{name: "user not allowed", path: "/data/demo/mallory/dropbox/a.tif", why: `user "mallory" is not in the users`, denied: true},
		{name: "root is no user", path: "/data/demo/root/dropbox/a.tif", why: `user "root"`, denied: true},
		{name: "hidden file", path: "/data/demo/alice/dropbox/.a.tif", why: `ignored name ".a.tif"`},
		{name: "rsync temp", path: "/data/demo/alice/dropbox/.a.tif.XyZ123", why: "ignored name"},
		{name: "partial download", path: "/data/demo/alice/dropbox/a.tif.part", why: "ignored name"},
		{name: "office lock", path: "/data/demo/alice/dropbox/~$a.tif", why: "ignored name"},
		{name: "processed output", path: "/data/demo/alice/dropbox/.processed/a.ome.tif", why: `ignored name ".processed"`},
		{name: "beside the dropbox", path: "/data/demo/alice/other/a.tif", why: "not below the folder /data/demo/{user}/dropbox"},
		{name: "the rule folder itself", path: "/data/demo/alice/dropbox", why: "not below the folder"},
		{name: "outside everything", path: "/srv/a.tif", why: "not below"},
		{name: "relative", path: "data/demo/alice/dropbox/a.tif", why: "not an absolute clean path"},
		{name: "unclean", path: "/data/demo/alice/dropbox/../../bob/dropbox/a.tif", why: "not an absolute clean path"},
		{name: "folder unit itself", path: "/data/Demo/plates/plate1", wantRule: "plates", wantUnit: "/data/Demo/plates/plate1",
			wantVars: map[string]string{"user": "robot", "group": "Demo", "dir": "plate1"}},
		{name: "file in folder unit", path: "/data/Demo/plates/plate1/A/1/img.tif", wantRule: "plates", wantUnit: "/data/Demo/plates/plate1",
			wantVars: map[string]string{"user": "robot", "group": "Demo", "dir": "plate1"}},
		{name: "marker", path: "/data/Demo/plates/plate1/transfer.done", wantRule: "plates", wantUnit: "/data/Demo/plates/plate1", marker: true,
			wantVars: map[string]string{"user": "robot", "group": "Demo", "dir": "plate1"}},
		{name: "marker deeper is a plain file", path: "/data/Demo/plates/plate1/A/transfer.done", wantRule: "plates", wantUnit: "/data/Demo/plates/plate1",
			wantVars: map[string]string{"user": "robot", "group": "Demo", "dir": "plate1"}},
		{name: "excluded subfolder of unit", path: "/data/Demo/plates/plate1/thumbs/a.png", why: "is excluded"},
		{name: "group not allowed", path: "/data/Other/plates/p/a.tif", why: `group "Other" is not in the groups`, denied: true},
		{name: "file directly in folder rule", path: "/data/Demo/plates/loose.tif", wantRule: "plates", wantUnit: "/data/Demo/plates/loose.tif",
			wantVars: map[string]string{"user": "robot", "group": "Demo", "dir": "loose.tif"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok, why, denied := s.MatchDenied(tt.path)
			if tt.wantRule == "" {
				if ok {
					t.Fatalf("Match(%q) matched rule %s unit %s, want no match", tt.path, m.Rule.Name, m.UnitPath)
				}
				if !strings.Contains(why, tt.why) || denied != tt.denied {
					t.Fatalf("Match(%q) why = %q denied=%v, want %q denied=%v", tt.path, why, denied, tt.why, tt.denied)
				}
				return
			}
			if !ok {
				t.Fatalf("Match(%q) = no match (%s)", tt.path, why)
			}
			if m.Rule.Name != tt.wantRule || m.UnitPath != tt.wantUnit || m.Marker != tt.marker || !reflect.DeepEqual(m.Vars, tt.wantVars) {
				t.Fatalf("Match(%q) = rule %s unit %s marker %v vars %v\nwant rule %s unit %s marker %v vars %v",
					tt.path, m.Rule.Name, m.UnitPath, m.Marker, m.Vars, tt.wantRule, tt.wantUnit, tt.marker, tt.wantVars)
			}
		})
	}
}

func TestDir(t *testing.T) {
	s := mustCompile(t,
		base(),
		Rule{Name: "plates", Group: "Demo", Path: "/data/demo/plates", User: "robot", Unit: "folder", Destination: "Screen:1",
			Exclude: []string{"old"}},
	)
	tests := []struct {
		name    string
		path    string
		descend bool
		unit    string
		denied  bool
		why     string
	}{
		{name: "root", path: "/data/demo", descend: true},
		{name: "above root", path: "/data", descend: true},
		{name: "user folder", path: "/data/demo/alice", descend: true},
		{name: "rule folder", path: "/data/demo/alice/dropbox", descend: true},
		{name: "inside file rule", path: "/data/demo/alice/dropbox/exp1/day1", descend: true},
		{name: "excluded inside file rule", path: "/data/demo/alice/dropbox/exp1/tmp", why: "is excluded"},
		{name: "hidden inside file rule", path: "/data/demo/alice/dropbox/.processed", why: "ignored name"},
		{name: "user not allowed", path: "/data/demo/eve", denied: true, why: `user "eve"`},
		{name: "beside dropbox", path: "/data/demo/alice/scratch", why: "not below the folder"},
		{name: "folder rule folder", path: "/data/demo/plates", descend: true},
		{name: "folder unit", path: "/data/demo/plates/p1", unit: "/data/demo/plates/p1"},
		{name: "excluded folder unit", path: "/data/demo/plates/old", why: "is excluded"},
		{name: "inside a folder unit", path: "/data/demo/plates/p1/A", why: "inside a folder unit"},
		{name: "unrelated", path: "/data/elsewhere", why: "no rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Dir(tt.path)
			unit := ""
			if r.Unit != nil {
				unit = r.Unit.UnitPath
			}
			if r.Descend != tt.descend || unit != tt.unit || r.Denied != tt.denied || !strings.Contains(r.Why, tt.why) {
				t.Fatalf("Dir(%q) = %+v (unit %q), want descend %v unit %q denied %v why %q", tt.path, r, unit, tt.descend, tt.unit, tt.denied, tt.why)
			}
		})
	}
}

func TestDraft(t *testing.T) {
	pp := &order.Preprocessing{Container: "img:1", OutputFolder: "/data", AltOutputFolder: "/out", ExtraParams: map[string]string{"saveoption": "single"}}
	s := mustCompile(t,
		with(func(r *Rule) { r.Preprocessing = pp; r.Description = "from the confocal" }),
		Rule{Name: "plates", Group: "Demo", Path: "/data/demo/plates", User: "robot", Unit: "folder", Destination: "Dataset:name:{user}-{dir}"},
		Rule{Name: "flat", Group: "Demo", Path: "/data/demo/flat", User: "robot", Destination: "Dataset:name:{dir}"},
	)
	tests := []struct {
		name    string
		path    string
		files   []string
		want    order.Draft
		wantErr string
	}{
		{
			name: "file with preprocessing", path: "/data/demo/alice/dropbox/a.tif", files: []string{"/data/demo/alice/dropbox/a.tif"},
			want: order.Draft{Group: "Demo", User: "alice", Target: order.Target{Kind: order.Dataset, ID: 151},
				Files: []string{"/data/demo/alice/dropbox/a.tif"}, Source: "demo-confocal", Description: "from the confocal",
				Preprocessing: &order.Preprocessing{Container: "img:1", InputFile: "{Files}", OutputFolder: "/data", AltOutputFolder: "/out",
					ExtraParams: map[string]string{"saveoption": "single"}}},
		},
		{
			name: "folder unit with named dataset", path: "/data/demo/plates/run7",
			files: []string{"/data/demo/plates/run7/a.tif", "/data/demo/plates/run7/b/c.tif"},
			want: order.Draft{Group: "Demo", User: "robot", Target: order.Target{Kind: order.Dataset, Name: "robot-run7"},
				Files: []string{"/data/demo/plates/run7/a.tif", "/data/demo/plates/run7/b/c.tif"}, Source: "plates"},
		},
		{
			name: "dir of a nested file", path: "/data/demo/flat/exp9/x/a.tif", files: []string{"/data/demo/flat/exp9/x/a.tif"},
			want: order.Draft{Group: "Demo", User: "robot", Target: order.Target{Kind: order.Dataset, Name: "exp9"},
				Files: []string{"/data/demo/flat/exp9/x/a.tif"}, Source: "flat"},
		},
		{
			name: "dir of a file directly in the rule folder is the rule folder's name", path: "/data/demo/flat/a.tif", files: []string{"/data/demo/flat/a.tif"},
			want: order.Draft{Group: "Demo", User: "robot", Target: order.Target{Kind: order.Dataset, Name: "flat"},
				Files: []string{"/data/demo/flat/a.tif"}, Source: "flat"},
		},
		{name: "no files", path: "/data/demo/plates/run7", wantErr: "has no files"},
		{name: "file outside the unit", path: "/data/demo/plates/run7", files: []string{"/data/demo/plates/run8/a.tif"}, wantErr: "outside the unit"},
		{name: "relative file", path: "/data/demo/plates/run7", files: []string{"run7/a.tif"}, wantErr: "not an absolute clean path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok, why := s.Match(tt.path)
			if !ok {
				t.Fatalf("Match(%q): %s", tt.path, why)
			}
			d, err := m.Rule.Draft(m, tt.files)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrDraft) {
					t.Fatalf("Draft error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Draft: %v", err)
			}
			if !reflect.DeepEqual(d, tt.want) {
				t.Fatalf("Draft = %+v\nwant %+v", d, tt.want)
			}
			if d.Preprocessing != nil {
				d.Preprocessing.ExtraParams["saveoption"] = "changed"
				if m.Rule.Preprocessing.ExtraParams["saveoption"] != "single" {
					t.Fatal("draft shares the rule's extra_params map")
				}
			}
		})
	}
	other := s.Rules()[1]
	m, _, _ := s.Match("/data/demo/alice/dropbox/a.tif")
	if _, err := other.Draft(m, []string{"/data/demo/alice/dropbox/a.tif"}); !errors.Is(err, ErrDraft) {
		t.Fatalf("Draft with another rule's match: %v", err)
	}
}

func TestSelects(t *testing.T) {
	s := mustCompile(t, Rule{Name: "plates", Group: "Demo", Path: "/data/demo/plates", User: "robot", Unit: "folder",
		Include: []string{"*/**/*.tif"}, Exclude: []string{"*/thumbs"}, Destination: "Screen:1"})
	c := s.Rules()[0]
	tests := []struct {
		rel  string
		want bool
	}{
		{"p1/a.tif", true},
		{"p1/A/1/a.tif", true},
		{"p1/a.txt", false},
		{"p1/thumbs/a.tif", false},
		{"p1/.processed/a.tif", false},
		{"p1/a.tif.part", false},
		{"a.tif", false},
		{"", false},
		{"/p1/a.tif", false},
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			if got := c.Selects(tt.rel); got != tt.want {
				t.Fatalf("Selects(%q) = %v, want %v", tt.rel, got, tt.want)
			}
		})
	}
}

// A Zarr is one unit of a folder rule, and its order names the Zarr's folder; a file rule claims
// none of its chunks.
func TestZarrUnits(t *testing.T) {
	s := mustCompile(t,
		with(func(r *Rule) { r.Include = []string{"**/*"} }),
		Rule{Name: "zarrs", Group: "Demo", Path: "/data/demo/zarrs", User: "robot", Unit: "folder", Include: []string{"*/**"}, Destination: "Dataset:1", Zarr: "register"},
	)
	if _, ok, why := s.Match("/data/demo/alice/dropbox/run/x.ome.zarr/0/0/0.0"); ok || !strings.Contains(why, `inside the OME-Zarr "run/x.ome.zarr"`) {
		t.Errorf("a chunk in a file rule: claimed %v (%s)", ok, why)
	}
	if _, ok, _ := s.Match("/data/demo/alice/dropbox/run/x.tif"); !ok {
		t.Error("a plain file beside is not claimed")
	}
	m, ok, why := s.Match("/data/demo/zarrs/x.zarr/0/0/0.0")
	if !ok || m.UnitPath != "/data/demo/zarrs/x.zarr" {
		t.Fatalf("match %+v, %v (%s); want the unit x.zarr", m, ok, why)
	}
	d, err := m.Rule.Draft(m, []string{"/data/demo/zarrs/x.zarr/.zattrs", "/data/demo/zarrs/x.zarr/0/.zattrs", "/data/demo/zarrs/x.zarr/0/0/0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Files) != 1 || d.Files[0] != "/data/demo/zarrs/x.zarr" {
		t.Errorf("draft files %q, want the Zarr folder only", d.Files)
	}
	// A plain folder unit holding a Zarr names it once, beside its other files.
	m, _, _ = s.Match("/data/demo/zarrs/exp1/a.tif")
	d, err = m.Rule.Draft(m, []string{"/data/demo/zarrs/exp1/a.tif", "/data/demo/zarrs/exp1/y.zarr/.zattrs", "/data/demo/zarrs/exp1/y.zarr/0/0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/data/demo/zarrs/exp1/a.tif", "/data/demo/zarrs/exp1/y.zarr"}; !reflect.DeepEqual(d.Files, want) {
		t.Errorf("draft files %q, want %q", d.Files, want)
	}
}
