package omerotest

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Zarr layouts WriteZarr lays out.
const (
	ZarrImage   = "image"          // an NGFF image: .zattrs with multiscales (Zarr v2)
	ZarrImageV3 = "image-v3"       // the same as Zarr v3: zarr.json with the attributes under "ome"
	ZarrSeries  = "bioformats2raw" // bioformats2raw.layout 3 with two series, 0 and 1, no METADATA.ome.xml
	ZarrPlate   = "plate"          // an HCS plate: .zattrs with plate
	ZarrNoAttrs = "no-attrs"       // chunks but neither .zattrs nor zarr.json
)

const multiscales = `"multiscales": [{"version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}], "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1]}]}]}]`

// WriteZarr creates the Zarr folder dir (its name should end in .zarr) in one of the layouts
// above, with a chunk file per image, and returns dir.
func WriteZarr(t testing.TB, dir, layout string) string {
	t.Helper()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	switch layout {
	case ZarrImage:
		write(".zgroup", `{"zarr_format": 2}`)
		write(".zattrs", "{"+multiscales+"}")
		write("0/0.0", "pixels")
	case ZarrImageV3:
		write("zarr.json", `{"zarr_format": 3, "node_type": "group", "attributes": {"ome": {"version": "0.5", `+multiscales+`}}}`)
		write("0/c/0/0", "pixels")
	case ZarrSeries:
		write(".zattrs", `{"bioformats2raw.layout": 3}`)
		for i := 0; i < 2; i++ {
			s := strconv.Itoa(i)
			write(s+"/.zattrs", "{"+multiscales+"}")
			write(s+"/0/0.0", "pixels")
		}
	case ZarrPlate:
		write(".zattrs", `{"plate": {"version": "0.4", "rows": [{"name": "A"}], "columns": [{"name": "1"}], "wells": [{"path": "A/1", "rowIndex": 0, "columnIndex": 0}]}}`)
		write("A/1/.zattrs", `{"well": {"images": [{"path": "0"}]}}`)
		write("A/1/0/.zattrs", "{"+multiscales+"}")
		write("A/1/0/0/0.0", "pixels")
	case ZarrNoAttrs:
		write("0/0.0", "pixels")
	default:
		t.Fatalf("WriteZarr: unknown layout %q", layout)
	}
	return dir
}
