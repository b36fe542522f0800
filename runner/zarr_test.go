package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner"
)

// zarr lays out an OME-Zarr below the data root and returns its path.
func (e *env) zarr(rel, layout string) string {
	e.t.Helper()
	return omerotest.WriteZarr(e.t, filepath.Join(e.data, rel), layout)
}

// insertFrom is insert with the order's source column set, as a watch rule's orders carry it.
func (e *env) insertFrom(source, destID string, files []string) string {
	e.t.Helper()
	uuid := e.insert("alice", "Demo", destID, "Dataset", files)
	if _, err := e.store.DB().Exec(e.store.DB().Rebind(`UPDATE imports SET source = ? WHERE uuid = ?`), source, uuid); err != nil {
		e.t.Fatal(err)
	}
	return uuid
}

// A hand-written order naming a .zarr folder registers it in place: one Image per multiscales,
// its ExternalInfo pointing at the Zarr, linked to the Dataset and annotated; nothing is imported
// and nothing is linked into the ManagedRepository.
func TestZarrOrderRegisters(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		zarr := e.zarr("demo/alice/cells.ome.zarr", omerotest.ZarrImage)
		e.file("demo/alice/metadata.csv", "stain,DAPI\n")
		e.start()
		before := len(e.double.State(t).Calls)
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{zarr})
		o := e.expect(uuid, db.StageCompleted, 20*time.Second)
		if o.Result == nil || len(o.Result.Images) != 1 || len(o.Result.Filesets) != 0 {
			t.Fatalf("result %+v, want one image and no fileset", o.Result)
		}
		if !strings.Contains(o.Description, "registered 1 image from 1 OME-Zarr into Dataset 151") {
			t.Errorf("description %q", o.Description)
		}
		st := e.double.State(t)
		if n := len(st.Calls) - before; n > 4 {
			t.Errorf("%d CLI starts, want at most 4", n)
		}
		if len(st.Imports) != 0 || len(managedLinks(t, e.double.ManagedRepo)) != 0 {
			t.Errorf("the Zarr was also imported: %+v", st.Imports)
		}
		id := o.Result.Images[0]
		for _, img := range st.Images {
			if img.ID == id && (img.ExtInfo == nil || img.ExtInfo.Lsid != zarr || img.DatasetID != omerotest.Dataset1 || img.GroupID != omerotest.DemoGroupID) {
				t.Errorf("image %+v: want its ExternalInfo at %s, in Dataset 151 of group Demo", img, zarr)
			}
		}
		ann := annotationOf(t, st, fmt.Sprintf("Image:%d", id))
		for k, v := range map[string]string{"UUID": uuid, "Filepath": zarr, "Username": "alice", "DestinationID": "151", "csv_stain": "DAPI"} {
			if ann[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, ann[k], v)
			}
		}
	})
}

func TestZarrOrders(t *testing.T) {
	cases := []struct {
		name   string
		cfg    func(*runner.Config)
		layout string
		fail   omerotest.Failure
		// files names the order's files: "Z" is the Zarr, "Z/…" below it, "OUT" a Zarr outside the
		// data root, others plain files.
		files      []string
		destID     string
		destType   string
		source     string
		stage      string
		desc       string // in the description
		images     int
		imports    int    // omero import runs
		dataset    string // the name of the Dataset the images are in, when not 151
		noCLIStart bool
	}{
		{name: "web plugin shape: a bioformats2raw folder", layout: omerotest.ZarrSeries, files: []string{"Z"}, destID: "151",
			stage: db.StageCompleted, desc: "registered 2 images", images: 2},
		{name: "a path inside the Zarr", layout: omerotest.ZarrImageV3, files: []string{"Z/0/c/0/0"}, destID: "151",
			stage: db.StageCompleted, desc: "registered 1 image", images: 1},
		{name: "by name", layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "name:second",
			stage: db.StageCompleted, desc: `into Dataset named "second"`, images: 1, dataset: "second"},
		{name: "by a new name", layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "name:new",
			stage: db.StageCompleted, desc: `into Dataset named "new" (created: Dataset `, images: 1, dataset: "new"},
		{name: "by an id that does not exist", layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "999",
			stage: db.StageFailed, desc: "linked them to no Dataset 999 (\"Target not found\")", images: 1},
		{name: "import mode", cfg: func(c *runner.Config) { c.Zarr = order.ZarrImport }, layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "151",
			stage: db.StageCompleted, desc: "imported 1 image", images: 1, imports: 1},
		{name: "refuse mode", cfg: func(c *runner.Config) { c.Zarr = order.ZarrRefuse }, layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "151",
			stage: db.StageFailed, desc: `this agent refuses Zarr orders (zarr = "refuse", omero.zarr)`, noCLIStart: true},
		{name: "a rule's mode wins", cfg: func(c *runner.Config) { c.ZarrRules = map[string]order.ZarrMode{"zarr-rule": order.ZarrRefuse} },
			layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "151", source: "zarr-rule",
			stage: db.StageFailed, desc: `(zarr = "refuse", rule "zarr-rule")`, noCLIStart: true},
		{name: "a plate", layout: omerotest.ZarrPlate, files: []string{"Z"}, destID: "151",
			stage: db.StageFailed, desc: "is an OME-Zarr plate (HCS): plates are not supported by omero-cli-zarr", noCLIStart: true},
		{name: "no attributes", layout: omerotest.ZarrNoAttrs, files: []string{"Z"}, destID: "151",
			stage: db.StageFailed, desc: "neither .zattrs (Zarr v2) nor zarr.json (Zarr v3)", noCLIStart: true},
		{name: "mixed with a file", layout: omerotest.ZarrImage, files: []string{"Z", "demo/alice/a.tif"}, destID: "151",
			stage: db.StageFailed, desc: "mixes the OME-Zarr", noCLIStart: true},
		{name: "into a Screen", layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "201", destType: "Screen",
			stage: db.StageFailed, desc: "registers into a Dataset, not a Screen", noCLIStart: true},
		{name: "outside the data root", layout: omerotest.ZarrImage, files: []string{"OUT"}, destID: "151",
			stage: db.StageFailed, desc: "is outside the allowed roots", noCLIStart: true},
		{name: "without the plugin", layout: omerotest.ZarrImage, fail: omerotest.Failure{NoZarrPlugin: true}, files: []string{"Z"}, destID: "151",
			stage: db.StageFailed, desc: "install omero-cli-zarr (pip install omero-cli-zarr) on the agent host"},
		{name: "dry run", cfg: func(c *runner.Config) { c.DryRun = true }, layout: omerotest.ZarrImage, files: []string{"Z"}, destID: "151",
			stage: db.StageCompleted, desc: "zarr -s localhost -p", noCLIStart: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var opts []option
			if c.cfg != nil {
				opts = append(opts, withConfig(c.cfg))
			}
			e := setup(t, pgtest.SQLiteURL, opts...)
			zarr := e.zarr("demo/alice/run1.zarr", c.layout)
			var files []string
			for _, f := range c.files {
				switch {
				case f == "Z":
					files = append(files, zarr)
				case f == "OUT":
					files = append(files, omerotest.WriteZarr(t, filepath.Join(t.TempDir(), "elsewhere.zarr"), c.layout))
				case strings.HasPrefix(f, "Z/"):
					files = append(files, filepath.Join(zarr, f[2:]))
				default:
					files = append(files, e.file(f, "pixels"))
				}
			}
			e.double.SetFailure(t, c.fail)
			e.start()
			before := len(e.double.State(t).Calls)
			destType := c.destType
			if destType == "" {
				destType = "Dataset"
			}
			var uuid string
			if c.source != "" {
				uuid = e.insertFrom(c.source, c.destID, files)
			} else {
				uuid = e.insert("alice", "Demo", c.destID, destType, files)
			}
			o := e.expect(uuid, c.stage, 20*time.Second)
			t.Logf("description: %s", o.Description)
			if !strings.Contains(o.Description, c.desc) {
				t.Errorf("description %q, want %q in it", o.Description, c.desc)
			}
			if c.images > 0 && (o.Result == nil || len(o.Result.Images) != c.images) {
				t.Errorf("result %+v, want %d images", o.Result, c.images)
			}
			st := e.double.State(t)
			if c.stage == db.StageCompleted && c.imports == 0 {
				in := map[int64]string{}
				for _, d := range st.Datasets {
					in[d.ID] = d.Name
				}
				want := c.dataset
				if want == "" {
					want = "first"
				}
				for _, img := range st.Images {
					if in[img.DatasetID] != want || img.ExtInfo == nil {
						t.Errorf("image %+v: want it in the Dataset named %q, with an ExternalInfo", img, want)
					}
				}
			}
			if len(st.Imports) != c.imports {
				t.Errorf("%d imports, want %d", len(st.Imports), c.imports)
			}
			if n := len(st.Calls) - before; (c.noCLIStart && n != 0) || n > 4 {
				t.Errorf("%d CLI starts (none wanted: %v; at most 4)", n, c.noCLIStart)
			}
		})
	}
}

// A person can read what the registration printed in the order's CLI log, as for an import.
func TestZarrRegistrationLog(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL)
	zarr := e.zarr("demo/alice/x.zarr", omerotest.ZarrImage)
	e.start()
	uuid := e.insert("alice", "Demo", "151", "Dataset", []string{zarr})
	o := e.expect(uuid, db.StageCompleted, 20*time.Second)
	b, err := os.ReadFile(filepath.Join(e.logDir, "cli."+uuid+".logs"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("Created Image %d", o.Result.Images[0]); !strings.Contains(string(b), want) {
		t.Errorf("log %q lacks %q", b, want)
	}
	raw, _ := json.Marshal(o.Result)
	if strings.Contains(string(raw), "filesets") {
		t.Errorf("result %s names filesets", raw)
	}
}

// Registered images have no fileset: recovery still knows the order reached OMERO and never
// queues it again.
func TestRecoverKeepsRegisteredOrdersFailed(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL)
	uuid := e.insert("alice", "Demo", "151", "Dataset", []string{e.zarr("demo/alice/r.zarr", omerotest.ZarrImage)})
	orders, err := e.store.Claim(context.Background(), "gone", 1, time.Hour)
	if err != nil || len(orders) != 1 {
		t.Fatalf("claim: %v %v", orders, err)
	}
	if err := e.store.SetResult(context.Background(), orders[0].Lease(), db.Result{Images: []int64{42, 43}}); err != nil {
		t.Fatal(err)
	}
	q := e.store.DB().Rebind(`UPDATE imports SET lease_expires = ? WHERE uuid = ?`)
	if _, err := e.store.DB().Exec(q, time.Now().Add(-time.Hour), uuid); err != nil {
		t.Fatal(err)
	}
	if n, err := e.store.Recover(context.Background(), db.RecoverPolicy{Retry: true, MaxAttempts: 5}); err != nil || n != 1 {
		t.Fatalf("recover: %d, %v", n, err)
	}
	o, err := e.store.Get(context.Background(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	if o.Stage != db.StageFailed || !strings.Contains(o.Description, "reached OMERO as Images 42, 43") {
		t.Errorf("after recovery: %q %q", o.Stage, o.Description)
	}
}
