package omerotest

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// The double's `omero zarr import` prints what omero-cli-zarr's import_zarr, import_image,
// set_external_info and link_to_target print, and fails where they fail.
func TestZarrImport(t *testing.T) {
	d := New(t)
	_, key := login(t, d)
	conn := []string{"zarr", "-s", Host, "-p", port(d), "-k", key, "import"}
	dir := t.TempDir()
	image := WriteZarr(t, filepath.Join(dir, "img.zarr"), ZarrImage)
	series := WriteZarr(t, filepath.Join(dir, "s.ome.zarr"), ZarrSeries)
	plate := WriteZarr(t, filepath.Join(dir, "p.zarr"), ZarrPlate)
	bare := WriteZarr(t, filepath.Join(dir, "bare.zarr"), ZarrNoAttrs)
	d.Update(t, func(st *State) { st.ZarrRoots = []string{filepath.Join(dir, "img.zarr")} })

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string // {1}, {2}: the first and second new id
		stderr string
	}{
		{"image into a dataset", []string{image, "--target", "Dataset:151"}, 0,
			"Importing: Image\nlsid: " + image + "\nCreated Image {1}\nLinked to Dataset 151\n", ""},
		{"series, by name", []string{series, "--target-by-name", "second"}, 0,
			"Importing: bioformats2raw.layout\nOME/METADATA.ome.xml Not Found\nChecking for series: 0\nlsid: " + series + "/0\nCreated Image {1}\n" +
				"Checking for series: 1\nlsid: " + series + "/1\nCreated Image {2}\nChecking for series: 2\nLinked to Dataset 152\nLinked to Dataset 152\n", ""},
		{"a target in another group", []string{image, "--target", "153"}, 0, "Importing: Image\nlsid: " + image + "\nCreated Image {1}\nTarget not found\n", ""},
		{"a plate", []string{plate, "--target", "Dataset:151"}, 0, "Plate import not yet supported\n", ""},
		{"no group", []string{bare}, 1, "", "zarr.errors.GroupNotFoundError: No group found in store"},
		{"no uri", nil, 2, "", "the following arguments are required: uri"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			next := d.State(t).NextID
			r := run(t, d, t.TempDir(), nil, "", append(append([]string(nil), conn...), c.args...)...)
			want := strings.NewReplacer("{1}", fmt.Sprint(next), "{2}", fmt.Sprint(next+1)).Replace(c.stdout)
			if r.code != c.code || r.stdout != want || !strings.Contains(r.stderr, c.stderr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, c.code, want, c.stderr)
			}
		})
	}
	st := d.State(t)
	unreadable := 0
	for _, img := range st.Images {
		if img.ExtInfo == nil || img.ExtInfo.EntityID != 3 || img.ExtInfo.EntityType != "com.glencoesoftware.ngff:multiscales" {
			t.Errorf("image %+v: want the NGFF ExternalInfo", img)
		}
		if img.PixelsUnreadable {
			unreadable++
		}
	}
	// The series Zarr lies outside ZarrRoots: registered all the same, its pixels unreadable.
	if len(st.Images) != 4 || unreadable != 2 {
		t.Errorf("%d images, %d unreadable; want 4, 2", len(st.Images), unreadable)
	}

	// ext-info-get: every field, one field, a bad field, an image without one.
	id := st.Images[0].ID
	r := run(t, d, t.TempDir(), nil, "", "obj", "-s", Host, "-p", port(d), "-k", key, "ext-info-get", fmt.Sprintf("Image:%d", id))
	if want := fmt.Sprintf("id=%d\nentityId=3\nentityType=com.glencoesoftware.ngff:multiscales\nlsid=%s\nuuid=\n\n", id, image); r.code != 0 || r.stdout != want {
		t.Errorf("ext-info-get: exit %d %q, want %q", r.code, r.stdout, want)
	}
	r = run(t, d, t.TempDir(), nil, "", "obj", "-s", Host, "-p", port(d), "-k", key, "ext-info-get", fmt.Sprintf("Image:%d", id), "lsid")
	if r.code != 0 || r.stdout != image+"\n" {
		t.Errorf("ext-info-get lsid: exit %d %q", r.code, r.stdout)
	}
	r = run(t, d, t.TempDir(), nil, "", "obj", "-s", Host, "-p", port(d), "-k", key, "ext-info-get", fmt.Sprintf("Image:%d", id), "path")
	if r.code != 335%256 || !strings.Contains(r.stderr, "usage: ext-info-get OBJ [id|entityId|entityType|lsid|uuid]") {
		t.Errorf("ext-info-get path: exit %d %q", r.code, r.stderr)
	}

	// Without the plugin, zarr is an unknown subcommand (argparse: exit 2).
	d.SetFailure(t, Failure{NoZarrPlugin: true})
	r = run(t, d, t.TempDir(), nil, "", append(conn, image)...)
	if r.code != 2 || !strings.Contains(r.stderr, "error: argument <subcommand>: invalid choice: 'zarr'") {
		t.Errorf("without the plugin: exit %d %q", r.code, r.stderr)
	}
}
