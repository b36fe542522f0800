package omerotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type result struct {
	stdout, stderr string
	code           int
}

// run starts the double with the given session folder and extra environment.
func run(t *testing.T, d *Double, sessDir string, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.Bin, args...)
	cmd.Env = append(append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "OMERO_SESSIONDIR=" + sessDir}, d.Env()...), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

var pw = []string{"OMERO_PASSWORD=" + AdminPassword}

func loginArgs(d *Double, user, group string) []string {
	return []string{"login", "--sudo", AdminUser, "-s", Host, "-p", port(d), "-u", user, "-g", group}
}

// login logs alice in to Demo and returns the session folder and key.
func login(t *testing.T, d *Double) (string, string) {
	t.Helper()
	dir := t.TempDir()
	if r := run(t, d, dir, pw, "", loginArgs(d, "alice", "Demo")...); r.code != 0 {
		t.Fatalf("login: %+v", r)
	}
	r := run(t, d, dir, nil, "", "sessions", "key")
	key := strings.TrimSpace(r.stdout)
	if r.code != 0 || !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(key) {
		t.Fatalf("sessions key: %+v", r)
	}
	return dir, key
}

func TestLogin(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	st := d.State(t)
	s := st.Sessions[len(st.Sessions)-1]
	if s.Key != key || s.UserID != AliceID || s.GroupID != DemoGroupID || s.SudoBy != AdminUser {
		t.Errorf("session = %+v", s)
	}
	if st.PasswordInArgv {
		t.Error("password seen in argv")
	}
	if r := run(t, d, dir, nil, "", "logout"); r.code != 0 {
		t.Fatalf("logout: %+v", r)
	}
	if st := d.State(t); !st.Sessions[len(st.Sessions)-1].Closed {
		t.Error("logout did not close the session")
	}
	if r := run(t, d, dir, nil, "", "sessions", "key"); r.stdout != "" {
		t.Errorf("key after logout: %q", r.stdout)
	}
}

func TestLoginFailures(t *testing.T) {
	d := New(t)
	cases := []struct {
		name    string
		env     []string
		args    []string
		code    int
		message string
	}{
		{"no server", pw, []string{"login", "--sudo", "root", "-u", "alice", "-g", "Demo"}, 52, "stdin is not a terminal"},
		{"no password", nil, loginArgs(d, "alice", "Demo"), 52, "cannot request password"},
		{"wrong password", []string{"OMERO_PASSWORD=nope"}, loginArgs(d, "alice", "Demo"), 52, "Password check failed"},
		{"unknown user", pw, loginArgs(d, "mallory", "Demo"), 13, "User account error"},
		{"unknown group", pw, loginArgs(d, "alice", "Nope"), 44, "No group found"},
		{"not a member", pw, loginArgs(d, "alice", "Other"), 45, "not a member"},
		{"unknown host", pw, []string{"login", "--sudo", "root", "-s", "elsewhere", "-u", "alice"}, 43, "bad host name"},
		{"wrong port", pw, []string{"login", "--sudo", "root", "-s", Host, "-p", "4065", "-u", "alice"}, 42, "isn't running"},
		{"sudo by non-admin", pw, []string{"login", "--sudo", "alice", "-s", Host, "-p", port(d), "-u", "bob"}, 52, "Password check failed"},
		{"unknown flag", pw, append(loginArgs(d, "alice", "Demo"), "--bogus"), 2, "unrecognized arguments"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, d, t.TempDir(), c.env, "", c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.message) {
				t.Errorf("exit %d stderr %q; want %d and %q", r.code, r.stderr, c.code, c.message)
			}
		})
	}
	if d.State(t).PasswordInArgv {
		t.Error("no case put a password in argv")
	}
	r := run(t, d, t.TempDir(), nil, "", append(loginArgs(d, "alice", "Demo"), "-w", AdminPassword)...)
	if r.code != 0 || !d.State(t).PasswordInArgv {
		t.Errorf("-w login: %+v, recorded %v", r, d.State(t).PasswordInArgv)
	}
}

func TestSessionsOpen(t *testing.T) {
	d := New(t)
	dir := t.TempDir()
	if r := run(t, d, dir, pw, "", "login", "-s", Host, "-p", port(d), "-u", "root"); r.code != 0 {
		t.Fatalf("admin login: %+v", r)
	}
	admin := strings.TrimSpace(run(t, d, dir, nil, "", "sessions", "key").stdout)
	r := run(t, d, t.TempDir(), nil, "", "sessions", "open", "--user-name", "bob", "--group-name", "Demo", "-s", Host, "-p", port(d), "-k", admin)
	key := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(key) != 36 {
		t.Fatalf("sessions open: %+v", r)
	}
	st := d.State(t)
	if s := st.Sessions[len(st.Sessions)-1]; s.Key != key || s.UserID != BobID {
		t.Errorf("session = %+v", s)
	}
	// a user's session cannot open sessions for others
	_, aliceKey := login(t, d)
	r = run(t, d, t.TempDir(), nil, "", "sessions", "open", "--user-name", "bob", "-s", Host, "-p", port(d), "-k", aliceKey)
	if r.code == 0 {
		t.Errorf("non-admin opened a session: %+v", r)
	}
}

// tree creates files (relative path → content) below a new folder and returns it.
func tree(t *testing.T, files ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("data of "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func importArgs(d *Double, key string, extra ...string) []string {
	return append([]string{"import", "-s", Host, "-p", port(d), "-k", key, "--transfer=ln_s", "--output", "yaml"}, extra...)
}

var prefixRE = regexp.MustCompile(`^alice_5/\d{4}-\d{2}/\d{2}/\d{2}-\d{2}-\d{2}\.\d{3}/$`)

func TestImportFolderInPlace(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	data := tree(t, "a.tif", "sub/b__series_3.lif", "sub/deep/1/2/3/4/too-deep.tif", ".hidden/x.tif",
		"plate.zarr/.zattrs", "plate.zarr/0/0/.zarray", "plate.zarr/0/0/0")
	logs := filepath.Join(t.TempDir(), "logs")
	r := run(t, d, dir, nil, "", importArgs(d, key, "--file", filepath.Join(logs, "x.logs"), "--errs", filepath.Join(logs, "x.errs"),
		"--skip", "checksum", "--skip", "minmax", "--parallel-upload", "2", "-d", "151", data)...)
	if r.code != 0 {
		t.Fatalf("import: %+v", r)
	}
	if r.stdout != "" {
		t.Errorf("stdout should be empty with --file, got %q", r.stdout)
	}
	out, err := os.ReadFile(filepath.Join(logs, "x.logs"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(out), "---\n- Fileset: "); n != 3 {
		t.Errorf("want 3 YAML documents, got:\n%s", out)
	}
	errs, _ := os.ReadFile(filepath.Join(logs, "x.errs"))
	if !strings.Contains(string(errs), "==> Summary") || !strings.Contains(string(errs), "0 errors in") {
		t.Errorf("errs file lacks the summary:\n%s", errs)
	}
	st := d.State(t)
	if len(st.Imports) != 1 {
		t.Fatalf("imports = %+v", st.Imports)
	}
	imp := st.Imports[0]
	if imp.User != "alice" || imp.Group != "Demo" || imp.Target != "Dataset:151" || len(imp.Filesets) != 3 ||
		len(imp.Images) != 5 || imp.Transfer != "ln_s" || imp.ParallelUpload != 2 || len(imp.Skip) != 2 {
		t.Errorf("import = %+v", imp)
	}
	links := 0
	for _, fs := range st.Filesets {
		if !prefixRE.MatchString(fs.TemplatePrefix) {
			t.Errorf("prefix %q", fs.TemplatePrefix)
		}
		for i, rp := range fs.RepoPaths {
			target, err := os.Readlink(filepath.Join(d.ManagedRepo, rp))
			if err != nil || target != fs.ClientPaths[i] {
				t.Errorf("link %s → %q (%v), want %s", rp, target, err, fs.ClientPaths[i])
			}
			links++
		}
	}
	if links != 5 { // a.tif, b__series_3.lif, three zarr files
		t.Errorf("links = %d", links)
	}
	zarrFound := false
	for _, fs := range st.Filesets {
		zarrFound = zarrFound || (len(fs.RepoPaths) == 3 && contains(fs.RepoPaths, fs.TemplatePrefix+"plate.zarr/0/0/.zarray"))
	}
	if !zarrFound {
		t.Errorf("no fileset holds the whole zarr with its folder name: %+v", st.Filesets)
	}
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func TestImportScreenAndLegacyOutput(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	data := tree(t, "p1.plate", "p2__series_2.plate")
	r := run(t, d, dir, nil, "", importArgs(d, key, "-r", "201", data)...)
	if r.code != 0 || !strings.Contains(r.stdout, "---\n- Fileset: 1000\n  Plate: [1001]\n") ||
		!strings.Contains(r.stderr, "\n==> Summary\n2 files uploaded, 2 filesets, 2 plates created, 3 images imported, 0 errors in 0:00:") {
		t.Fatalf("screen import: %+v", r)
	}
	st := d.State(t)
	if len(st.Plates) != 2 || st.Plates[0].ScreenID != Screen1 {
		t.Errorf("plates = %+v", st.Plates)
	}
	r = run(t, d, dir, nil, "", "import", "-s", Host, "-p", port(d), "-k", key, "-T", "Dataset:name:new one", filepath.Join(data, "p1.plate"))
	if r.code != 0 || !regexp.MustCompile(`^Image:\d+\n$`).MatchString(r.stdout) {
		t.Fatalf("legacy import: %+v", r)
	}
	st = d.State(t)
	if last := st.Datasets[len(st.Datasets)-1]; last.Name != "new one" || last.GroupID != DemoGroupID {
		t.Errorf("dataset by name = %+v", last)
	}
}

func TestImportRejects(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	data := tree(t, "a.tif")
	file := filepath.Join(data, "a.tif")
	cases := []struct {
		name    string
		env     []string
		args    []string
		code    int
		message string
	}{
		{"transfer without =", nil, []string{"import", "-s", Host, "-k", key, "--transfer", "ln_s", "-d", "151", file}, 2, "--transfer"},
		{"no-upgrade", nil, importArgs(d, key, "--no-upgrade", "-d", "151", file), 2, "unrecognized arguments: --no-upgrade"},
		{"bad skip", nil, importArgs(d, key, "--skip", "everything", "-d", "151", file), 2, "invalid choice: 'everything'"},
		{"bad output", nil, []string{"import", "-s", Host, "-k", key, "--output", "json", file}, 2, "invalid choice"},
		{"bad depth", nil, importArgs(d, key, "--depth", "x", file), 2, "invalid int value"},
		{"bad key", nil, importArgs(d, "0000", "-d", "151", file), 11, "Bad session key"},
		{"no server", nil, []string{"import", "-k", key, "-d", "151", file}, 52, "stdin is not a terminal"},
		{"other group dataset", nil, importArgs(d, key, "-d", "300", file), 2, "not in the current group"},
		{"missing dataset", nil, importArgs(d, key, "-d", "999", file), 2, "not found"},
		{"missing path", nil, importArgs(d, key, "-d", "151", filepath.Join(data, "nope.tif")), 1, "File not found"},
		{"empty folder", nil, importArgs(d, key, "-d", "151", t.TempDir()), 1, "No imports found"},
		{"no repository", []string{"OMERO_DOUBLE_MANAGED_REPO=" + filepath.Join(data, "missing")}, importArgs(d, key, "-d", "151", file), 2,
			"You likely do not have access to the ManagedRepository for in-place import."},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, d, dir, c.env, "", c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.message) {
				t.Errorf("exit %d stderr %q; want %d and %q", r.code, r.stderr, c.code, c.message)
			}
		})
	}
	if st := d.State(t); len(st.Filesets) != 0 {
		t.Errorf("rejected imports created filesets: %+v", st.Filesets)
	}
}

// The three ways an import is partial, as the Java importer behaves (omero-blitz
// ImportCandidates, ImportLibrary.importCandidates, CommandLineImporter.start): a fileset that fails
// stops the run with exit 2 after the ids of the earlier ones; with -c the run goes on and ends 0;
// a file that fails while candidates are scanned is dropped and counted, and the run ends 0.
func TestPartialImports(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failure  Failure
		cont     bool
		code     int
		imported []string
		summary  string
		errLine  string
	}{
		{"fileset fails", Failure{ImportFail: []int{1}}, false, 2, []string{"a.tif"},
			"1 file uploaded, 1 fileset created, 1 image imported, 1 error in ", "INTERNAL_EXCEPTION: %s/b.tif"},
		{"fileset fails with -c", Failure{ImportFail: []int{1}}, true, 0, []string{"a.tif", "c.tif"},
			"2 files uploaded, 2 filesets created, 2 images imported, 1 error in ", "INTERNAL_EXCEPTION: %s/b.tif"},
		{"scan drops a file", Failure{ScanFail: []int{0}}, false, 0, []string{"b.tif", "c.tif"},
			"2 files uploaded, 2 filesets created, 2 images imported, 1 error in ", "FILE_EXCEPTION: %s/a.tif"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(t)
			dir, key := login(t, d)
			data := tree(t, "a.tif", "b.tif", "c.tif")
			d.SetFailure(t, tc.failure)
			args := importArgs(d, key, "-d", "151", data)
			if tc.cont {
				args = append(args[:len(args)-1], "-c", data)
			}
			r := run(t, d, dir, nil, "", args...)
			if r.code != tc.code || strings.Count(r.stdout, "- Fileset:") != len(tc.imported) ||
				!strings.Contains(r.stderr, "\n==> Summary\n"+tc.summary) || !strings.Contains(r.stderr, fmt.Sprintf(tc.errLine, data)) {
				t.Fatalf("import: %+v", r)
			}
			var got []string
			for _, fs := range d.State(t).Filesets {
				got = append(got, filepath.Base(fs.ClientPaths[0]))
			}
			if strings.Join(got, " ") != strings.Join(tc.imported, " ") {
				t.Errorf("filesets of %v, want %v", got, tc.imported)
			}
		})
	}
}

func TestFailureSwitches(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	data := tree(t, "a.tif", "b.tif", "c.tif")

	d.SetFailure(t, Failure{FailImport: true, FailImportAfter: 1})
	r := run(t, d, dir, nil, "", importArgs(d, key, "-d", "151", data)...)
	if r.code != 2 || strings.Count(r.stdout, "- Fileset:") != 1 || !strings.Contains(r.stderr, "1 file uploaded, 1 fileset created, 1 image imported, 1 error in ") {
		t.Errorf("fail after 1: %+v", r)
	}

	d.SetFailure(t, Failure{NoImports: true})
	r = run(t, d, dir, nil, "", importArgs(d, key, "-d", "151", data)...)
	if r.code != 0 || r.stdout != "" || !strings.Contains(r.stderr, "No imports due to errors!") ||
		!strings.Contains(r.stderr, "0 files uploaded, 0 filesets created, 0 images imported, 3 errors in ") {
		t.Errorf("no imports: %+v", r)
	}

	// With -k every failure to join is a bad key (sessions.py), a refused connection included.
	d.SetFailure(t, Failure{ConnectionRefused: 1})
	if r = run(t, d, dir, nil, "", importArgs(d, key, "-d", "151", data)...); r.code != 11 ||
		!strings.Contains(r.stderr, "Bad session key. Cannot join "+key+" on "+Host+":"+port(d)+".") {
		t.Errorf("refused: %+v", r)
	}
	d.SetFailure(t, Failure{UnknownHost: -1})
	for i := 0; i < 2; i++ {
		if r = run(t, d, t.TempDir(), pw, "", loginArgs(d, "alice", "Demo")...); r.code != 43 {
			t.Errorf("unknown host %d: %+v", i, r)
		}
	}
	d.SetFailure(t, Failure{BadPassword: true})
	if r = run(t, d, t.TempDir(), pw, "", loginArgs(d, "alice", "Demo")...); r.code != 52 {
		t.Errorf("bad password: %+v", r)
	}
	d.SetFailure(t, Failure{FailObj: true})
	if r = run(t, d, dir, nil, "", "obj", "new", "MapAnnotation", "ns=x", "-s", Host, "-p", port(d), "-k", key); r.code != 80 {
		t.Errorf("fail obj: %+v", r)
	}
	d.SetFailure(t, Failure{ImportDelay: 150 * time.Millisecond})
	start := time.Now()
	if r = run(t, d, dir, nil, "", importArgs(d, key, "-d", "151", data)...); r.code != 0 || time.Since(start) < 450*time.Millisecond {
		t.Errorf("slow import: %+v after %v", r, time.Since(start))
	}
}

func TestHangKeepsChild(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	d.SetFailure(t, Failure{Hang: true})
	cmd := exec.Command(d.Bin, importArgs(d, key, "-d", "151", tree(t, "a.tif"))...)
	cmd.Env = append([]string{"OMERO_SESSIONDIR=" + dir}, d.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(d.State(t).HangPIDs) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the hanging import did not record its processes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("hanging import ended: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_ = cmd.Process.Kill()
	<-done
	// the child is killed by New's cleanup
}

func TestObjAndHQL(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	r := run(t, d, dir, nil, "", importArgs(d, key, "-d", "151", tree(t, "a__series_2.tif"))...)
	if r.code != 0 {
		t.Fatal(r)
	}
	st := d.State(t)
	img1, img2, fs := st.Images[0].ID, st.Images[1].ID, st.Filesets[0]
	conn := []string{"-s", Host, "-p", port(d), "-k", key}

	r = run(t, d, dir, nil, "", append([]string{"obj", "get", fmt.Sprintf("Fileset:%d", fs.ID), "templatePrefix"}, conn...)...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != fs.TemplatePrefix {
		t.Errorf("obj get: %+v", r)
	}
	r = run(t, d, dir, nil, "", append([]string{"obj", "new", "MapAnnotation", "ns=biomero.import"}, conn...)...)
	ann := strings.TrimSpace(r.stdout)
	if r.code != 0 || !regexp.MustCompile(`^MapAnnotation:\d+$`).MatchString(ann) {
		t.Fatalf("obj new: %+v", r)
	}
	batch := fmt.Sprintf(`map-set %[1]s mapValue 'with space' 'it'"'"'s "quoted" \ back'
map-set %[1]s mapValue plain value
# a comment
new ImageAnnotationLink parent=Image:%[2]d child=%[1]s
other = new MapAnnotation ns=second
new ImageAnnotationLink parent=Image:%[3]d child@=other
`, ann, img1, img2)
	r = run(t, d, dir, nil, batch, append([]string{"obj", "--file", "-"}, conn...)...)
	if r.code != 0 {
		t.Fatalf("batch: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 5 || lines[0] != ann || lines[1] != ann || !strings.HasPrefix(lines[2], "ImageAnnotationLink:") {
		t.Errorf("batch output %q", lines)
	}
	st = d.State(t)
	a := st.Annotations[0]
	want := [][2]string{{"with space", `it's "quoted" \ back`}, {"plain", "value"}}
	if a.NS != "biomero.import" || fmt.Sprint(a.Values) != fmt.Sprint(want) {
		t.Errorf("annotation = %+v", a)
	}
	if len(st.Links) != 2 || st.Links[0].Child != ann || st.Links[1].Child != lines[3] || st.Links[1].Parent != fmt.Sprintf("Image:%d", img2) {
		t.Errorf("links = %+v", st.Links)
	}
	r = run(t, d, dir, nil, "", append([]string{"obj", "update", fmt.Sprintf("Image:%d", img1), "name=renamed one"}, conn...)...)
	if r.code != 0 || d.State(t).Images[0].Name != "renamed one" {
		t.Errorf("rename: %+v", r)
	}
	r = run(t, d, dir, nil, "", append([]string{"obj", "update", "Image:99999", "name=x"}, conn...)...)
	if r.code != 334%256 || !strings.Contains(r.stderr, "No object found") {
		t.Errorf("missing image: %+v", r)
	}
	r = run(t, d, dir, nil, "", append([]string{"obj", "new", "ImageAnnotationLink", fmt.Sprintf("parent=Image:%d", img1)}, conn...)...)
	if r.code != 103 || !strings.Contains(r.stderr, "required arguments: child") {
		t.Errorf("link without child: %+v", r)
	}

	// A batch commits action by action: a failing action ends it, what ran before stays.
	batch = fmt.Sprintf("map-set %[1]s mapValue kept yes\nmap-set Image:%[2]d mapValue no no\nmap-set %[1]s mapValue after no\n", ann, img1)
	r = run(t, d, dir, nil, batch, append([]string{"obj", "--file", "-"}, conn...)...)
	if r.code != 1 || r.stdout != ann+"\n" || !strings.Contains(r.stderr, "has no attribute 'mapValue'") {
		t.Errorf("failing batch: %+v", r)
	}
	if got := fmt.Sprint(d.State(t).Annotations[0].Values); got != fmt.Sprint(append(want, [2]string{"kept", "yes"})) {
		t.Errorf("after the failing batch the annotation holds %s", got)
	}
	// Read-only batches run under a shared lock, but still consume a connection failure switch
	// (with -k, a refused connection is a bad key).
	d.SetFailure(t, Failure{ConnectionRefused: 1})
	get := fmt.Sprintf("get Fileset:%d templatePrefix\n", fs.ID)
	if r = run(t, d, dir, nil, get, append([]string{"obj", "--file", "-"}, conn...)...); r.code != 523%256 {
		t.Errorf("get with a refused connection: %+v", r)
	}
	if r = run(t, d, dir, nil, get, append([]string{"obj", "--file", "-"}, conn...)...); r.code != 0 || r.stdout != fs.TemplatePrefix+"\n" {
		t.Errorf("get after the refused connection: %+v", r)
	}

	q := fmt.Sprintf("select distinct fs.templatePrefix from Image i join i.fileset fs where i.id in (%d, %d)", img1, img2)
	r = run(t, d, dir, nil, "", append([]string{"hql", "-q", "--style", "plain", "--limit", "1000"}, append(conn, q)...)...)
	// PlainStyle (omero-py util/text.py): Python's csv writer ends the row "\r\n", rows are joined
	// with "\n" and printed.
	if r.code != 0 || r.stdout != "0,"+fs.TemplatePrefix+"\r\n\n" {
		t.Errorf("hql: %+v", r)
	}
	q = "select distinct fs.templatePrefix from Image i join i.fileset fs where i.id in (424242)"
	if r = run(t, d, dir, nil, "", append([]string{"hql", "-q", "--style", "plain"}, append(conn, q)...)...); r.stdout != "\n" {
		t.Errorf("hql without rows: %+v", r)
	}
}

func TestConcurrentImports(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	const n = 6
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			codes[i] = run(t, d, dir, nil, "", importArgs(d, key, "-d", "152", tree(t, "x.tif", "y.tif"))...).code
		}(i)
	}
	wg.Wait()
	st := d.State(t)
	seen := map[string]bool{}
	for _, fs := range st.Filesets {
		if seen[fs.TemplatePrefix] {
			t.Errorf("prefix %s used twice", fs.TemplatePrefix)
		}
		seen[fs.TemplatePrefix] = true
	}
	if len(st.Imports) != n || len(st.Filesets) != 2*n {
		t.Errorf("imports %d filesets %d codes %v", len(st.Imports), len(st.Filesets), codes)
	}
}

func port(d *Double) string { return strconv.Itoa(d.Port) }

// TestServerDown: with the server's port closed, a password login is refused (42), a session key
// cannot be joined (11, the same text as a bad key), and a stored current session used without -k
// is forgotten; once the server is back, the key joins again.
func TestServerDown(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	d.Down(t)
	if r := run(t, d, t.TempDir(), pw, "", loginArgs(d, "alice", "Demo")...); r.code != 42 || !strings.Contains(r.stderr, "isn't running") {
		t.Errorf("login while down: %+v", r)
	}
	batch := "get Fileset:1 templatePrefix\n"
	if r := run(t, d, dir, nil, batch, "obj", "--file", "-", "-s", Host, "-p", port(d), "-k", key); r.code != 11 ||
		!strings.Contains(r.stderr, "Bad session key. Cannot join "+key) {
		t.Errorf("obj with key while down: %+v", r)
	}
	if r := run(t, d, dir, nil, batch, "obj", "--file", "-", "-s", Host, "-p", port(d)); r.code != 52 ||
		!strings.Contains(r.stdout, "Previous session expired for alice on "+Host) {
		t.Errorf("obj with the current session while down: %+v", r)
	}
	if r := run(t, d, dir, nil, "", "sessions", "key"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("the expired session is still current: %+v", r)
	}
	d.Up(t)
	if r := run(t, d, dir, nil, "", "obj", "get", "Dataset:151", "-s", Host, "-p", port(d), "-k", key); r.code != 0 || r.stdout != "id=151\n" {
		t.Errorf("obj with key after the server is back: %+v", r)
	}
}

// TestLoad: `omero load` runs lines from stdin in one process; later lines reuse the login's
// session; the first failing line ends it with its code (basics.py LoadControl, cli.py invoke).
func TestLoad(t *testing.T) {
	d := New(t)
	dir := t.TempDir()
	in := "login --sudo root -s " + Host + " -p " + port(d) + " -u alice -g Demo\n# a comment\n\nsessions key\n"
	r := run(t, d, dir, pw, in, "load")
	key := strings.TrimSpace(r.stdout)
	if r.code != 0 || !regexp.MustCompile(`^[0-9a-f-]{36}$`).MatchString(key) {
		t.Fatalf("load login + key: %+v", r)
	}
	batch := filepath.Join(t.TempDir(), "batch")
	if err := os.WriteFile(batch, []byte("a = new MapAnnotation ns=x\nmap-set MapAnnotation:999999 mapValue k v\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, d, dir, nil, "login -k "+key+" -s "+Host+" -p "+port(d)+"\nobj --file "+batch+"\nlogout\n", "load")
	if r.code != 334%256 || !strings.Contains(r.stdout, "MapAnnotation:") || !strings.Contains(r.stderr, "No object found") {
		t.Errorf("load stops at the failing line: %+v", r)
	}
	if st := d.State(t); st.SessionByKey(key) == nil { // nil once closed
		t.Error("the logout after the failing line ran")
	}
	// logout ends the session folder's current session (the one a key joined there).
	r = run(t, d, dir, nil, "login -k "+key+" -s "+Host+" -p "+port(d)+"\nlogout\n", "load")
	if st := d.State(t); r.code != 0 || st.SessionByKey(key) != nil {
		t.Errorf("load logout: %+v", r)
	}
	st := d.State(t)
	last := st.Calls[len(st.Calls)-1]
	if len(last.Argv) != 1 || last.Argv[0] != "load" || len(last.Lines) < 2 || strings.Contains(strings.Join(last.Argv, " "), key) {
		t.Errorf("recorded call = %+v", last)
	}
}

// TestNameTargetRace: the importer resolves a name target per fileset, so filesets imported side
// by side each create a dataset of that name when none exists yet.
func TestNameTargetRace(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	data := tree(t, "a.tif", "b.tif", "c.tif")
	count := func(name string) int {
		n := 0
		for _, ds := range d.State(t).Datasets {
			if ds.Name == name {
				n++
			}
		}
		return n
	}
	if r := run(t, d, dir, nil, "", importArgs(d, key, "--parallel-fileset", "2", "-T", "Dataset:name:racy", data)...); r.code != 0 {
		t.Fatalf("import: %+v", r)
	}
	if n := count("racy"); n != 2 {
		t.Errorf("datasets named racy after 3 filesets, 2 at a time: %d, want 2", n)
	}
	if r := run(t, d, dir, nil, "", importArgs(d, key, "-T", "Dataset:name:calm", data)...); r.code != 0 {
		t.Fatalf("import: %+v", r)
	}
	if n := count("calm"); n != 1 {
		t.Errorf("datasets named calm after 3 filesets one at a time: %d, want 1", n)
	}
}

func TestUserInfo(t *testing.T) {
	d := New(t)
	dir, key := login(t, d)
	alice := `{"id": "5", "login": "alice", "first name": "Alice", "last name": "Liddell", "email": "alice@example.org", ` +
		`"active": "Yes", "ldap": "False", "admin": "", "member of": "3", "owner of": ""}`
	d.Update(t, func(s *State) { s.Groups[1].Owners = []int64{BobID} })
	bob := `{"id": "6", "login": "bob", "first name": "Bob", "last name": "Builder", "email": "", ` +
		`"active": "Yes", "ldap": "False", "admin": "", "member of": "", "owner of": "3"}`
	demo := `{"id": "3", "name": "Demo", "perms": "rw----", "ldap": "False", "# of owners": "1", "# of members": "1"}`
	conn := []string{"-s", Host, "-p", port(d), "-k", key}
	cases := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stdout string
	}{
		{"the session's own user", append([]string{"user", "info", "--style", "json"}, conn...), "", 0, "[" + alice + "]\n"},
		{"a user without e-mail, by name", append([]string{"user", "info", "bob", "--style", "json"}, conn...), "", 0, "[" + bob + "]\n"},
		{"two users, one a line", append([]string{"user", "info", "alice", "6", "--style", "json"}, conn...), "", 0,
			"[" + alice + ",\n" + bob + "]\n"},
		{"unknown user", append([]string{"user", "info", "mallory", "--style", "json"}, conn...), "", 514 % 256, ""},
		{"inside load after a login by key", []string{"load"}, cliLine("login", "-k", key, "-s", Host, "-p", port(d)) +
			"\nuser info --style json\n", 0, "[" + alice + "]\n"},
		{"other styles are not imitated", append([]string{"user", "info", "--style", "sql"}, conn...), "", 1, ""},
		{"the session user's groups", append([]string{"user", "listgroups", "--style", "json"}, conn...), "", 0, "[" + demo + "]\n"},
		{"listgroups of two users", append([]string{"user", "listgroups", "alice", "bob", "--style", "json"}, conn...), "", 516 % 256, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, d, dir, nil, c.stdin, c.args...)
			if r.code != c.code || (c.code == 0 && r.stdout != c.stdout) {
				t.Errorf("exit %d stdout %q stderr %q; want %d and %q", r.code, r.stdout, r.stderr, c.code, c.stdout)
			}
		})
	}
}

// cliLine joins words into one `omero load` line (none of them needs quoting here).
func cliLine(words ...string) string { return strings.Join(words, " ") }
