package omero

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/order"
)

func TestRegister(t *testing.T) {
	byID := order.Target{Kind: order.Dataset, ID: omerotest.Dataset1}
	cases := []struct {
		name       string
		layout     string
		target     order.Target
		wantKind   string
		wantImages int
		wantLsids  []string // below the Zarr
		wantLinked bool
		wantErr    error
		wantDetail string
	}{
		{name: "image by id", layout: omerotest.ZarrImage, target: byID, wantKind: "Image", wantImages: 1, wantLsids: []string{""}, wantLinked: true},
		{name: "zarr v3 image", layout: omerotest.ZarrImageV3, target: byID, wantKind: "Image", wantImages: 1, wantLsids: []string{""}, wantLinked: true},
		{name: "bioformats2raw series", layout: omerotest.ZarrSeries, target: byID, wantKind: "bioformats2raw.layout", wantImages: 2, wantLsids: []string{"/0", "/1"}, wantLinked: true},
		{name: "image by name", layout: omerotest.ZarrImage, target: order.Target{Kind: order.Dataset, Name: "second"}, wantKind: "Image", wantImages: 1, wantLsids: []string{""}, wantLinked: true},
		{name: "unknown name", layout: omerotest.ZarrImage, target: order.Target{Kind: order.Dataset, Name: "nowhere"}, wantKind: "Image", wantImages: 1, wantLsids: []string{""}},
		{name: "plate", layout: omerotest.ZarrPlate, target: byID, wantKind: "Plate"},
		{name: "no attributes", layout: omerotest.ZarrNoAttrs, target: byID, wantErr: ErrImport, wantDetail: "GroupNotFoundError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := setup(t)
			s := f.login(t, "zarr-1")
			zarr := omerotest.WriteZarr(t, filepath.Join(t.TempDir(), "x.ome.zarr"), c.layout)
			before := len(f.d.State(t).Calls)
			res, err := f.c.Register(context.Background(), s, RegisterRequest{OrderUUID: "zarr-1", Target: c.target, Zarrs: []string{zarr}})
			st := f.d.State(t)
			if n := len(st.Calls) - before; n != 1 {
				t.Errorf("%d CLI starts, want 1", n)
			}
			for _, call := range st.Calls[before:] {
				if strings.Contains(strings.Join(call.Argv, " "), s.Key) {
					t.Errorf("session key on argv %q", call.Argv)
				}
			}
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) || !strings.Contains(err.Error(), c.wantDetail) {
					t.Fatalf("err = %v, want %v with %q", err, c.wantErr, c.wantDetail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Zarrs) != 1 {
				t.Fatalf("result %+v, want one Zarr", res)
			}
			z := res.Zarrs[0]
			var lsids []string
			for _, l := range c.wantLsids {
				lsids = append(lsids, zarr+l)
			}
			if z.Kind != c.wantKind || len(z.Images) != c.wantImages || !reflect.DeepEqual(z.Lsids, lsids) || z.Linked != c.wantLinked {
				t.Errorf("registered %+v, want kind %s, %d images, lsids %q, linked %v", z, c.wantKind, c.wantImages, lsids, c.wantLinked)
			}
			for _, id := range z.Images {
				for _, img := range st.Images {
					if img.ID == id && (img.ExtInfo == nil || img.GroupID != omerotest.DemoGroupID) {
						t.Errorf("image %+v: want an ExternalInfo, in group Demo", img)
					}
				}
			}
			if len(z.Images) == 0 {
				return
			}
			// The annotation batch confirms the ExternalInfo.
			prep, err := f.c.PrepareImages(context.Background(), s, ImagesPrep{Images: z.Images, NS: "biomero.import", Targets: []string{"Image:" + strconv.FormatInt(z.Images[0], 10)}})
			if err != nil {
				t.Fatal(err)
			}
			info := prep.ExtInfo
			if len(prep.Annotations) != 1 || len(info) != len(z.Images) {
				t.Fatalf("prepared %+v", prep)
			}
			for i, id := range z.Images {
				if got := info[id]; got.EntityType != ZarrEntityType || got.Lsid != lsids[i] {
					t.Errorf("ext info of %d = %+v, want %s at %s", id, got, ZarrEntityType, lsids[i])
				}
			}
		})
	}
}

func TestRegisterWithoutPlugin(t *testing.T) {
	f := setup(t)
	s := f.login(t, "zarr-2")
	f.d.SetFailure(t, omerotest.Failure{NoZarrPlugin: true})
	zarr := omerotest.WriteZarr(t, filepath.Join(t.TempDir(), "x.zarr"), omerotest.ZarrImage)
	_, err := f.c.Register(context.Background(), s, RegisterRequest{OrderUUID: "zarr-2", Target: order.Target{Kind: order.Dataset, ID: omerotest.Dataset1}, Zarrs: []string{zarr}})
	if !errors.Is(err, ErrNoZarrPlugin) || !strings.Contains(err.Error(), "pip install omero-cli-zarr") {
		t.Fatalf("err = %v, want ErrNoZarrPlugin with the install command", err)
	}
	if _, err := f.c.ZarrPlugin(context.Background()); !errors.Is(err, ErrNoZarrPlugin) {
		t.Errorf("ZarrPlugin: %v, want ErrNoZarrPlugin", err)
	}
}

func TestExtInfoMissing(t *testing.T) {
	f := setup(t)
	s := f.login(t, "zarr-3")
	// An image imported by omero import has no ExternalInfo: the action dies 346 (exit 90).
	res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "zarr-3", Target: order.Target{Kind: order.Dataset, ID: omerotest.Dataset1},
		Paths: []string{filepath.Join(files(t, "a.tif"), "a.tif")}})
	if err != nil {
		t.Fatal(err)
	}
	img := res.Filesets[0].Images[0]
	prep, err := f.c.PrepareImages(context.Background(), s, ImagesPrep{Images: []int64{img}})
	if err == nil || !strings.Contains(err.Error(), "No ExternalInfo found: Image:") || len(prep.ExtInfo) != 0 {
		t.Fatalf("err = %v, prepared %+v; want the CLI's 346 refusal", err, prep)
	}
}

func TestZarrPluginVersion(t *testing.T) {
	// A virtualenv: bin/omero and lib/python3.12/site-packages/omero_cli_zarr-0.8.0.dist-info.
	venv := t.TempDir()
	f := setup(t)
	bin := filepath.Join(venv, "bin", "omero")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.d.Bin, bin); err != nil {
		t.Fatal(err)
	}
	f = setup(t, func(c *Config) { c.CLI = bin; c.Env = f.d.Env() })
	if v, err := f.c.ZarrPlugin(context.Background()); err != nil || v != "" {
		t.Errorf("without dist-info: %q, %v; want an unknown version", v, err)
	}
	if err := os.MkdirAll(filepath.Join(venv, "lib", "python3.12", "site-packages", "omero_cli_zarr-0.8.0.dist-info"), 0o755); err != nil {
		t.Fatal(err)
	}
	if v, err := f.c.ZarrPlugin(context.Background()); err != nil || v != "0.8.0" {
		t.Errorf("ZarrPlugin() = %q, %v; want 0.8.0", v, err)
	}
}
