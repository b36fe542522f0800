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
	"github.com/omero-adi/omero-adi/runner"
)

// Each bad row ends Import Failed with a description naming the field; the runner goes on.
func TestBadOrdersFail(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url, withConfig(func(c *runner.Config) {
			c.Roots.Groups = map[string][]string{"Restricted": {filepath.Join(c.Roots.BaseDir, "restricted")}, "Gone": {"/nonexistent"}}
		}))
		good := e.file("demo/alice/good.tif", "x")
		e.file("restricted/other.tif", "x")
		outside := filepath.Join(filepath.Dir(e.data), "outside.tif")
		if err := os.WriteFile(outside, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/etc", filepath.Join(e.data, "etc-link")); err != nil {
			t.Fatal(err)
		}
		unreadable := e.file("demo/alice/secret.tif", "x")
		if err := os.Chmod(unreadable, 0); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name, user, group, destID, destType string
			files                               any
			want                                string // in the description
		}{
			{"files not JSON", "alice", "Demo", "151", "Dataset", "/data/a.tif", "files"},
			{"files empty list", "alice", "Demo", "151", "Dataset", "[]", "files"},
			{"relative path", "alice", "Demo", "151", "Dataset", []string{"demo/alice/good.tif"}, "not an absolute path"},
			{"dot-dot escape", "alice", "Demo", "151", "Dataset", []string{e.data + "/../etc/passwd"}, `".."`},
			{"outside data root", "alice", "Demo", "151", "Dataset", []string{outside}, "outside the allowed roots"},
			{"symlink to /etc", "alice", "Demo", "151", "Dataset", []string{filepath.Join(e.data, "etc-link", "passwd")}, "resolves to"},
			{"missing file", "alice", "Demo", "151", "Dataset", []string{filepath.Join(e.data, "demo/alice/nope.tif")}, "does not exist"},
			{"empty user", "", "Demo", "151", "Dataset", []string{good}, "user_name"},
			{"empty group", "alice", " ", "151", "Dataset", []string{good}, "group_name"},
			{"unknown destination type", "alice", "Demo", "151", "Project", []string{good}, "destination_type"},
			{"bad destination id", "alice", "Demo", "15x", "Dataset", []string{good}, "destination_id"},
			{"zero destination id", "alice", "Demo", "0", "Dataset", []string{good}, "destination_id"},
			{"outside the group's roots", "alice", "Restricted", "151", "Dataset", []string{good}, "outside the allowed roots"},
			{"group roots missing", "alice", "Gone", "151", "Dataset", []string{good}, "group_name"},
			{"line break in a name", "alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/new\nline.tif", "x")}, "line break"},
			{"files a JSON object", "alice", "Demo", "151", "Dataset", `{"files": ["` + good + `"]}`, "not a JSON list"},
			{"files a JSON string", "alice", "Demo", "151", "Dataset", `"` + good + `"`, "not a JSON list"},
			{"10 MB files value", "alice", "Demo", "151", "Dataset", `["` + good + `", "` + strings.Repeat("x", 10<<20) + `"]`, "files[1]"},
			{"10 MB of garbage", "alice", "Demo", "151", "Dataset", strings.Repeat("[", 10<<20), "not a JSON list"},
			{"dash option as a path", "alice", "Demo", "151", "Dataset", []string{"--help"}, "not an absolute path"},
		}
		// A file name that is not UTF-8 (written by a Latin-1 host): SQLite stores the bytes and the
		// runner refuses them; PostgreSQL refuses the INSERT itself.
		latin1 := `["` + e.file("demo/alice/caf\xe9.tif", "x") + `"]`
		if e.store.Driver() == db.DriverPostgres {
			q := e.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, files)
				VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', 'latin1', ?)`)
			if _, err := e.store.DB().Exec(q, latin1); err == nil || !strings.Contains(err.Error(), "UTF8") {
				t.Errorf("PostgreSQL took a files value that is not UTF-8: %v", err)
			}
		} else {
			cases = append(cases, struct {
				name, user, group, destID, destType string
				files                               any
				want                                string
			}{"non-UTF-8 name", "alice", "Demo", "151", "Dataset", latin1, "not valid UTF-8 text (byte 0xe9"})
		}
		if os.Geteuid() != 0 { // root reads everything
			cases = append(cases, struct {
				name, user, group, destID, destType string
				files                               any
				want                                string
			}{"unreadable", "alice", "Demo", "151", "Dataset", []string{unreadable}, "cannot be read"})
		}
		e.start()
		uuids := make([]string, len(cases))
		for i, c := range cases {
			uuids[i] = e.insert(c.user, c.group, c.destID, c.destType, c.files)
		}
		for i, c := range cases {
			o := e.expect(uuids[i], db.StageFailed, 20*time.Second)
			if !strings.Contains(o.Description, c.want) {
				t.Errorf("%s: description %q does not contain %q", c.name, o.Description, c.want)
			}
			checkRetryHint(t, c.name, o.Description)
			if len(o.Description) > 2000 {
				t.Errorf("%s: description of %d bytes, want it bounded", c.name, len(o.Description))
			}
		}
		// The runner goes on serving good orders, including awkward file names.
		var names []string
		for _, n := range []string{"with space.tif", `quo"te's.tif`, "-leading-dash.tif", "$(touch pwned).tif"} {
			names = append(names, e.file("demo/alice/"+n, "x"))
		}
		uuid := e.insert("alice", "Demo", "151", "Dataset", names)
		o := e.expect(uuid, db.StageCompleted, 20*time.Second)
		if len(o.Result.Images) != len(names) {
			t.Errorf("imported %d images, want %d", len(o.Result.Images), len(names))
		}
		if len(e.double.State(t).Imports) != 1 {
			t.Errorf("bad orders reached the import")
		}
	})
}

// checkRetryHint checks that a failed order's description says how to retry once: the runner
// adds the hint, the components' own text (cause and fix) adds none.
func checkRetryHint(t *testing.T, name, desc string) {
	t.Helper()
	if n := strings.Count(desc, "omero-adi orders retry"); n != 1 {
		t.Errorf("%s: description %q names the retry command %d times, want once", name, desc, n)
	}
	for _, dup := range []string{"retry the order", "to retry", "and retry"} {
		if strings.Contains(desc, dup) {
			t.Errorf("%s: description %q has a retry hint of its own (%q) besides the runner's", name, desc, dup)
		}
	}
}

// A failed order is retried with the documented UPDATE, without restarting the runner.
func TestRetryUpdateRerunsLive(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		e.start()
		path := filepath.Join(e.data, "demo/alice/late.tif")
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{path})
		e.expect(uuid, db.StageFailed, 20*time.Second)
		e.file("demo/alice/late.tif", "now it is here")
		if _, err := e.store.DB().Exec(e.store.DB().Rebind(`UPDATE imports SET stage = 'Import Pending' WHERE uuid = ?`), uuid); err != nil {
			t.Fatal(err)
		}
		o := e.expect(uuid, db.StageCompleted, 20*time.Second)
		if o.Attempt != 2 {
			t.Errorf("attempt %d, want 2", o.Attempt)
		}
	})
}

// Orders queued while no runner ran are processed when one starts.
func TestOrdersQueuedWhileStopped(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		var uuids []string
		for i := 0; i < 5; i++ {
			uuids = append(uuids, e.insert("bob", "Demo", "152", "Dataset", []string{e.file("demo/bob/f"+string(rune('a'+i))+".tif", "x")}))
		}
		e.start()
		for _, u := range uuids {
			e.expect(u, db.StageCompleted, 20*time.Second)
		}
	})
}

// Each failure switch of the CLI double gives the right stage and a description a person can act on.
func TestOMEROFailures(t *testing.T) {
	cases := []struct {
		name    string
		failure omerotest.Failure
		want    string
	}{
		{"login refused", omerotest.Failure{BadPassword: true}, "log in"},
		{"connection refused", omerotest.Failure{ConnectionRefused: -1}, "connect"},
		{"unknown host", omerotest.Failure{UnknownHost: -1}, "host"},
		{"fileset fails", omerotest.Failure{FailImport: true, FailImportAfter: 1}, "1 of 2 files is in OMERO: "},
		{"exit 0 without output", omerotest.Failure{NoImports: true}, "no"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t, pgtest.SQLiteURL)
			e.double.SetFailure(t, c.failure)
			e.start()
			files := []string{e.file("demo/alice/a.tif", "a"), e.file("demo/alice/b.tif", "b")}
			uuid := e.insert("alice", "Demo", "151", "Dataset", files)
			o := e.expect(uuid, db.StageFailed, 30*time.Second)
			if !strings.Contains(strings.ToLower(o.Description), strings.ToLower(c.want)) {
				t.Errorf("description %q does not contain %q", o.Description, c.want)
			}
			checkRetryHint(t, c.name, o.Description)
		})
	}
}

// Cancelling a running order stops its import promptly and ends it Import Cancelled.
func TestCancelRunningOrder(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url, withConfig(func(c *runner.Config) { c.Lease = 3 * time.Second }))
		e.double.SetFailure(t, omerotest.Failure{Hang: true})
		e.start()
		uuid := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/a.tif", "a")})
		e.wait(uuid, 10*time.Second, db.StageStarted)
		waitImportRunning(t, e)
		start := time.Now()
		if _, err := e.store.Cancel(context.Background(), uuid); err != nil {
			t.Fatal(err)
		}
		e.expect(uuid, db.StageCancelled, 10*time.Second)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("cancel took %s", d)
		}
	})
}

// waitImportRunning waits until the double has started an import (it records it in its state).
func waitImportRunning(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, c := range e.double.State(t).Calls {
			if len(c.Argv) > 0 && c.Argv[0] == "import" {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the import never started")
}

// On shutdown a running import gets shutdown_timeout, then its order is released and recovery
// fails it as interrupted.
func TestShutdownReleasesRunningOrders(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL, withConfig(func(c *runner.Config) { c.ShutdownTimeout = 300 * time.Millisecond }))
	e.double.SetFailure(t, omerotest.Failure{Hang: true})
	e.start()
	uuid := e.insert("alice", "Demo", "151", "Dataset", []string{e.file("demo/alice/a.tif", "a")})
	e.wait(uuid, 10*time.Second, db.StageStarted)
	waitImportRunning(t, e)
	e.stop()
	o, err := e.store.Get(context.Background(), uuid)
	if err != nil {
		t.Fatal(err)
	}
	if o.Stage != db.StageStarted || o.LeaseExpires == nil || o.LeaseExpires.After(time.Now()) {
		t.Fatalf("after shutdown: stage %q lease %v, want Import Started with an expired lease", o.Stage, o.LeaseExpires)
	}
	if n, err := e.store.Recover(context.Background(), db.RecoverPolicy{}); err != nil || n != 1 {
		t.Fatalf("recover: %d, %v", n, err)
	}
	o, _ = e.store.Get(context.Background(), uuid)
	if o.Stage != db.StageFailed || !strings.Contains(o.Description, "interrupted") {
		t.Errorf("after recovery: %q %q", o.Stage, o.Description)
	}
}

// Dry run validates, logs the exact command and completes the order without importing.
func TestDryRun(t *testing.T) {
	e := setup(t, pgtest.SQLiteURL, withConfig(func(c *runner.Config) { c.DryRun = true }))
	e.start()
	f := e.file("demo/alice/a b.tif", "a")
	uuid := e.insert("alice", "Demo", "151", "Dataset", []string{f})
	o := e.expect(uuid, db.StageCompleted, 10*time.Second)
	for _, want := range []string{"dry run:", "import", "--transfer=ln_s", "-d 151", "'" + f + "'"} {
		if !strings.Contains(o.Description, want) {
			t.Errorf("description %q lacks %q", o.Description, want)
		}
	}
	if n := len(e.double.State(t).Imports); n != 0 {
		t.Errorf("dry run imported %d times", n)
	}
	bad := e.insert("alice", "Demo", "151", "Dataset", []string{"relative.tif"})
	e.expect(bad, db.StageFailed, 10*time.Second)
}

// import_options as BIOMERO.importer 1.4 writes it (IngestTracker.db_log_ingestion_event: every
// model column, json.dumps of the options or NULL): plain options import as always; malformed
// JSON and operations this agent does not perform fail the order naming import_options, and
// nothing reaches the import.
func TestImportOptions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, url func(testing.TB) string) {
		e := setup(t, url)
		e.start()
		shallow := `{"schema": 2, "registration": {"schema": 1, "platePixelSource": "source", "plateLabelName": null}, ` +
			`"operations": [{"kind": "biomero.shallow-zarr", "phase": "postprocess", "schema": 1, "canonicalInputs": {}}]}`
		cases := []struct {
			name    string
			options any // nil for NULL
			want    string
			wantIn  string // in the description of a failure
		}{
			{"NULL", nil, db.StageCompleted, ""},
			{"empty object", `{}`, db.StageCompleted, ""},
			{"schema 1", `{"schema": 1, "platePixelSource": "source", "plateLabelName": null}`, db.StageCompleted, ""},
			{"schema 2 without operations", `{"schema": 2, "registration": {"schema": 1}, "operations": []}`, db.StageCompleted, ""},
			{"malformed JSON", `{"schema": 2,`, db.StageFailed, "import_options: is not a JSON object"},
			{"shallow-zarr operation", shallow, db.StageFailed, "import_options: asks for operation biomero.shallow-zarr, which omero-adi does not perform"},
			{"unknown schema", `{"schema": 3}`, db.StageFailed, "import_options: schema 3 is not supported"},
		}
		ids := make([]string, len(cases))
		for i, c := range cases {
			f := e.file(fmt.Sprintf("demo/alice/options-%d.tif", i), "x")
			files, _ := json.Marshal([]string{f})
			names, _ := json.Marshal([]string{filepath.Base(f)})
			ids[i] = fmt.Sprintf("99999999-0000-4000-8000-%012d", i)
			q := e.store.DB().Rebind(`INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid,
				timestamp, files, file_names, import_options, description, preprocessing_id)
				VALUES ('Demo', 'alice', '151', 'Dataset', 'Import Pending', ?, CURRENT_TIMESTAMP, ?, ?, ?, NULL, NULL)`)
			if _, err := e.store.DB().Exec(q, ids[i], string(files), string(names), c.options); err != nil {
				t.Fatalf("%s: INSERT: %v", c.name, err)
			}
		}
		imported := 0
		for i, c := range cases {
			o := e.expect(ids[i], c.want, 20*time.Second)
			if want, _ := c.options.(string); o.ImportOptions != want {
				t.Errorf("%s: import_options changed to %q", c.name, o.ImportOptions)
			}
			if c.want == db.StageCompleted {
				imported++
				continue
			}
			if !strings.Contains(o.Description, c.wantIn) || !strings.Contains(o.Description, "retry") {
				t.Errorf("%s: description %q, want it to contain %q and how to retry", c.name, o.Description, c.wantIn)
			}
		}
		if n := len(e.double.State(t).Imports); n != imported {
			t.Errorf("%d imports, want %d: orders with unsupported import_options must not be imported", n, imported)
		}
	})
}
