package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// cli runs the command in-process with the given environment and returns stdout, stderr and the exit code.
func cli(t *testing.T, envv map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	getenv := func(k string) string { return envv[k] }
	err := run(context.Background(), args, &out, &errb, getenv)
	code := 0
	if err != nil {
		code = exitCode(err)
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

type fixture struct {
	env    map[string]string
	data   string
	config string
}

func newFixture(t *testing.T, url string) fixture {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(data, "demo", "alice"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "settings.toml")
	text := "base_dir = " + quote(data) + "\nlog_dir = " + quote(filepath.Join(dir, "log")) + "\nlisten = \"\"\n"
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return fixture{env: map[string]string{"INGEST_TRACKING_DB_URL": url}, data: data, config: cfg}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// useDouble points f's settings at the OMERO CLI double d ([omero] cli, port, managed_repository,
// session_dir, then the [omero] lines of extra), and the test's environment and f's admin
// password at it.
func (f fixture) useDouble(t *testing.T, d *omerotest.Double, extra string) {
	t.Helper()
	dir := filepath.Dir(f.data)
	text := "base_dir = " + quote(f.data) + "\nlog_dir = " + quote(filepath.Join(dir, "log")) + "\nlisten = \"\"\n" +
		"[omero]\ncli = " + quote(d.Bin) + "\nport = " + strconv.Itoa(d.Port) + "\nmanaged_repository = " + quote(d.ManagedRepo) +
		"\nsession_dir = " + quote(filepath.Join(dir, "sessions")) + "\n" + extra
	if err := os.WriteFile(f.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, kv := range d.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	f.env["OMERO_PASSWORD"] = omerotest.AdminPassword
}

func (f fixture) file(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(f.data, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOrdersCreateListShowRetryCancel(t *testing.T) {
	for _, eng := range []struct {
		name string
		url  func(testing.TB) string
	}{{"sqlite", pgtest.SQLiteURL}, {"postgres", pgtest.URL}} {
		t.Run(eng.name, func(t *testing.T) {
			f := newFixture(t, eng.url(t))
			file := f.file(t, "demo/alice/a.tif")
			out, errs, code := cli(t, f.env, "--config", f.config, "orders", "create", "--group", "Demo", "--user", "alice",
				"--dataset", "151", file, "--container", "example/conv:1", "--param", "saveoption=single")
			if code != 0 {
				t.Fatalf("create: exit %d: %s", code, errs)
			}
			uuid := strings.TrimSpace(out)
			if len(uuid) != 36 {
				t.Fatalf("create printed %q, want a uuid", out)
			}
			out, errs, code = cli(t, f.env, "--config", f.config, "orders", "show", uuid, "--json")
			if code != 0 {
				t.Fatalf("show: exit %d: %s", code, errs)
			}
			var o map[string]any
			if err := json.Unmarshal([]byte(out), &o); err != nil {
				t.Fatalf("show --json: %v\n%s", err, out)
			}
			for _, k := range []string{"uuid", "stage", "group", "user", "destination_type", "destination_id", "files",
				"description", "timestamp", "source", "attempt", "preprocessing", "history"} {
				if _, ok := o[k]; !ok {
					t.Errorf("show --json lacks %q", k)
				}
			}
			if o["stage"] != "Import Pending" || o["source"] != "cli" || o["user"] != "alice" {
				t.Errorf("show: %v", o)
			}
			pre, _ := o["preprocessing"].(map[string]any)
			if pre["container"] != "example/conv:1" || pre["extra_params"].(map[string]any)["saveoption"] != "single" {
				t.Errorf("preprocessing %v", pre)
			}
			out, _, code = cli(t, f.env, "--config", f.config, "orders", "list", "--json", "--stage", "pending")
			var list []map[string]any
			if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0]["uuid"] != uuid {
				t.Fatalf("list --json: exit %d %s", code, out)
			}
			out, _, code = cli(t, f.env, "--config", f.config, "orders", "list")
			if code != 0 || !strings.Contains(out, uuid) || !strings.Contains(out, "Import Pending") {
				t.Fatalf("list: exit %d %s", code, out)
			}
			// Retry of a pending order is refused; cancel works; then retry works.
			if _, _, code = cli(t, f.env, "--config", f.config, "orders", "retry", uuid); code != 2 {
				t.Errorf("retry of a pending order: exit %d, want 2", code)
			}
			if out, _, code = cli(t, f.env, "--config", f.config, "orders", "cancel", uuid); code != 0 || !strings.Contains(out, "Import Cancelled") {
				t.Errorf("cancel: exit %d %s", code, out)
			}
			if out, _, code = cli(t, f.env, "--config", f.config, "orders", "retry", uuid); code != 0 || !strings.Contains(out, "Import Pending") {
				t.Errorf("retry: exit %d %s", code, out)
			}
			if _, _, code = cli(t, f.env, "--config", f.config, "orders", "show", "no-such-uuid"); code != 2 {
				t.Errorf("show of an unknown uuid: exit %d, want 2", code)
			}
		})
	}
}

// Bad input to orders create is a clear error with exit code 2, and nothing is written.
func TestOrdersCreateRejectsBadInput(t *testing.T) {
	f := newFixture(t, pgtest.SQLiteURL(t))
	file := f.file(t, "demo/alice/a.tif")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"relative path", []string{"--group", "Demo", "--user", "alice", "--dataset", "151", "demo/alice/a.tif"}, "not an absolute path"},
		{"empty group", []string{"--group", "", "--user", "alice", "--dataset", "151", file}, "--group"},
		{"no destination", []string{"--group", "Demo", "--user", "alice", file}, "--dataset"},
		{"both destinations", []string{"--group", "Demo", "--user", "alice", "--dataset", "1", "--screen", "2", file}, "exactly one"},
		{"bad dataset id", []string{"--group", "Demo", "--user", "alice", "--dataset", "abc", file}, "destination_id"},
		{"zero screen id", []string{"--group", "Demo", "--user", "alice", "--screen", "0", file}, "destination_id"},
		{"missing file", []string{"--group", "Demo", "--user", "alice", "--dataset", "1", filepath.Join(f.data, "nope.tif")}, "does not exist"},
		{"outside base_dir", []string{"--group", "Demo", "--user", "alice", "--dataset", "1", "/etc/passwd"}, "outside"},
		{"param without container", []string{"--group", "Demo", "--user", "alice", "--dataset", "1", "--param", "a=b", file}, "--container"},
		{"bad param", []string{"--group", "Demo", "--user", "alice", "--dataset", "1", "--container", "c", "--param", "ab", file}, "KEY=VALUE"},
		{"unknown flag", []string{"--group", "Demo", "--user", "alice", "--project", "1", file}, "project"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errs, code := cli(t, f.env, append([]string{"--config", f.config, "orders", "create"}, c.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (%s)", code, errs)
			}
			if !strings.Contains(errs, c.want) {
				t.Errorf("error %q does not contain %q", errs, c.want)
			}
		})
	}
	out, _, _ := cli(t, f.env, "--config", f.config, "orders", "list", "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("bad input wrote orders: %s", out)
	}
}

// Bad settings are a clear error naming the key and the value, with exit code 2.
// rule is a valid watch rule plus extra keys, for settings tests.
func rule(extra string) string {
	return "[[rules]]\nname = \"r\"\ngroup = \"G\"\npath = \"/data/x/{user}\"\nusers = [\"u\"]\ninclude = [\"*.tif\"]\ndestination = \"Dataset:1\"\n" + extra
}

func TestBadSettings(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"unknown key", "max_worker = 3\n", `unknown key "max_worker"`},
		{"unknown nested key", "[omero]\nhots = \"x\"\n", `"omero.hots"`},
		{"bad duration", "lease = \"5x\"\n", "5x"},
		{"negative workers", "max_workers = 0\n", "max_workers"},
		{"bad url", "ingest_tracking_db = \"mysql://a@b/c\"\n", "ingest_tracking_db"},
		{"bad recover", "recover_interrupted = \"maybe\"\n", `recover_interrupted: must be fail or retry, got "maybe"`},
		{"relative base", "base_dir = \"\"\n", "base_dir"},
		{"bad rule", "[[rules]]\nname = \"r\"\ngroup = \"G\"\npath = \"/data/x\"\nuser = \"u\"\ninclude = [\"**[\"]\ndestination = \"Dataset:1\"\n", "include"},
		{"not toml", "this is not toml", "settings file"},
		{"bad omero.env", "[omero]\nenv = [\"HTTPS_PROXY=http://p:3128\", \"NOVALUE\"]\n", `omero.env[1]: must be NAME=VALUE with NAME of letters, digits and '_', got "NOVALUE"`},
		{"secret omero.env", "[omero]\nenv = [\"OMERO_PASSWORD=x\"]\n", `omero.env[0]: OMERO_PASSWORD may not be set for the CLI`},
		{"bad omero.pass_env", "[omero]\npass_env = [\"PYTHONPATH\", \"no-dash\"]\n", `omero.pass_env[1]: must name an environment variable (letters, digits and '_'), got "no-dash"`},
		{"secret omero.pass_env", "[omero]\npass_env = [\"INGEST_TRACKING_DB_URL\"]\n", `omero.pass_env[0]: INGEST_TRACKING_DB_URL is never passed to the CLI`},
		{"bad processed folder", "processed_folder = \"a/b\"\n", `processed_folder: must be one folder name`},
		{"zero legacy age", "legacy_pending_max_age = \"0s\"\n", "legacy_pending_max_age"},
		{"zero bind attempts", "[preprocessing]\nbind_retry_attempts = 0\n", "preprocessing.bind_retry_attempts: must be at least 1, got 0"},
		{"wrong type", "max_workers = \"four\"\n", "max_workers"},
		{"lease too short", "lease = \"1s\"\n", `lease: must be at least 3s`},
		{"negative duration", "poll_interval = \"-1s\"\n", "poll_interval"},
		{"number for a duration", "lease = 60\n", `lease: write a duration as a string such as "30s", not a number`},
		{"number for a table duration", "[omero]\ncall_timeout = 300\n", "omero.call_timeout: write a duration as a string"},
		{"zero call timeout", "[omero]\ncall_timeout = \"0s\"\n", `omero.call_timeout: must be a positive duration such as "5m", got "0s"`},
		{"bad watch mode", "[watch]\nmode = \"inotify\"\n", `watch.mode: must be auto, events or poll, got "inotify"`},
		{"bad tmp root", "[omero]\nlocal_tmp_root = \"/tmp/a,b\"\n", `omero.local_tmp_root: must be a clean absolute path`},
		{"bad log level", "log_level = \"loud\"\n", `log_level: must be one of`},
		{"port out of range", "[omero]\nport = 70000\n", "omero.port"},
		{"bad listen", "listen = \"nohostport\"\n", "listen"},
		{"bad notify.smtp_url", "[notify]\nsmtp_url = \"http://x\"\nfrom = \"a@b.org\"\n", `notify.smtp_url: must be smtp:// or smtps://, got "http://x"`},
		{"notify password in file", "[notify]\nsmtp_url = \"smtp://u:pw@mail\"\nfrom = \"a@b.org\"\n", `notify.smtp_url: holds a password: put it in env ADI_SMTP_PASSWORD`},
		{"notify without from", "[notify]\nsmtp_url = \"smtp://mail\"\n", `notify.from: must be set`},
		{"bad notify window", "[notify]\nwebhook_url = \"https://chat/h\"\ndigest_window = \"-1s\"\n", `notify.digest_window`},
		{"unknown notify key", "[notify]\nsmtp_host = \"x\"\n", `"notify.smtp_host"`},
		{"bad rule destination", strings.Replace(rule(""), "Dataset:1", "Project:1", 1), `"Project:1"`},
		{"bad rule unit", rule("unit = \"blob\"\n"), "unit"},
		{"bad rule settle", rule("settle = \"soon\"\n"), "soon"},
		{"bad integrity hash", "[integrity]\nhash = \"some\"\n", `integrity.hash: must be none, sample or all, got "some"`},
		{"integrity interval too short", "[integrity]\ninterval = \"10ms\"\n", `integrity.interval: must be at least "1s"`},
		{"zero integrity rate", "[integrity]\nmax_stat_per_s = 0\n", `integrity.max_stat_per_s: must be between 1 and 1000000, got 0`},
		{"unknown integrity key", "[integrity]\nintervall = \"1h\"\n", `"integrity.intervall"`},
		{"retention without holding folder", rule("[rules.retention]\nfailed_days = 30\n"), `.retention.holding_folder: required`},
		{"unknown retention key", rule("[rules.retention]\nkeep_days = 30\n"), `keep_days`},
		{"rule without path", "[[rules]]\nname = \"r\"\ngroup = \"G\"\nusers = [\"u\"]\ninclude = [\"*\"]\ndestination = \"Dataset:1\"\n", "path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "s.toml")
			if err := os.WriteFile(p, []byte(c.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, errs, code := cli(t, nil, "--config", p, "config", "check")
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(errs, c.want) {
				t.Errorf("error %q does not contain %q", errs, c.want)
			}
		})
	}
	if _, errs, code := cli(t, nil, "--config", "/nonexistent/s.toml", "config", "check"); code != 2 || !strings.Contains(errs, "/nonexistent/s.toml") {
		t.Errorf("missing explicit settings file: exit %d %q", code, errs)
	}
	if _, errs, code := cli(t, map[string]string{"OMERO_PORT": "http"}, "--config", "/dev/null", "config", "check"); code != 2 || !strings.Contains(errs, "OMERO_PORT") {
		t.Errorf("bad OMERO_PORT: exit %d %q", code, errs)
	}
	if _, errs, code := cli(t, map[string]string{"PROCESSED_DATA_FOLDER": "../up"}, "--config", "/dev/null", "config", "check"); code != 2 ||
		!strings.Contains(errs, `processed_folder: must be one folder name`) || !strings.Contains(errs, "PROCESSED_DATA_FOLDER") {
		t.Errorf("bad PROCESSED_DATA_FOLDER: exit %d %q", code, errs)
	}
	p := filepath.Join(t.TempDir(), "s.toml")
	if err := os.WriteFile(p, []byte("processed_folder = \"fromfile\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errs, code := cli(t, map[string]string{"PROCESSED_DATA_FOLDER": "processed"}, "--config", p, "config", "check"); code != 0 ||
		!strings.Contains(out, `processed_folder = "processed"`) {
		t.Errorf("PROCESSED_DATA_FOLDER does not win over the file: exit %d %s %s", code, out, errs)
	}
	if _, _, code := cli(t, nil, "frobnicate"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
}

// config check masks secrets.
func TestConfigCheckMasksSecrets(t *testing.T) {
	envv := map[string]string{"INGEST_TRACKING_DB_URL": "postgresql://adi:hunter2@db/adi", "OMERO_PASSWORD": "s3cret"}
	out, errs, code := cli(t, envv, "--config", "/dev/null", "config", "check")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "s3cret") {
		t.Errorf("secrets printed:\n%s", out)
	}
	if !strings.Contains(out, "postgresql://adi:***@db/adi") {
		t.Errorf("masked URL missing:\n%s", out)
	}
}

// rulesFixture is a settings file with one dropbox rule over a data root with two files in it.
func rulesFixture(t *testing.T) (fixture, string) {
	t.Helper()
	f := newFixture(t, pgtest.SQLiteURL(t))
	text := "base_dir = " + quote(f.data) + "\nlog_dir = " + quote(filepath.Join(filepath.Dir(f.data), "log")) + "\nlisten = \"\"\n" +
		"[omero]\ndry_run = true\n" +
		"[[rules]]\nname = \"dropbox\"\ngroup = \"Demo\"\npath = " + quote(filepath.Join(f.data, "demo/{user}/dropbox")) +
		"\nusers = [\"alice\"]\ninclude = [\"**/*.tif\"]\nsettle = \"1s\"\ndestination = \"Dataset:151\"\n"
	if err := os.WriteFile(f.config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f.file(t, "demo/alice/dropbox/a.tif")
	f.file(t, "demo/alice/dropbox/b.tif")
	return f, filepath.Join(f.data, "demo/alice/dropbox/a.tif")
}

func TestRulesTestScanAndDoctor(t *testing.T) {
	f, file := rulesFixture(t)
	out, errs, code := cli(t, f.env, "--config", f.config, "rules", "test", file)
	if code != 0 || !strings.Contains(out, `rule "dropbox"`) || !strings.Contains(out, "user=alice") || !strings.Contains(out, "destination=Dataset:151") {
		t.Errorf("rules test: exit %d\n%s%s", code, out, errs)
	}
	denied := filepath.Join(f.data, "demo/mallory/dropbox/x.tif")
	out, _, code = cli(t, f.env, "--config", f.config, "rules", "test", denied)
	if code != 1 || !strings.Contains(out, "no rule matches") || !strings.Contains(out, "mallory") {
		t.Errorf("rules test of a user outside the allowlist: exit %d\n%s", code, out)
	}
	// Converted files in a processed_folder that is not hidden never match a rule.
	converted := filepath.Join(f.data, "demo/alice/dropbox/processed/order-1/a.tif")
	envp := map[string]string{"INGEST_TRACKING_DB_URL": f.env["INGEST_TRACKING_DB_URL"], "PROCESSED_DATA_FOLDER": "processed"}
	out, _, code = cli(t, envp, "--config", f.config, "rules", "test", converted)
	if code != 1 || !strings.Contains(out, "no rule matches") {
		t.Errorf("rules test of a converted file with processed_folder = processed: exit %d\n%s", code, out)
	}
	if out, _, code = cli(t, f.env, "--config", f.config, "rules", "test", converted); code != 0 {
		t.Errorf("rules test of the same path as a plain folder: exit %d\n%s", code, out)
	}
	// Files written just now are still settling: seen and pending, not yet settled.
	out, errs, code = cli(t, f.env, "--config", f.config, "scan", "--json")
	var st map[string]float64
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("scan --json: exit %d\n%s%s", code, out, errs)
	}
	if st["seen"] != 2 || st["pending"]+st["settled"] != 2 || st["already_ordered"] != 0 {
		t.Errorf("scan: %v", st)
	}
	out, errs, code = cli(t, f.env, "--config", f.config, "doctor")
	if code != 0 || !strings.Contains(out, "all checks passed") {
		t.Errorf("doctor: exit %d\n%s%s", code, out, errs)
	}
	if err := os.RemoveAll(f.data); err != nil {
		t.Fatal(err)
	}
	out, _, code = cli(t, f.env, "--config", f.config, "doctor")
	if code != 1 || !strings.Contains(out, "FAIL  base_dir") || !strings.Contains(out, "fix:") {
		t.Errorf("doctor without the data root: exit %d\n%s", code, out)
	}
}

// doctor opens and closes an admin session on the server and names it; with the server down it
// fails with the outage; it reports whether the importer jars are present.
func TestDoctorReachesOMERO(t *testing.T) {
	d := omerotest.New(t)
	f := newFixture(t, pgtest.SQLiteURL(t))
	dir := filepath.Dir(f.data)
	omerodir := filepath.Join(dir, "OMERO.py")
	for _, p := range []string{filepath.Join(dir, "inplace"), filepath.Join(omerodir, "lib", "client")} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f.useDouble(t, d, "local_tmp_root = "+quote(filepath.Join(dir, "inplace"))+"\nenv = ["+quote("OMERODIR="+omerodir)+"]\n")

	out, errs, code := cli(t, f.env, "--config", f.config, "doctor")
	if code != 1 || !strings.Contains(out, "FAIL  OMERO.java importer jars") || !strings.Contains(out, "--fetch-jars") {
		t.Errorf("doctor without jars: exit %d\n%s%s", code, out, errs)
	}
	if err := os.WriteFile(filepath.Join(omerodir, "lib", "client", "omero-blitz.jar"), []byte("jar"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errs, code = cli(t, f.env, "--config", f.config, "doctor")
	server := fmt.Sprintf("ok    OMERO server localhost:%d as root: Created session for root@localhost:%d", d.Port, d.Port)
	if code != 0 || !strings.Contains(out, server) || !strings.Contains(out, "ok    OMERO.java importer jars "+filepath.Join(omerodir, "lib", "client")) {
		t.Errorf("doctor against a live server: exit %d\n%s%s", code, out, errs)
	}
	st := d.State(t)
	for _, s := range st.Sessions {
		if !s.Closed || s.UserID != 0 {
			t.Errorf("doctor's sessions: %+v", st.Sessions)
		}
	}
	if len(st.Sessions) != 2 || st.PasswordInArgv {
		t.Errorf("doctor's sessions: %+v (password in argv: %v)", st.Sessions, st.PasswordInArgv)
	}
	if !strings.Contains(out, "ok    omero zarr plugin (omero-cli-zarr, version unknown)") {
		t.Errorf("doctor does not report the zarr plugin:\n%s", out)
	}
	// Without omero-cli-zarr, Zarr orders cannot be registered (omero.zarr = "register" by default).
	d.SetFailure(t, omerotest.Failure{NoZarrPlugin: true})
	out, errs, code = cli(t, f.env, "--config", f.config, "doctor")
	if code != 1 || !strings.Contains(out, "FAIL  omero zarr plugin (omero-cli-zarr)") || !strings.Contains(out, "pip install omero-cli-zarr") {
		t.Errorf("doctor without the zarr plugin: exit %d\n%s%s", code, out, errs)
	}
	d.SetFailure(t, omerotest.Failure{})

	d.Down(t)
	out, errs, code = cli(t, f.env, "--config", f.config, "doctor")
	if code != 1 || !strings.Contains(out, fmt.Sprintf("FAIL  OMERO server localhost:%d as root: OMERO server unreachable at localhost:%d", d.Port, d.Port)) {
		t.Errorf("doctor against a server that is down: exit %d\n%s%s", code, out, errs)
	}
}

// The cut-over: `migrate` on a database of the Python service prints the legacy pending orders it
// did not queue; after the documented retry of an old failed order, `orders show` still shows the
// old failure text in the history, and the order's import_options.
func TestMigrateCutOverAndShow(t *testing.T) {
	for _, eng := range []struct {
		name, id, ts, old string
		url               func(testing.TB) string
	}{
		{"sqlite", "INTEGER", "DATETIME", "datetime('now', '-30 days')", pgtest.SQLiteURL},
		{"postgres", "SERIAL", "TIMESTAMP WITH TIME ZONE", "now() - interval '30 days'", pgtest.URL},
	} {
		t.Run(eng.name, func(t *testing.T) {
			url := eng.url(t)
			f := newFixture(t, url)
			driver, dsn, err := db.ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			if driver == db.DriverPostgres {
				driver = "pgx"
			}
			py, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer py.Close()
			const (
				failed  = "aaaaaaaa-0000-4000-8000-000000000001"
				pending = "aaaaaaaa-0000-4000-8000-000000000002"
			)
			// BIOMERO.importer 1.4's tables (create_all) with its stamp, and its rows: one row per stage.
			_, err = py.Exec(`CREATE TABLE imports (id ` + eng.id + ` PRIMARY KEY, group_name VARCHAR NOT NULL, user_name VARCHAR NOT NULL,
  destination_id VARCHAR NOT NULL, destination_type VARCHAR NOT NULL, stage VARCHAR NOT NULL, uuid VARCHAR(36) NOT NULL,
  timestamp ` + eng.ts + `, files TEXT NOT NULL, file_names TEXT, import_options TEXT, description TEXT, preprocessing_id INTEGER);
CREATE TABLE alembic_version_omeroadi (version_num VARCHAR(32) NOT NULL PRIMARY KEY);
INSERT INTO alembic_version_omeroadi VALUES ('92e8f9e637a1');
INSERT INTO imports (group_name, user_name, destination_id, destination_type, stage, uuid, timestamp, files, import_options, description) VALUES
 ('Demo', 'alice', '151', 'Dataset', 'Import Pending', '` + failed + `', '2026-10-01 10:00:00', '["/data/a.tif"]', '{"schema": 1}', NULL),
 ('Demo', 'alice', '151', 'Dataset', 'Import Started', '` + failed + `', '2026-10-01 10:00:05', '["/data/a.tif"]', '{"schema": 1}', NULL),
 ('Demo', 'alice', '151', 'Dataset', 'Import Failed', '` + failed + `', '2026-10-01 10:01:00', '["/data/a.tif"]', '{"schema": 1}', 'omero import failed: server gone'),
 ('Demo', 'alice', '151', 'Dataset', 'Import Pending', '` + pending + `', ` + eng.old + `, '["/data/b.tif"]', NULL, NULL);`)
			if err != nil {
				t.Fatalf("Python schema and rows: %v", err)
			}
			out, errs, code := cli(t, f.env, "--config", f.config, "migrate")
			if code != 0 || !strings.Contains(out, "1 legacy pending order(s) older than legacy_pending_max_age (240h0m0s) set to Import Failed") ||
				!strings.Contains(out, pending) {
				t.Fatalf("migrate: exit %d\n%s%s", code, out, errs)
			}
			if _, err := py.Exec(`UPDATE imports SET stage = 'Import Pending' WHERE uuid = '` + failed + `'`); err != nil {
				t.Fatal(err)
			}
			out, errs, code = cli(t, f.env, "--config", f.config, "orders", "show", failed)
			if code != 0 || !strings.Contains(out, "stage:        Import Pending") || !strings.Contains(out, "omero import failed: server gone") ||
				!strings.Contains(out, `import options: {"schema": 1}`) {
				t.Fatalf("orders show: exit %d\n%s%s", code, out, errs)
			}
			out, _, _ = cli(t, f.env, "--config", f.config, "orders", "show", failed, "--json")
			var o struct {
				ImportOptions *string `json:"import_options"`
			}
			if err := json.Unmarshal([]byte(out), &o); err != nil || o.ImportOptions == nil || *o.ImportOptions != `{"schema": 1}` {
				t.Fatalf("show --json import_options: %v\n%s", err, out)
			}
		})
	}
}
