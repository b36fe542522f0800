package omero

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/omerotest"
	"github.com/omero-adi/omero-adi/order"
)

// testPassword is the admin password of the fixture: distinctive, so tests can look for leaks.
const testPassword = "s3cret-Pw with space"

type fixture struct {
	c      *Client
	d      *omerotest.Double
	cfg    Config
	logDir string
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return logrus.NewEntry(l)
}

// setup returns a client wired to a fresh double; edit changes the config first.
func setup(t *testing.T, edit ...func(*Config)) *fixture {
	t.Helper()
	d := omerotest.New(t)
	d.Update(t, func(st *omerotest.State) { st.UserByName(omerotest.AdminUser).Password = testPassword })
	root := t.TempDir()
	cfg := DefaultConfig()
	cfg.CLI, cfg.Host, cfg.Port, cfg.AdminUser, cfg.AdminPassword = d.Bin, omerotest.Host, d.Port, omerotest.AdminUser, testPassword
	cfg.ManagedRepository, cfg.LogDir, cfg.SessionRoot = d.ManagedRepo, filepath.Join(root, "log"), filepath.Join(root, "sessions")
	cfg.ImportConfig = ImportConfig{ParallelUpload: 2, ParallelFilesets: 1, SkipThumbnails: true}
	cfg.ImportTimeout, cfg.CallTimeout, cfg.ConnectRetries, cfg.ConnectBackoff = 30*time.Second, 20*time.Second, 2, 10*time.Millisecond
	cfg.KillGrace, cfg.Env = 500*time.Millisecond, d.Env()
	for _, e := range edit {
		e(&cfg)
	}
	c, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, d: d, cfg: cfg, logDir: cfg.LogDir}
}

func (f *fixture) login(t *testing.T, uuid string) *Session {
	t.Helper()
	s, err := f.c.Login(context.Background(), uuid, "alice", "Demo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.c.Close(context.Background(), s) })
	return s
}

func files(t *testing.T, names ...string) string {
	t.Helper()
	root := t.TempDir()
	for _, n := range names {
		p := filepath.Join(root, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestRoundTrip(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	s := f.login(t, "order-1")
	if s.Key == "" || s.User != "alice" || s.Group != "Demo" || s.Dir != filepath.Join(f.cfg.SessionRoot, "order-1") {
		t.Fatalf("session = %+v", s)
	}
	data := files(t, "a.tif", "nested/b__series_2.tif", "img.zarr/.zattrs", "img.zarr/0/0")
	res, err := f.c.Import(ctx, s, ImportRequest{OrderUUID: "order-1", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
	if err != nil {
		t.Fatal(err)
	}
	st := f.d.State(t)
	if len(st.Imports) != 1 {
		t.Fatalf("imports = %+v", st.Imports)
	}
	imp := st.Imports[0]
	if imp.User != "alice" || imp.Group != "Demo" || imp.Target != "Dataset:151" || imp.Transfer != "ln_s" ||
		imp.ParallelUpload != 2 || !reflect.DeepEqual(imp.Skip, []string{"thumbnails"}) {
		t.Errorf("import = %+v", imp)
	}
	var gotFS, gotImages []int64
	for _, fs := range res.Filesets {
		gotFS = append(gotFS, fs.ID)
		gotImages = append(gotImages, fs.Images...)
	}
	if !reflect.DeepEqual(gotFS, imp.Filesets) || !reflect.DeepEqual(gotImages, imp.Images) || len(gotImages) != 4 {
		t.Errorf("result %+v, double recorded filesets %v images %v", res, imp.Filesets, imp.Images)
	}

	targets := []string{fmt.Sprintf("Image:%d", gotImages[0]), fmt.Sprintf("Image:%d", gotImages[1])}
	prep, err := f.c.Prepare(ctx, s, append(gotFS, gotFS[0]), "biomero.import", targets)
	if err != nil {
		t.Fatal(err)
	}
	prefixes := prep.Prefixes
	links := 0
	if prep.EntriesErr != nil || len(prep.Entries) != len(st.Filesets) {
		t.Errorf("entries %v (%v), want the files of %d filesets", prep.Entries, prep.EntriesErr, len(st.Filesets))
	}
	for _, fs := range st.Filesets {
		if prefixes[fs.ID] != fs.TemplatePrefix {
			t.Errorf("prefix of %d = %q, want %q", fs.ID, prefixes[fs.ID], fs.TemplatePrefix)
		}
		if want := append([]string(nil), fs.ClientPaths...); !reflect.DeepEqual(prep.Entries[fs.ID], sortedCopy(want)) {
			t.Errorf("entries of %d = %v, want %v", fs.ID, prep.Entries[fs.ID], fs.ClientPaths)
		}
		// every link below the prefix points at the original
		err := filepath.WalkDir(filepath.Join(f.d.ManagedRepo, prefixes[fs.ID]), func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if !strings.HasPrefix(target, data+"/") {
				t.Errorf("link %s points at %s, outside %s", p, target, data)
			}
			if b, err := os.ReadFile(p); err != nil || !strings.HasSuffix(target, string(b)) {
				t.Errorf("link %s does not read its original: %q %v", p, b, err)
			}
			links++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if links != 4 {
		t.Errorf("links = %d, want 4", links)
	}

	kv := [][2]string{
		{"UUID", "order-1"},
		{"Filepath", "/data/with space/it's \"quoted\" \\ back.tif"},
		{"multi line", "first\nsecond\r\nthird"},
		{"empty", ""},
		{"-20C", "-k --file=x"},
		{"unicode ✓", "ünïcödé\ttab"},
		{"Import_Timestamp", "2024-01-15 10:30:00"},
	}
	// A line break cannot travel in a batch line: it is written as a space.
	want := append([][2]string(nil), kv...)
	want[2][1] = "first second third"
	name := `converted "x" it's.ome.tiff`
	w := Write{Values: map[string][][2]string{}, Renames: map[int64]string{gotImages[0]: name}}
	for _, t := range targets {
		w.Values[prep.Annotations[t]] = kv
	}
	if err := f.c.Finish(ctx, s, w); err != nil {
		t.Fatal(err)
	}
	st = f.d.State(t)
	if len(st.Annotations) != 2 {
		t.Fatalf("annotations = %+v", st.Annotations)
	}
	var parents []string
	for i, a := range st.Annotations {
		if a.NS != "biomero.import" || !reflect.DeepEqual(a.Values, want) {
			t.Errorf("annotation values\n got %q\nwant %q", a.Values, want)
		}
		l := st.Links[i]
		if l.Kind != "ImageAnnotationLink" || l.Child != fmt.Sprintf("MapAnnotation:%d", a.ID) || prep.Annotations[l.Parent] != l.Child {
			t.Errorf("link %+v, prepared %v", l, prep.Annotations)
		}
		parents = append(parents, l.Parent)
	}
	if !reflect.DeepEqual(parents, targets) {
		t.Errorf("linked %v, want %v", parents, targets)
	}
	if got := st.Images[0].Name; got != name {
		t.Errorf("name = %q", got)
	}
	if !st.Sessions[len(st.Sessions)-1].Closed {
		t.Error("Finish did not log the session out")
	}
	// login + key, import, two batches: four starts, and Close starts none after Finish.
	calls := len(st.Calls)
	if calls != 4 {
		t.Errorf("CLI starts = %d, want 4: %v", calls, st.Calls)
	}

	f.c.Close(ctx, s)
	if _, err := os.Stat(s.Dir); !os.IsNotExist(err) {
		t.Errorf("session folder left: %v", err)
	}
	st = f.d.State(t)
	if !st.Sessions[len(st.Sessions)-1].Closed {
		t.Error("session not logged out")
	}
	if st.PasswordInArgv {
		t.Error("a password went on a command line")
	}
	if len(st.Calls) != calls {
		t.Errorf("Close after Finish started the CLI: %v", st.Calls[calls:])
	}
	for i, call := range st.Calls {
		if call.PasswordInEnv != (i == 0) {
			t.Errorf("call %d %q: password in environment = %v", i, call.Argv, call.PasswordInEnv)
		}
		if i != 1 && strings.Contains(strings.Join(call.Argv, " "), s.Key) {
			t.Errorf("call %d %q: the session key on argv", i, call.Argv)
		}
	}
	logs, errs := f.c.LogFiles("order-1")
	if b, err := os.ReadFile(errs); err != nil || !strings.Contains(string(b), "==> Summary") {
		t.Errorf("errs log %s: %v %q", errs, err, b)
	}
	if _, err := os.Stat(logs); err != nil {
		t.Errorf("logs file: %v", err)
	}
}

func TestScreenAndNamedDataset(t *testing.T) {
	f := setup(t, func(c *Config) { c.ParallelFilesets = 2 })
	ctx := context.Background()
	s := f.login(t, "order-2")
	data := files(t, "p1.plate", "p2__series_3.plate")
	res, err := f.c.Import(ctx, s, ImportRequest{OrderUUID: "order-2", Target: order.Target{Kind: "Screen", ID: 201}, Paths: []string{data}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Filesets) != 2 || len(res.Filesets[0].Plates) != 1 || len(res.Filesets[1].Images) != 3 {
		t.Fatalf("screen result %+v", res)
	}
	plate := fmt.Sprintf("Plate:%d", res.Filesets[0].Plates[0])
	if _, err := f.c.Prepare(ctx, s, nil, "biomero.import", []string{plate}); err != nil {
		t.Fatal(err)
	}
	if l := f.d.State(t).Links; len(l) != 1 || l[0].Kind != "PlateAnnotationLink" || l[0].Parent != plate {
		t.Errorf("plate links %+v", l)
	}
	// A name target imports one fileset at a time: with --parallel-fileset the importer could
	// create a dataset of that name per fileset.
	res, err = f.c.Import(ctx, s, ImportRequest{OrderUUID: "order-2", Target: order.Target{Kind: "Dataset", Name: "by name"},
		Paths: []string{data}, Depth: 1})
	if err != nil || len(res.Filesets) != 2 {
		t.Fatalf("named dataset import: %+v %v", res, err)
	}
	st := f.d.State(t)
	var named []omerotest.Container
	for _, ds := range st.Datasets {
		if ds.Name == "by name" {
			named = append(named, ds)
		}
	}
	if len(named) != 1 || st.Images[len(st.Images)-1].DatasetID != named[0].ID {
		t.Errorf("datasets named %q: %+v", "by name", named)
	}
	if imp := st.Imports[len(st.Imports)-1]; imp.ParallelFileset != 0 || st.Imports[0].ParallelFileset != 2 {
		t.Errorf("parallel filesets: by id %d, by name %d", st.Imports[0].ParallelFileset, imp.ParallelFileset)
	}
}

func TestFailures(t *testing.T) {
	data := files(t, "a.tif", "b.tif", "c.tif")
	req := func(target int64) ImportRequest {
		return ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: target}, Paths: []string{data}}
	}
	cases := []struct {
		name    string
		failure omerotest.Failure
		edit    func(*Config)
		op      func(t *testing.T, f *fixture) error
		want    error
		text    string
	}{
		{name: "bad password", failure: omerotest.Failure{BadPassword: true}, want: ErrLogin, text: "OMERO_PASSWORD",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Demo")
				return err
			}},
		{name: "user not in group", want: ErrLogin, text: `add user "alice" to group "Other"`,
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Other")
				return err
			}},
		{name: "unknown group", want: ErrLogin, text: `group "Nope" exists`,
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Nope")
				return err
			}},
		{name: "connection refused", failure: omerotest.Failure{ConnectionRefused: -1}, want: ErrConnection, text: "OMERO server unreachable at localhost:",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Demo")
				return err
			}},
		{name: "unknown host", failure: omerotest.Failure{UnknownHost: -1}, want: ErrConnection, text: "unknown host",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Demo")
				return err
			}},
		{name: "wrong port", edit: func(c *Config) { c.Port = 4065; c.ConnectRetries = 0 }, want: ErrConnection, text: "omero.host/omero.port",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "alice", "Demo")
				return err
			}},
		{name: "fileset fails", failure: omerotest.Failure{FailImport: true, FailImportAfter: 1}, want: ErrImport, text: "1 fileset(s) were imported before the failure",
			op: func(t *testing.T, f *fixture) error {
				res, err := f.c.Import(context.Background(), f.login(t, "o"), req(151))
				var ie *ImportError
				if !errors.As(err, &ie) || len(ie.Partial.Filesets) != 1 || len(res.Filesets) != 1 || ie.ExitCode != 2 {
					t.Errorf("partial result: %+v %+v", res, ie)
				}
				return err
			}},
		{name: "exit 0 without ids", failure: omerotest.Failure{NoImports: true}, want: ErrNoImport, text: "No imports due to errors!",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Import(context.Background(), f.login(t, "o"), req(151))
				return err
			}},
		{name: "dataset of another group", want: ErrImport, text: "not in the current group",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Import(context.Background(), f.login(t, "o"), req(300))
				return err
			}},
		{name: "no ManagedRepository", edit: func(c *Config) { c.Env = append(c.Env, "OMERO_DOUBLE_MANAGED_REPO=/nonexistent/repo") },
			want: ErrImport, text: "needs write access to the ManagedRepository",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Import(context.Background(), f.login(t, "o"), req(151))
				return err
			}},
		{name: "closed session", want: ErrLogin, text: "session key was rejected",
			op: func(t *testing.T, f *fixture) error {
				s := f.login(t, "o")
				key, dir := s.Key, s.Dir
				f.c.Close(context.Background(), s)
				_, err := f.c.Import(context.Background(), &Session{Key: key, Dir: dir}, req(151))
				return err
			}},
		{name: "obj refused", want: ErrCall, text: "SecurityViolation",
			op: func(t *testing.T, f *fixture) error {
				s := f.login(t, "o")
				if _, err := f.c.Import(context.Background(), s, req(151)); err != nil {
					t.Fatal(err)
				}
				f.d.SetFailure(t, omerotest.Failure{FailObj: true})
				_, err := f.c.Prepare(context.Background(), s, nil, "ns", []string{fmt.Sprintf("Image:%d", f.d.State(t).Images[0].ID)})
				return err
			}},
		{name: "link to an image of nobody", want: ErrCall, text: "1 of 2 actions done",
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Prepare(context.Background(), f.login(t, "o"), nil, "ns", []string{"Image:424242"})
				return err
			}},
		{name: "unknown user", want: ErrLogin, text: `no such OMERO user "mallory"`,
			op: func(t *testing.T, f *fixture) error {
				_, err := f.c.Login(context.Background(), "o", "mallory", "Demo")
				return err
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var edits []func(*Config)
			if c.edit != nil {
				edits = append(edits, c.edit)
			}
			f := setup(t, edits...)
			f.d.SetFailure(t, c.failure)
			err := c.op(t, f)
			t.Logf("error: %v", err)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("err = %v\nwant %v with %q", err, c.want, c.text)
			}
			if err != nil && strings.Contains(err.Error(), testPassword) {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func TestLoginRetriesConnection(t *testing.T) {
	f := setup(t)
	f.d.SetFailure(t, omerotest.Failure{ConnectionRefused: 2})
	s, err := f.c.Login(context.Background(), "o", "alice", "Demo")
	if err != nil {
		t.Fatalf("login after 2 refusals with 2 retries: %v", err)
	}
	f.c.Close(context.Background(), s)
	logins := 0
	for _, c := range f.d.State(t).Calls {
		if c.Argv[0] == "load" && len(c.Lines) > 0 && strings.HasPrefix(c.Lines[0], "'login' '--sudo'") {
			logins++
		}
	}
	if logins != 3 {
		t.Errorf("login calls = %d, want 3", logins)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func waitDead(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) < 2 {
		t.Fatalf("the double recorded %d hanging processes, want itself and its child", len(pids))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var living []int
		for _, p := range pids {
			if alive(p) {
				living = append(living, p)
			}
		}
		if len(living) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range living {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Fatalf("processes %v survived", living)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestImportTimeoutKillsProcessGroup(t *testing.T) {
	f := setup(t, func(c *Config) { c.ImportTimeout = 700 * time.Millisecond })
	s := f.login(t, "o")
	f.d.SetFailure(t, omerotest.Failure{Hang: true})
	start := time.Now()
	_, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{files(t, "a.tif")}})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "omero.import_timeout") {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %s", d)
	}
	waitDead(t, f.d.State(t).HangPIDs)
}

func TestImportCancelKillsProcessGroup(t *testing.T) {
	f := setup(t)
	s := f.login(t, "o")
	f.d.SetFailure(t, omerotest.Failure{Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := f.c.Import(ctx, s, ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{files(t, "a.tif")}})
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(f.d.State(t).HangPIDs) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the import never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Import did not return after cancel")
	}
	waitDead(t, f.d.State(t).HangPIDs)
}

func TestRequestValidation(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	s := &Session{Key: "k", Dir: t.TempDir()}
	good := ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 1}, Paths: []string{"/data/a"}}
	cases := []struct {
		name string
		edit func(*ImportRequest)
		text string
	}{
		{"uuid with slash", func(r *ImportRequest) { r.OrderUUID = "../x" }, `order uuid "../x"`},
		{"kind", func(r *ImportRequest) { r.Target.Kind = "Project" }, `"Project" is neither Dataset nor Screen`},
		{"no id nor name", func(r *ImportRequest) { r.Target.ID = 0 }, `"0" is neither a positive Dataset id`},
		{"relative path", func(r *ImportRequest) { r.Paths = []string{"a.tif"} }, `path "a.tif"`},
		{"no paths", func(r *ImportRequest) { r.Paths = nil }, "no path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := good
			c.edit(&r)
			_, err := f.c.Import(ctx, s, r)
			if !errors.Is(err, ErrRequest) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("err = %v, want ErrRequest with %q", err, c.text)
			}
		})
	}
	for _, bad := range []struct{ user, group string }{{"-w", "Demo"}, {"alice", ""}, {"al\nice", "Demo"}} {
		if _, err := f.c.Login(ctx, "o", bad.user, bad.group); !errors.Is(err, ErrRequest) {
			t.Errorf("login %q/%q: %v", bad.user, bad.group, err)
		}
	}
	if _, err := f.c.Prepare(ctx, s, nil, "ns", []string{"Dataset:1"}); !errors.Is(err, ErrRequest) {
		t.Errorf("annotate a dataset: %v", err)
	}
	if _, err := f.c.Prepare(ctx, s, nil, "two\nlines", []string{"Image:1"}); !errors.Is(err, ErrRequest) {
		t.Errorf("namespace with a newline: %v", err)
	}
	if err := f.c.Finish(ctx, s, Write{Values: map[string][][2]string{"MapAnnotation:1": {{"", "v"}}}}); !errors.Is(err, ErrRequest) {
		t.Errorf("annotate with an empty key: %v", err)
	}
	if err := f.c.Finish(ctx, s, Write{Renames: map[int64]string{1: "nul\x00"}}); !errors.Is(err, ErrRequest) {
		t.Errorf("rename with a NUL: %v", err)
	}
	if n := len(f.d.State(t).Calls); n != 0 {
		t.Errorf("invalid requests ran the CLI %d times", n)
	}
}

func TestChildEnvironment(t *testing.T) {
	t.Setenv("OMERO_PASSWORD", "from-agent-env")
	t.Setenv("INGEST_TRACKING_DB_URL", "postgresql://u:dbsecret@h/db")
	t.Setenv("OMERO_USERDIR", "/var/lib/omero-user")
	t.Setenv("OMERODIR", "/opt/omero")
	t.Setenv("XDG_CACHE_HOME", "/var/cache/adi")
	t.Setenv("HTTPS_PROXY", "http://proxy:3128")
	t.Setenv("JAVA_OPTS", "-Xmx2g")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "nope")
	f := setup(t, func(c *Config) {
		c.PassEnv = []string{"HTTPS_PROXY"}
		c.Env = append(c.Env, "OMERO_IMPORT_TMP=/scratch")
	})
	env := f.c.childEnv([]string{"OMERO_SESSIONDIR=/s"})
	sort.Strings(env)
	joined := strings.Join(env, "\n")
	for _, want := range []string{"OMERO_USERDIR=/var/lib/omero-user", "OMERODIR=/opt/omero", "XDG_CACHE_HOME=/var/cache/adi",
		"HTTPS_PROXY=http://proxy:3128", "OMERO_IMPORT_TMP=/scratch", "JAVA_OPTS=-Xmx2g", "OMERO_SESSIONDIR=/s", "OMERO_DOUBLE_STATE="} {
		if !strings.Contains(joined, want) {
			t.Errorf("environment lacks %s:\n%s", want, joined)
		}
	}
	for _, bad := range []string{"from-agent-env", "dbsecret", "AWS_SECRET"} {
		if strings.Contains(joined, bad) {
			t.Errorf("environment holds %s:\n%s", bad, joined)
		}
	}
}

func TestLogsHideSecrets(t *testing.T) {
	var buf strings.Builder
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetLevel(logrus.DebugLevel)
	f := setup(t)
	c, err := New(f.cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := c.Login(ctx, "o", "alice", "Demo")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(ctx, s, ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{files(t, "a.tif")}}); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx, s)
	out := buf.String()
	if !strings.Contains(out, "component=omero") || !strings.Contains(out, "***") {
		t.Errorf("expected debug logs with a masked key:\n%s", out)
	}
	for _, secret := range []string{testPassword, s.Key} {
		if strings.Contains(out, secret) {
			t.Errorf("logs hold %q:\n%s", secret, out)
		}
	}
}

// A slow import stopped by the timeout still reports the filesets it finished.
func TestSlowImportTimeoutKeepsPartialResult(t *testing.T) {
	f := setup(t, func(c *Config) { c.ImportTimeout = 1800 * time.Millisecond })
	s := f.login(t, "o")
	f.d.SetFailure(t, omerotest.Failure{ImportDelay: time.Second})
	res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 151},
		Paths: []string{files(t, "a.tif", "b.tif", "c.tif")}})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	st := f.d.State(t)
	if len(res.Filesets) != 1 || len(st.Filesets) != 1 || res.Filesets[0].ID != st.Filesets[0].ID {
		t.Errorf("partial result %+v, double holds %+v", res, st.Filesets)
	}
}

// TestOutageAfterLogin: with the server down after the login, the import and the batches fail as
// an outage (exit 11 from the CLI, the port closed), after ConnectRetries retries, and import
// nothing; a server that comes back during the retries lets the call through.
func TestOutageAfterLogin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	s := f.login(t, "o")
	data := files(t, "a.tif")
	req := ImportRequest{OrderUUID: "o", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}}
	want := fmt.Sprintf("OMERO server unreachable at localhost:%d", f.d.Port)

	f.d.Down(t)
	_, err := f.c.Import(ctx, s, req)
	if !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "attempts: 3") {
		t.Errorf("import while down: %v", err)
	}
	if _, err := f.c.Prepare(ctx, s, []int64{1}, "ns", nil); !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), want) {
		t.Errorf("prepare while down: %v", err)
	}
	if err := f.c.Finish(ctx, s, Write{Renames: map[int64]string{1: "x"}}); !errors.Is(err, ErrConnection) || !strings.Contains(err.Error(), want) {
		t.Errorf("finish while down: %v", err)
	}
	if st := f.d.State(t); len(st.Imports) != 0 || len(st.Filesets) != 0 {
		t.Errorf("imported while down: %+v", st.Imports)
	}

	// The server comes back while the client waits to retry (after its probe found the port
	// closed): the retry imports.
	l := logrus.New()
	l.SetOutput(io.Discard)
	retrying := &onMessage{msg: "OMERO server unreachable, retrying", seen: make(chan struct{})}
	l.AddHook(retrying)
	c, err := New(f.cfg, logrus.NewEntry(l))
	if err != nil {
		t.Fatal(err)
	}
	c.cfg.ConnectBackoff = 500 * time.Millisecond
	back := make(chan struct{})
	go func() {
		defer close(back)
		select {
		case <-retrying.seen:
			f.d.Up(t)
		case <-time.After(20 * time.Second):
		}
	}()
	res, err := c.Import(ctx, s, req)
	<-back
	if err != nil || len(res.Filesets) != 1 {
		t.Errorf("import after the server came back: %+v %v", res, err)
	}
}

// TestBadKeyWhileUp: exit 11 while the server answers is a rejected key, not an outage.
func TestBadKeyWhileUp(t *testing.T) {
	f := setup(t)
	s := f.login(t, "o")
	bad := &Session{Key: "00000000-0000-0000-0000-000000000000", Dir: s.Dir}
	_, err := f.c.Prepare(context.Background(), bad, []int64{1}, "ns", nil)
	if !errors.Is(err, ErrLogin) || !strings.Contains(err.Error(), "session key was rejected") || errors.Is(err, ErrConnection) {
		t.Errorf("err = %v", err)
	}
	if strings.Contains(err.Error(), bad.Key) {
		t.Errorf("error shows the key: %v", err)
	}
}

// TestRootRefusalOnStdout: the CLI refuses root on stdout with an empty stderr; the description
// carries stdout.
func TestRootRefusalOnStdout(t *testing.T) {
	f := setup(t)
	f.d.SetFailure(t, omerotest.Failure{AsRoot: true})
	_, err := f.c.Login(context.Background(), "o", "alice", "Demo")
	if !errors.Is(err, ErrLogin) || !strings.Contains(err.Error(), "as root can corrupt your directory permissions") {
		t.Errorf("err = %v", err)
	}
}

// onMessage is a logrus hook that closes seen at the first entry with message msg.
type onMessage struct {
	msg  string
	seen chan struct{}
	once sync.Once
}

func (h *onMessage) Levels() []logrus.Level { return logrus.AllLevels }

func (h *onMessage) Fire(e *logrus.Entry) error {
	if e.Message == h.msg {
		h.once.Do(func() { close(h.seen) })
	}
	return nil
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// Entries reads, as the admin, the files of filesets of any group in one CLI start; a fileset that
// no longer exists is missing from the answer.
func TestEntries(t *testing.T) {
	f := setup(t)
	s := f.login(t, "order-entries")
	data := files(t, "a.tif", "b.tif")
	res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-entries", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{data}})
	if err != nil || len(res.Filesets) != 2 {
		t.Fatalf("import: %+v, %v", res, err)
	}
	calls := len(f.d.State(t).Calls)
	got, err := f.c.Entries(context.Background(), []int64{res.Filesets[1].ID, res.Filesets[0].ID, 424242})
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64][]string{res.Filesets[0].ID: {filepath.Join(data, "a.tif")}, res.Filesets[1].ID: {filepath.Join(data, "b.tif")}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries = %v, want %v", got, want)
	}
	st := f.d.State(t)
	if n := len(st.Calls) - calls; n != 1 || st.PasswordInArgv {
		t.Errorf("%d CLI starts (want 1), password in argv: %v", n, st.PasswordInArgv)
	}
	if last := st.Sessions[len(st.Sessions)-1]; last.UserID != 0 || !last.Closed {
		t.Errorf("the admin session %+v is not closed", last)
	}
}

// A fileset query that fails after the batch's actions ran leaves the prefixes and annotations
// standing; only the files of the filesets are unknown.
func TestPrepareWithoutEntries(t *testing.T) {
	f := setup(t)
	s := f.login(t, "order-nohql")
	res, err := f.c.Import(context.Background(), s, ImportRequest{OrderUUID: "order-nohql", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{files(t, "a.tif")}})
	if err != nil {
		t.Fatal(err)
	}
	f.d.SetFailure(t, omerotest.Failure{FailHQL: true})
	img := fmt.Sprintf("Image:%d", res.Filesets[0].Images[0])
	prep, err := f.c.Prepare(context.Background(), s, []int64{res.Filesets[0].ID}, "ns", []string{img})
	if err != nil || prep.Prefixes[res.Filesets[0].ID] == "" || prep.Annotations[img] == "" {
		t.Fatalf("prepare: %+v, %v", prep, err)
	}
	if prep.Entries != nil || prep.EntriesErr == nil || !strings.Contains(prep.EntriesErr.Error(), "Bad query") {
		t.Errorf("entries %v, %v: want the query's failure", prep.Entries, prep.EntriesErr)
	}
}

// TestLoginReadsUser: with ReadUsers the login's own `omero load` reads the user's name and
// address (no extra CLI start), once per user while cached; a user without an address has Email "".
func TestLoginReadsUser(t *testing.T) {
	f := setup(t, func(c *Config) { c.ReadUsers = true })
	calls := func() int { return len(f.d.State(t).Calls) }
	before := calls()
	s := f.login(t, "order-1")
	if s.Person == nil || *s.Person != (Person{ID: omerotest.AliceID, Login: "alice", FirstName: "Alice", LastName: "Liddell",
		Email: omerotest.AliceEmail}) {
		t.Fatalf("Person = %+v", s.Person)
	}
	st := f.d.State(t)
	if n := calls() - before; n != 1 || !contains(st.Calls[len(st.Calls)-1].Lines, userInfoLine) {
		t.Fatalf("login: %d calls, lines %q; want one load with %q", n, st.Calls[len(st.Calls)-1].Lines, userInfoLine)
	}
	s2 := f.login(t, "order-2")
	st = f.d.State(t)
	if s2.Person == nil || s2.Person.Email != omerotest.AliceEmail || contains(st.Calls[len(st.Calls)-1].Lines, userInfoLine) {
		t.Fatalf("second login: Person %+v, lines %q; want the cached person and no user info", s2.Person, st.Calls[len(st.Calls)-1].Lines)
	}
	bob, err := f.c.Login(context.Background(), "order-3", "bob", "Demo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.c.Close(context.Background(), bob)
	if bob.Person == nil || bob.Person.Email != "" || bob.Person.Name() != "Bob Builder" {
		t.Fatalf("bob = %+v", bob.Person)
	}
	if p, ok := f.c.Known("bob"); !ok || p.Login != "bob" {
		t.Fatalf("Known(bob) = %+v, %v", p, ok)
	}
	if _, ok := f.c.Known("carol"); ok {
		t.Fatal("Known(carol) without a login")
	}
	// Without ReadUsers nothing is read.
	g := setup(t)
	if s := g.login(t, "order-4"); s.Person != nil {
		t.Fatalf("Person without ReadUsers: %+v", s.Person)
	}
}

func contains(lines []string, v string) bool {
	for _, l := range lines {
		if l == v {
			return true
		}
	}
	return false
}

func TestParsePerson(t *testing.T) {
	alice := `{"id": "5", "login": "alice", "first name": "Alice", "last name": "L", "email": "a@x.org", "active": "Yes", "ldap": "False", "admin": "", "member of": "3", "owner of": ""}`
	bob := `{"id": "6", "login": "bob", "first name": "Bob", "last name": "B", "email": "", "active": "Yes", "ldap": "False", "admin": "", "member of": "3", "owner of": ""}`
	key := "2f1b5c9e-1111-4222-8333-444455556666"
	cases := []struct {
		name, stdout, user string
		want               Person
		bad                bool
	}{
		{"after the key", key + "\n[" + alice + "]\n", "alice", Person{ID: 5, Login: "alice", FirstName: "Alice", LastName: "L", Email: "a@x.org"}, false},
		{"several rows", "[" + alice + ",\n" + bob + "]\n", "bob", Person{ID: 6, Login: "bob", FirstName: "Bob", LastName: "B"}, false},
		{"other output after it", key + "\n[" + alice + "]\n0,alice_5/2024-01/15/10-30-00.123/\n", "alice",
			Person{ID: 5, Login: "alice", FirstName: "Alice", LastName: "L", Email: "a@x.org"}, false},
		{"no list", key + "\n", "alice", Person{}, true},
		{"empty list", "[]\n", "alice", Person{}, true},
		{"another user only", "[" + bob + "]\n", "alice", Person{}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parsePerson([]byte(c.stdout), c.user)
			if (err != nil) != c.bad || got != c.want {
				t.Errorf("parsePerson = %+v, %v; want %+v (error %v)", got, err, c.want, c.bad)
			}
		})
	}
}
