package runner_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/preprocess"
)

// withPreprocessing gives the runner a real preprocess.Runner (podman with the flags of our test
// machines, temp folders below e.tmpRoot); edits change its settings (timeout, local mapping).
func withPreprocessing(t testing.TB, edits ...func(*preprocess.Config)) option {
	return func(e *env) {
		cfg := preprocess.DefaultConfig()
		cfg.ExtraArgs, cfg.LocalTmpRoot, cfg.Timeout = convtest.PodmanArgs(), e.tmpRoot, time.Minute
		for _, edit := range edits {
			edit(&cfg)
		}
		p, err := preprocess.New(cfg, quietLog())
		if err != nil {
			t.Fatal(err)
		}
		e.pre = p
	}
}

// preprocessing inserts an imports_preprocessing row the way orders-db.md shows it, with the
// convention's mounts /data and (unless alt is empty) alt, and returns its id.
func (e *env) preprocessing(container, alt string, params map[string]string) int64 {
	e.t.Helper()
	altCol := sql.NullString{String: alt, Valid: alt != ""}
	var extra sql.NullString
	if params != nil {
		b, _ := json.Marshal(params)
		extra = sql.NullString{String: string(b), Valid: true}
	}
	q := e.store.DB().Rebind(`INSERT INTO imports_preprocessing (container, input_file, output_folder, alt_output_folder, extra_params)
		VALUES (?, '{Files}', '/data', ?, ?) RETURNING id`)
	var id int64
	if err := e.store.DB().QueryRow(q, container, altCol, extra).Scan(&id); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// insertPre inserts a hand-written order of alice into Dataset 151 whose preprocessing_id is pre.
func (e *env) insertPre(pre int64, files ...string) string {
	e.t.Helper()
	b, _ := json.Marshal(files)
	id := uuid.NewString()
	q := e.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files, preprocessing_id)
		VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', ?, ?, ?)`)
	if _, err := e.store.DB().Exec(q, id, string(b), pre); err != nil {
		e.t.Fatal(err)
	}
	return id
}

// sums returns the sha256 of each file.
func sums(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		out[f] = hex.EncodeToString(s[:])
	}
	return out
}

func checkSums(t *testing.T, before map[string]string) {
	t.Helper()
	for f, want := range before {
		if got := sums(t, f)[f]; got != want {
			t.Errorf("original %s changed: sha256 %s, was %s", f, got, want)
		}
	}
}

// assertNoTemp checks that no temp folder is left below the temp root.
func assertNoTemp(t *testing.T, e *env) {
	t.Helper()
	entries, err := os.ReadDir(e.tmpRoot)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		t.Errorf("temp folder left: %s", filepath.Join(e.tmpRoot, d.Name()))
	}
}

// filesetsOf returns the double's filesets that the order created.
func filesetsOf(t *testing.T, st omerotest.State, o db.Order) []omerotest.Fileset {
	t.Helper()
	if o.Result == nil {
		t.Fatalf("order %s has no result", o.UUID)
	}
	var out []omerotest.Fileset
	for _, id := range o.Result.Filesets {
		for _, fs := range st.Filesets {
			if fs.ID == id {
				out = append(out, fs)
			}
		}
	}
	if len(out) != len(o.Result.Filesets) {
		t.Fatalf("order %s: result names filesets %v, the double has %d of them", o.UUID, o.Result.Filesets, len(out))
	}
	return out
}

// checkRedirected checks that every link of the order's filesets points to the same relative path
// below <dir>/.processed/<order>, where the target exists: subfolders kept, nothing in a temp folder.
// It returns the number of links.
func checkRedirected(t *testing.T, e *env, o db.Order, dir string) int {
	t.Helper()
	processed := filepath.Join(dir, preprocess.DefaultProcessedFolder, o.UUID)
	n := 0
	for _, fs := range filesetsOf(t, e.double.State(t), o) {
		for _, rp := range fs.RepoPaths {
			link := filepath.Join(e.double.ManagedRepo, rp)
			target, err := os.Readlink(link)
			if err != nil {
				t.Errorf("link %s: %v", link, err)
				continue
			}
			n++
			want := filepath.Join(processed, strings.TrimPrefix(rp, fs.TemplatePrefix))
			if target != want {
				t.Errorf("link %s -> %s, want %s", rp, target, want)
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("link %s: target missing: %v", rp, err)
			}
		}
	}
	return n
}

func imageNames(st omerotest.State, ids []int64) []string {
	var out []string
	for _, id := range ids {
		for _, img := range st.Images {
			if img.ID == id {
				out = append(out, img.Name)
			}
		}
	}
	return out
}

// An order with a preprocessing row runs the container, imports the local temp copy in place,
// redirects the links to .processed, removes the temp folder, renames and annotates the image.
func TestPreprocessingOrderCompletes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		image := convtest.Image(t)
		e := setup(t, url, withPreprocessing(t))
		f := e.file("demo/alice/plate1.lif", "vendor pixels of plate one")
		before := sums(t, f)
		e.start()
		pre := e.preprocessing(image, "/out", map[string]string{"nested": "yes", "saveoption": "single"})
		id := e.insertPre(pre, f)
		o := e.expect(id, db.StageCompleted, 30*time.Second)

		if !strings.Contains(o.Description, "after preprocessing with "+image) {
			t.Errorf("description %q does not name the preprocessing", o.Description)
		}
		if len(o.Result.Images) != 1 || len(o.Result.Filesets) != 1 {
			t.Fatalf("result %+v, want one fileset with one image", o.Result)
		}
		// The nested OME-Zarr tree of the converter has 6 files, in 3 levels of subfolders.
		if n := checkRedirected(t, e, o, filepath.Dir(f)); n != 6 {
			t.Errorf("%d links, want the 6 files of the nested result", n)
		}
		for _, l := range managedLinks(t, e.double.ManagedRepo) {
			if !strings.HasPrefix(l, filepath.Join(filepath.Dir(f), ".processed")+"/") {
				t.Errorf("link points to %s, outside .processed", l)
			}
		}
		assertNoTemp(t, e)
		checkSums(t, before)
		// What the integrity check reads: the links as redirected, with their targets' sizes.
		recorded, err := e.store.Links(context.Background(), id)
		if err != nil || len(recorded) != 6 {
			t.Fatalf("recorded links = %+v, %v; want the 6 redirected links", recorded, err)
		}
		for _, l := range recorded {
			fi, err := os.Stat(l.Target)
			if err != nil || !strings.Contains(l.Target, "/.processed/") || fi.Size() != l.Size || l.FilesetID != o.Result.Filesets[0] {
				t.Errorf("recorded link %+v: target %v, want a file in .processed of that size in fileset %d", l, err, o.Result.Filesets[0])
			}
		}

		st := e.double.State(t)
		if len(st.Imports) != 1 || st.Imports[0].Transfer != "ln_s" || !strings.HasPrefix(st.Imports[0].Paths[0], e.tmpRoot+"/") {
			t.Errorf("imports %+v, want one ln_s import from the temp folder", st.Imports)
		}
		if names := imageNames(st, o.Result.Images); len(names) != 1 || names[0] != "plate1" {
			t.Errorf("image names %q, want the result name [plate1]", names)
		}
		ann := annotationOf(t, st, fmt.Sprintf("Image:%d", o.Result.Images[0]))
		want := map[string]string{
			"UUID": id, "Filepath": f, "Username": "alice",
			"preprocessing_container":            image,
			"preprocessing_nested":               "yes",
			"preprocessing_saveoption":           "single",
			"processing_output_source":           "plate1.lif",
			"processing_output_result":           "0",
			"processing_output_param_saveoption": "single",
		}
		for k, v := range want {
			if ann[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, ann[k], v)
			}
		}
		// Imported_from names the container's result on the share (BIOMERO.importer 1.4).
		if from := ann["Imported_from"]; !strings.HasPrefix(from, filepath.Join(filepath.Dir(f), ".processed", id)+"/") {
			t.Errorf("annotation Imported_from = %q, want the result below .processed/%s", from, id)
		} else if _, err := os.Stat(from); err != nil {
			t.Errorf("Imported_from %s: %v", from, err)
		}

		hist, err := e.store.History(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		var stages []string
		for _, h := range hist {
			stages = append(stages, h.Stage)
		}
		if !containsInOrder(stages, db.StageStarted, db.StagePreprocessing, db.StageCompleted) {
			t.Errorf("history stages %q, want Import Started, Import Preprocessing, Import Completed in order", stages)
		}
		logText, err := os.ReadFile(filepath.Join(e.logDir, "preprocessing."+id+".log"))
		if err != nil || !strings.Contains(string(logText), "converting /data/plate1.lif") {
			t.Errorf("preprocessing log lacks the container's output: %v %q", err, logText)
		}
	})
}

func containsInOrder(list []string, want ...string) bool {
	i := 0
	for _, s := range list {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

// Several results for one input, a file name with spaces, and two orders at once on files of one
// folder (even the same file): every result is imported and redirected, nothing collides.
func TestPreprocessingSeveralOrders(t *testing.T) {
	image := convtest.Image(t)
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t))
	multi := e.file("demo/alice/multi/scan.lif", "three series")
	spaced := e.file("demo/alice/with space/plate 1.lif", "spaced pixels")
	a := e.file("demo/alice/shared/a.lif", "a pixels")
	b := e.file("demo/alice/shared/b.lif", "b pixels")
	before := sums(t, multi, spaced, a, b)
	e.start()
	three := e.preprocessing(image, "/out", map[string]string{"results": "3"})
	plain := e.preprocessing(image, "/out", nil)
	idMulti := e.insertPre(three, multi)
	idSpaced := e.insertPre(plain, spaced)
	idX := e.insertPre(plain, a)
	idY := e.insertPre(plain, a, b)

	o := e.expect(idMulti, db.StageCompleted, 40*time.Second)
	if len(o.Result.Images) != 3 || len(o.Result.Filesets) != 3 {
		t.Errorf("several results: %+v, want 3 filesets with an image each", o.Result)
	}
	checkRedirected(t, e, o, filepath.Dir(multi))
	st := e.double.State(t)
	if names := strings.Join(imageNames(st, o.Result.Images), ","); names != "scan_0,scan_1,scan_2" {
		t.Errorf("image names %s, want scan_0,scan_1,scan_2", names)
	}
	for i, img := range o.Result.Images {
		ann := annotationOf(t, st, fmt.Sprintf("Image:%d", img))
		if ann["processing_output_result"] != fmt.Sprint(i) || ann["Filepath"] != multi {
			t.Errorf("image %d: annotation result %q Filepath %q, want %d and %s", img, ann["processing_output_result"], ann["Filepath"], i, multi)
		}
	}

	o = e.expect(idSpaced, db.StageCompleted, 40*time.Second)
	checkRedirected(t, e, o, filepath.Dir(spaced))
	st = e.double.State(t)
	if names := imageNames(st, o.Result.Images); len(names) != 1 || names[0] != "plate 1" {
		t.Errorf("image names %q, want [plate 1]", names)
	}

	ox := e.expect(idX, db.StageCompleted, 40*time.Second)
	oy := e.expect(idY, db.StageCompleted, 40*time.Second)
	if n := checkRedirected(t, e, ox, filepath.Dir(a)); n != 1 {
		t.Errorf("order X: %d links, want 1", n)
	}
	if n := checkRedirected(t, e, oy, filepath.Dir(a)); n != 2 {
		t.Errorf("order Y: %d links, want 2", n)
	}
	for _, id := range []string{idX, idY} {
		got, err := os.ReadFile(filepath.Join(filepath.Dir(a), ".processed", id, "a.ome.tiff"))
		if err != nil || string(got) != "a pixels" {
			t.Errorf("order %s: a.ome.tiff %q, %v", id, got, err)
		}
	}
	assertNoTemp(t, e)
	checkSums(t, before)
}

// Each preprocessing failure ends Import Failed with a description a person can act on; the
// originals are untouched, the temp folder is gone and nothing is imported.
func TestPreprocessingFailures(t *testing.T) {
	image := convtest.Image(t)
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t))
	cases := []struct {
		fail string
		want []string // in the description
	}{
		{"exit", []string{"exited with status 3", "unsupported input format"}},
		{"noout", []string{"no results line"}},
		{"badjson", []string{"last output line", "converted 1 file", "not a JSON list"}},
		{"outside", []string{"outside", "full_path"}},
		{"missing", []string{"missing", "full_path", "not there"}},
	}
	e.start()
	ids := make([]string, len(cases))
	var files []string
	for i, c := range cases {
		f := e.file("demo/alice/"+c.fail+"/in.lif", "pixels "+c.fail)
		files = append(files, f)
		ids[i] = e.insertPre(e.preprocessing(image, "/out", map[string]string{"fail": c.fail}), f)
	}
	before := sums(t, files...)
	for i, c := range cases {
		o := e.expect(ids[i], db.StageFailed, 40*time.Second)
		t.Logf("%s: %s", c.fail, o.Description)
		want := append([]string{"preprocessing", image, files[i], "preprocessing." + ids[i] + ".log"}, c.want...)
		for _, w := range want {
			if !strings.Contains(o.Description, w) {
				t.Errorf("%s: description %q lacks %q", c.fail, o.Description, w)
			}
		}
		checkRetryHint(t, c.fail, o.Description)
	}
	checkSums(t, before)
	assertNoTemp(t, e)
	if n := len(e.double.State(t).Imports); n != 0 {
		t.Errorf("failed preprocessing still imported %d times", n)
	}
}

// A container that prints megabytes on stdout and stderr: the order still completes (only the
// last stdout line counts), and a failing one gets a bounded description.
func TestPreprocessingFlood(t *testing.T) {
	image := convtest.Image(t)
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t))
	e.start()
	ok := e.insertPre(e.preprocessing(image, "/out", map[string]string{"flood": "8000000"}), e.file("demo/alice/loud/a.lif", "a"))
	bad := e.insertPre(e.preprocessing(image, "/out", map[string]string{"flood": "8000000", "fail": "exit"}), e.file("demo/alice/loud/b.lif", "b"))
	e.expect(ok, db.StageCompleted, 2*time.Minute)
	o := e.expect(bad, db.StageFailed, 2*time.Minute)
	if !strings.Contains(o.Description, "unsupported input format") || len(o.Description) > 8000 {
		t.Errorf("description of %d bytes: %.500s", len(o.Description), o.Description)
	}
}

// A container that runs past the timeout is stopped and removed; the order fails saying so.
func TestPreprocessingTimeout(t *testing.T) {
	image := convtest.Image(t)
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t, func(c *preprocess.Config) { c.Timeout = 2 * time.Second }))
	f := e.file("demo/alice/slow.lif", "slow")
	before := sums(t, f)
	e.start()
	id := e.insertPre(e.preprocessing(image, "/out", map[string]string{"fail": "sleep"}), f)
	o := e.expect(id, db.StageFailed, 40*time.Second)
	for _, w := range []string{"timed out", "timeout of 2s", "preprocessing.timeout"} {
		if !strings.Contains(o.Description, w) {
			t.Errorf("description %q lacks %q", o.Description, w)
		}
	}
	out, err := exec.Command("podman", "ps", "-a", "--filter", "label="+preprocess.OrderLabel+"="+id, "--format", "{{.Names}}").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("containers left after the timeout: %q %v", out, err)
	}
	checkSums(t, before)
	assertNoTemp(t, e)
}

// When a converted file in .processed is gone or differs from its temp copy by the time the links
// are redirected, the order fails naming the links, and the temp folder stays so they still work.
func TestPreprocessingRedirectFails(t *testing.T) {
	image := convtest.Image(t)
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t))
	// The delay before each fileset gives the window to change .processed during the import.
	e.double.SetFailure(t, omerotest.Failure{ImportDelay: 1500 * time.Millisecond})
	gone := e.file("demo/alice/gone.lif", "gone pixels")
	grown := e.file("demo/alice/grown.lif", "grown pixels")
	before := sums(t, gone, grown)
	e.start()
	pre := e.preprocessing(image, "/out", nil)
	idGone := e.insertPre(pre, gone)
	idGrown := e.insertPre(pre, grown)

	dir := filepath.Dir(gone)
	waitImportOf(t, e, "gone.ome.tiff")
	if err := os.Remove(filepath.Join(dir, ".processed", idGone, "gone.ome.tiff")); err != nil {
		t.Fatal(err)
	}
	waitImportOf(t, e, "grown.ome.tiff")
	fh, err := os.OpenFile(filepath.Join(dir, ".processed", idGrown, "grown.ome.tiff"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(" and more"); err != nil {
		t.Fatal(err)
	}
	fh.Close()

	for _, c := range []struct{ id, want string }{{idGone, "no such file"}, {idGrown, "bytes"}} {
		o := e.expect(c.id, db.StageFailed, 40*time.Second)
		t.Logf("%s", o.Description)
		for _, w := range []string{"temp folder", "kept", c.want, e.tmpRoot} {
			if !strings.Contains(o.Description, w) {
				t.Errorf("description %q lacks %q", o.Description, w)
			}
		}
		if strings.Contains(o.Description, "orders retry") || !strings.Contains(o.Description, "do not retry") {
			t.Errorf("description %q must warn against a retry, which would import the images again", o.Description)
		}
		if o.Result == nil || len(o.Result.Images) != 1 {
			t.Fatalf("result %+v, want the imported image recorded", o.Result)
		}
		st := e.double.State(t)
		for _, fs := range filesetsOf(t, st, o) {
			for _, rp := range fs.RepoPaths {
				target, err := os.Readlink(filepath.Join(e.double.ManagedRepo, rp))
				if err != nil || !strings.HasPrefix(target, e.tmpRoot+"/") {
					t.Errorf("link %s -> %s (%v), want it still in the temp folder", rp, target, err)
				}
				if _, err := os.Stat(target); err != nil {
					t.Errorf("link %s: temp target gone: %v", rp, err)
				}
			}
		}
		// The images are in OMERO: they are still annotated.
		annotationOf(t, st, fmt.Sprintf("Image:%d", o.Result.Images[0]))
	}
	checkSums(t, before)
}

// waitImportOf waits until the double has started an import of a path ending in /base.
func waitImportOf(t *testing.T, e *env, base string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range e.double.State(t).Calls {
			if len(c.Argv) > 0 && c.Argv[0] == "import" {
				for _, a := range c.Argv {
					if strings.HasSuffix(a, "/"+base) {
						return
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no import of %s started", base)
}

// A host without podman maps the container to a local command: same arguments, same results,
// end to end; without alt_output_folder the converted files are imported in place from .processed.
func TestPreprocessingLocalCommand(t *testing.T) {
	const image = "example.org/adi/convert:1"
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t, func(c *preprocess.Config) {
		c.Runtime = "/nonexistent/podman" // must not be used
		c.Local = map[string][]string{image: {convtest.Binary(t)}}
	}))
	f := e.file("demo/alice/local/plate.lif", "local pixels")
	g := e.file("demo/alice/local/direct.lif", "direct pixels")
	e.file("demo/alice/local/metadata.csv", "key,value\nmicroscope,LSM 980\n")
	before := sums(t, f, g)
	id := e.insertPre(e.preprocessing(image, "/out", map[string]string{"nested": "yes"}), f)
	idDirect := e.insertPre(e.preprocessing(image, "", nil), g)
	// A metadata.csv the container leaves beside its results is read too.
	e.file("demo/alice/local/.processed/"+id+"/metadata.csv", "stain,DAPI\n")
	e.start()

	o := e.expect(id, db.StageCompleted, 30*time.Second)
	if n := checkRedirected(t, e, o, filepath.Dir(f)); n != 6 {
		t.Errorf("%d links, want 6", n)
	}
	st := e.double.State(t)
	ann := annotationOf(t, st, fmt.Sprintf("Image:%d", o.Result.Images[0]))
	if ann["preprocessing_container"] != image || ann["processing_output_source"] != "plate.lif" ||
		ann["csv_microscope"] != "LSM 980" || ann["csv_stain"] != "DAPI" {
		t.Errorf("annotation %v lacks the preprocessing keys", ann)
	}
	if names := imageNames(st, o.Result.Images); len(names) != 1 || names[0] != "plate" {
		t.Errorf("image names %q, want [plate]", names)
	}

	o = e.expect(idDirect, db.StageCompleted, 30*time.Second)
	if n := checkRedirected(t, e, o, filepath.Dir(g)); n != 1 {
		t.Errorf("in-place import from .processed: %d links, want 1", n)
	}
	for _, imp := range e.double.State(t).Imports {
		if strings.HasSuffix(imp.Paths[0], "direct.ome.tiff") && imp.Paths[0] != filepath.Join(filepath.Dir(g), ".processed", idDirect, "direct.ome.tiff") {
			t.Errorf("without alt_output_folder imported %s, want the file in .processed", imp.Paths[0])
		}
	}
	assertNoTemp(t, e)
	checkSums(t, before)
}

// When OMERO fails after preprocessing, filesets imported before the failure are redirected to
// .processed and the temp folder is removed; a cancelled import leaves no temp folder either.
func TestPreprocessingImportFails(t *testing.T) {
	const image = "example.org/adi/convert:1"
	local := func(c *preprocess.Config) { c.Local = map[string][]string{image: {convtest.Binary(t)}} }
	cases := []struct {
		name     string
		failure  omerotest.Failure
		stage    string
		want     string
		filesets int // recorded in the result and redirected
	}{
		{"login refused", omerotest.Failure{BadPassword: true}, db.StageFailed, "log in to OMERO", 0},
		{"second fileset fails", omerotest.Failure{FailImport: true, FailImportAfter: 1}, db.StageFailed, "import into Dataset 151", 1},
		{"cancelled during import", omerotest.Failure{Hang: true}, db.StageCancelled, "cancelled", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t, pgtest.SQLiteURL, withPreprocessing(t, local))
			e.double.SetFailure(t, c.failure)
			f := e.file("demo/alice/in.lif", "pixels")
			before := sums(t, f)
			e.start()
			id := e.insertPre(e.preprocessing(image, "/out", map[string]string{"results": "2"}), f)
			if c.stage == db.StageCancelled {
				waitImportRunning(t, e)
				if _, err := e.store.Cancel(context.Background(), id); err != nil {
					t.Fatal(err)
				}
			}
			o := e.expect(id, c.stage, 30*time.Second)
			t.Log(o.Description)
			if !strings.Contains(o.Description, c.want) {
				t.Errorf("description %q lacks %q", o.Description, c.want)
			}
			if c.filesets > 0 {
				if o.Result == nil || len(o.Result.Filesets) != c.filesets {
					t.Fatalf("result %+v, want %d fileset(s)", o.Result, c.filesets)
				}
				checkRedirected(t, e, o, filepath.Dir(f))
			}
			assertNoTemp(t, e)
			checkSums(t, before)
		})
	}
}

// Without preprocessing settings an order that asks for it fails, naming what is missing.
func TestPreprocessingNotConfigured(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL)
	f := e.file("demo/alice/x.lif", "x")
	e.start()
	id := e.insertPre(e.preprocessing("example.org/convert:1", "/out", nil), f)
	o := e.expect(id, db.StageFailed, 20*time.Second)
	if !strings.Contains(o.Description, "preprocessing") || !strings.Contains(o.Description, "example.org/convert:1") {
		t.Errorf("description %q does not explain the missing preprocessing", o.Description)
	}
}

// The dry run of a preprocessing order shows the podman command and the import command, and
// runs neither.
func TestPreprocessingDryRun(t *testing.T) {
	const image = "localhost/adi-dry-run:1"
	e := setup(t, pgtest.SQLiteURL, withPreprocessing(t), withConfig(func(c *runner.Config) { c.DryRun = true }))
	f := e.file("demo/alice/dry run/plate.lif", "dry")
	e.start()
	id := e.insertPre(e.preprocessing(image, "/out", map[string]string{"saveoption": "single"}), f)
	o := e.expect(id, db.StageCompleted, 20*time.Second)
	t.Log(o.Description)
	for _, w := range []string{
		"dry run:", "podman run --rm", "--runtime runc", "--network=none",
		"-v '" + filepath.Dir(f) + ":/data'", ":/out", image,
		"--inputfile /data/plate.lif", "--saveoption single", "--outputfolder /data/.processed", "--altoutputfolder /out",
		" && ", "import", "--transfer=ln_s", "-d 151",
	} {
		if !strings.Contains(o.Description, w) {
			t.Errorf("description lacks %q", w)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(f), ".processed")); !os.IsNotExist(err) {
		t.Errorf("dry run created .processed: %v", err)
	}
	assertNoTemp(t, e)
	if n := len(e.double.State(t).Imports); n != 0 {
		t.Errorf("dry run imported %d times", n)
	}
}
