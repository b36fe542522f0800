package runner_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner"
	"github.com/omero-adi/omero-adi/runner/omero"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// engines lists the databases every runner test runs on.
var engines = []struct {
	name string
	url  func(testing.TB) string
}{
	{"sqlite", pgtest.SQLiteURL},
	{"postgres", pgtest.URL},
}

func forEachEngine(t *testing.T, f func(t *testing.T, url func(testing.TB) string)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { f(t, e.url) })
	}
}

// env is a runner under test with its collaborators: a real database, the omero CLI double,
// and a data root laid out like /data.
type env struct {
	t       testing.TB
	store   *db.Store
	double  *omerotest.Double
	client  *omero.Client
	data    string // the data root (base_dir)
	logDir  string
	tmpRoot string
	cfg     runner.Config
	ocfg    omero.Config // the client's, before setup's options build it
	pre     runner.Preprocessor
	cancel  context.CancelFunc
	done    chan error
}

type option func(*env)

func withConfig(f func(*runner.Config)) option { return func(e *env) { f(&e.cfg) } }

func withOMERO(f func(*omero.Config)) option { return func(e *env) { f(&e.ocfg) } }

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return logrus.NewEntry(l)
}

func setup(t testing.TB, url func(testing.TB) string, opts ...option) *env {
	t.Helper()
	ctx := context.Background()
	store, err := db.Open(ctx, url(t), db.Options{Logger: quietLog(), Worker: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	if _, err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	e := &env{t: t, store: store, double: omerotest.New(t), data: filepath.Join(root, "data"),
		logDir: filepath.Join(root, "log"), tmpRoot: filepath.Join(root, "inplace")}
	for _, d := range []string{e.data, e.logDir, e.tmpRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.ocfg = omero.DefaultConfig()
	oc := &e.ocfg
	oc.CLI, oc.Port, oc.AdminPassword, oc.Env = e.double.Bin, e.double.Port, "omero", e.double.Env()
	oc.ManagedRepository, oc.LogDir, oc.SessionRoot = e.double.ManagedRepo, e.logDir, filepath.Join(root, "sessions")
	oc.ImportTimeout, oc.CallTimeout, oc.ConnectRetries, oc.ConnectBackoff = 30*time.Second, 10*time.Second, 1, 10*time.Millisecond
	e.cfg = runner.DefaultConfig()
	e.cfg.Worker, e.cfg.Lease, e.cfg.PollInterval, e.cfg.ShutdownTimeout = "test-"+t.Name(), 3*time.Second, 200*time.Millisecond, 5*time.Second
	e.cfg.Roots, e.cfg.LogDir, e.cfg.ManagedRepo = order.Roots{BaseDir: e.data}, e.logDir, e.double.ManagedRepo
	for _, o := range opts {
		o(e)
	}
	e.client, err = omero.New(e.ocfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs the runner with the CLI adapter until the test ends (or stop is called).
func (e *env) start() {
	e.t.Helper()
	e.startWith(e.client)
}

// stop cancels the runner and waits for Run to return.
func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("runner.Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		e.t.Error("runner did not stop within 30s")
	}
	e.cancel = nil
}

// file writes a file below the data root and returns its absolute path.
func (e *env) file(rel, content string) string {
	e.t.Helper()
	p := filepath.Join(e.data, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// insert runs the hand-written INSERT of orders-db.md and returns the uuid.
func (e *env) insert(user, group, destID, destType string, files any) string {
	e.t.Helper()
	raw, ok := files.(string)
	if !ok {
		b, _ := json.Marshal(files)
		raw = string(b)
	}
	uuid := fmt.Sprintf("%08d-0000-4000-8000-%012d", time.Now().UnixNano()%1e8, time.Now().UnixNano()%1e12)
	q := e.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
		VALUES (?, ?, ?, ?, 'Import Pending', ?, ?)`)
	if _, err := e.store.DB().Exec(q, group, user, destID, destType, uuid, raw); err != nil {
		e.t.Fatal(err)
	}
	return uuid
}

// wait polls the order until it reaches one of the final stages, and fails the test after timeout.
func (e *env) wait(uuid string, timeout time.Duration, stages ...string) db.Order {
	e.t.Helper()
	if len(stages) == 0 {
		stages = []string{db.StageCompleted, db.StageFailed, db.StageCancelled}
	}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var (
		last    db.Order
		lastErr error
	)
	for time.Now().Before(deadline) {
		o, err := e.store.Get(context.Background(), uuid)
		lastErr = err
		if err == nil {
			last = o
			for _, s := range stages {
				if o.Stage == s {
					return o
				}
			}
		}
		<-tick.C
	}
	if lastErr != nil {
		e.t.Fatalf("order %s: %v after %s", uuid, lastErr, timeout)
	}
	e.t.Fatalf("order %s: still %q (%s) after %s, want one of %q", uuid, last.Stage, last.Description, timeout, stages)
	return last
}

func (e *env) expect(uuid, stage string, timeout time.Duration) db.Order {
	e.t.Helper()
	o := e.wait(uuid, timeout)
	if o.Stage != stage {
		e.t.Fatalf("order %s: stage %q (%s), want %q", uuid, o.Stage, o.Description, stage)
	}
	return o
}

func TestHandWrittenOrderCompletes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		f := e.file("demo/alice/plate 1.tif", "pixels")
		e.file("demo/alice/metadata.csv", "key,value\nmicroscope,LSM 980\nobjective,63x\n")
		e.start()
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{f})
		o := e.expect(uuid, db.StageCompleted, 20*time.Second)
		if !strings.Contains(o.Description, "Dataset 151") {
			t.Errorf("description %q does not name the dataset", o.Description)
		}
		if o.Result == nil || len(o.Result.Images) != 1 || len(o.Result.Filesets) != 1 {
			t.Fatalf("result %+v, want one fileset with one image", o.Result)
		}
		st := e.double.State(t)
		if len(st.Imports) != 1 {
			t.Fatalf("double saw %d imports, want 1", len(st.Imports))
		}
		imp := st.Imports[0]
		if imp.User != "alice" || imp.Group != "Demo" || imp.Target != "Dataset:151" {
			t.Errorf("import as %s/%s into %s, want alice/Demo into Dataset:151", imp.User, imp.Group, imp.Target)
		}
		links := managedLinks(t, e.double.ManagedRepo)
		if len(links) != 1 || links[0] != f {
			t.Errorf("ManagedRepository links point to %q, want [%q]", links, f)
		}
		recorded, err := e.store.Links(context.Background(), uuid)
		if err != nil || len(recorded) != 1 || recorded[0].Target != f || recorded[0].Size != int64(len("pixels")) ||
			!strings.HasPrefix(recorded[0].Path, e.double.ManagedRepo+"/") || recorded[0].ModTime.IsZero() || recorded[0].Ino == 0 {
			t.Errorf("recorded links = %+v, %v; want the one link to %s (6 bytes)", recorded, err, f)
		}
		ann := annotationOf(t, st, fmt.Sprintf("Image:%d", o.Result.Images[0]))
		want := map[string]string{"UUID": uuid, "Filepath": f, "Group": "Demo", "Username": "alice",
			"DestinationID": "151", "DestinationType": "Dataset", "csv_microscope": "LSM 980", "csv_objective": "63x"}
		for k, v := range want {
			if ann[k] != v {
				t.Errorf("annotation %s = %q, want %q", k, ann[k], v)
			}
		}
		if ann["Import_Timestamp"] == "" {
			t.Error("annotation has no Import_Timestamp")
		}
		if st.PasswordInArgv {
			t.Error("a password appeared on a command line")
		}
		for _, c := range st.Calls {
			if c.PasswordInArgv {
				t.Errorf("password in argv: %q", c.Argv)
			}
		}
	})
}

// processed_folder (PROCESSED_DATA_FOLDER) is where a metadata.csv beside the converted files is
// looked for; an order without preprocessing has no Imported_from.
func TestProcessedFolderMetadata(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL, withConfig(func(c *runner.Config) { c.ProcessedFolder = "processed" }))
	f := e.file("demo/alice/a.tif", "pixels")
	e.file("demo/alice/processed/metadata.csv", "stain,DAPI\n")
	e.file("demo/alice/.processed/metadata.csv", "stain,ignored\n")
	e.start()
	o := e.expect(e.insert("alice", "Demo", "151", "Dataset", []string{f}), db.StageCompleted, 20*time.Second)
	ann := annotationOf(t, e.double.State(t), fmt.Sprintf("Image:%d", o.Result.Images[0]))
	if ann["csv_stain"] != "DAPI" {
		t.Errorf("annotation csv_stain = %q, want DAPI from processed/metadata.csv", ann["csv_stain"])
	}
	if v, ok := ann["Imported_from"]; ok {
		t.Errorf("Imported_from = %q on an order without preprocessing", v)
	}
}

// managedLinks returns the targets of every symlink in the ManagedRepository.
func managedLinks(t *testing.T, repo string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(repo, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&os.ModeSymlink != 0 {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func annotationOf(t *testing.T, st omerotest.State, target string) map[string]string {
	t.Helper()
	for _, l := range st.Links {
		if l.Parent != target {
			continue
		}
		for _, a := range st.Annotations {
			if l.Child != fmt.Sprintf("MapAnnotation:%d", a.ID) {
				continue
			}
			m := map[string]string{}
			for _, kv := range a.Values {
				m[kv[0]] = kv[1]
			}
			if a.NS != "biomero.import" {
				t.Errorf("annotation namespace %q", a.NS)
			}
			return m
		}
	}
	t.Fatalf("no annotation linked to %s", target)
	return nil
}
