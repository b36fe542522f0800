package order

import (
	"reflect"
	"testing"
)

func TestZarrRoot(t *testing.T) {
	cases := []struct {
		name, path, want string
		ok               bool
	}{
		{"the zarr folder", "/data/a/x.zarr", "/data/a/x.zarr", true},
		{"ome.zarr", "/data/a/x.ome.zarr", "/data/a/x.ome.zarr", true},
		{"upper case", "/data/a/X.ZARR", "/data/a/X.ZARR", true},
		{"a chunk inside", "/data/a/x.zarr/0/1/0.0", "/data/a/x.zarr", true},
		{"the outermost of nested", "/data/a/x.zarr/labels/y.zarr/0", "/data/a/x.zarr", true},
		{"a plain file", "/data/a/x.tif", "", false},
		{"zarr in the middle of a name", "/data/a/x.zarr.bak/0", "", false},
		{"a folder named zarr", "/data/zarr/x.tif", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := ZarrRoot(c.path)
			if got != c.want || ok != c.ok {
				t.Errorf("ZarrRoot(%q) = %q, %v; want %q, %v", c.path, got, ok, c.want, c.ok)
			}
		})
	}
}

func TestZarrs(t *testing.T) {
	files := []File{
		{Real: "/data/a.tif"},
		{Real: "/data/x.zarr", Dir: true},
		{Real: "/data/x.zarr/0/.zattrs"},
		{Real: "/data/file.zarr"}, // a regular file with the name of a Zarr
		{Real: "/data/y.ome.zarr/0", Dir: true},
	}
	zarrs, others := Zarrs(files)
	if want := []string{"/data/x.zarr", "/data/y.ome.zarr"}; !reflect.DeepEqual(zarrs, want) {
		t.Errorf("zarrs = %q, want %q", zarrs, want)
	}
	if want := []int{0, 3}; !reflect.DeepEqual(others, want) {
		t.Errorf("others = %v, want %v", others, want)
	}
}

func TestParseZarrSettings(t *testing.T) {
	modes := []struct {
		in   string
		want ZarrMode
		ok   bool
	}{{"", ZarrRegister, true}, {"register", ZarrRegister, true}, {"Import", ZarrImport, true}, {"refuse", ZarrRefuse, true}, {"skip", "", false}}
	for _, c := range modes {
		got, err := ParseZarrMode(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseZarrMode(%q) = %q, %v", c.in, got, err)
		}
	}
	env := []struct {
		in   string
		want ZarrMode
		ok   bool
	}{{"true", ZarrRegister, true}, {"1", ZarrRegister, true}, {"YES", ZarrRegister, true}, {"false", ZarrImport, true},
		{"0", ZarrImport, true}, {"no", ZarrImport, true}, {"", "", false}, {"off", "", false}, {"treu", "", false}}
	for _, c := range env {
		got, err := ParseRegisterZarr(c.in)
		if got != c.want || (err == nil) != c.ok {
			t.Errorf("ParseRegisterZarr(%q) = %q, %v", c.in, got, err)
		}
	}
}
