package preprocess

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/runner/child"
	"github.com/omero-adi/omero-adi/runner/redirect"
)

// env is one test's world: a data folder with originals, a temp root, an order log.
type env struct {
	runner  *Runner
	data    string
	tmpRoot string
	logPath string
	image   string // "" for local-command runs
	sums    map[string]string
}

type mode int

const (
	podmanMode mode = iota
	localMode
)

func setup(t *testing.T, m mode, timeout time.Duration, edits ...func(*Config)) *env {
	t.Helper()
	e := &env{data: t.TempDir(), tmpRoot: t.TempDir(), sums: map[string]string{}}
	e.logPath = filepath.Join(t.TempDir(), "logs", "preprocessing.log")
	cfg := testConfig(e.tmpRoot, func(c *Config) { c.Timeout, c.ExtraArgs = timeout, convtest.PodmanArgs() })
	if m == podmanMode {
		e.image = convtest.Image(t)
	} else {
		e.image = "example.org/converter:1"
		cfg.Local = map[string][]string{e.image: {convtest.Binary(t)}}
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	log := logrus.New()
	log.SetLevel(logrus.DebugLevel)
	log.SetOutput(testWriter{t})
	r, err := New(cfg, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	e.runner = r
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// original writes an original file below the data folder and remembers its checksum.
func (e *env) original(t *testing.T, rel, content string) string {
	t.Helper()
	p := filepath.Join(e.data, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	e.sums[p] = sum(t, p)
	return p
}

// checkOriginals fails the test when any original changed.
func (e *env) checkOriginals(t *testing.T) {
	t.Helper()
	for p, want := range e.sums {
		if got := sum(t, p); got != want {
			t.Errorf("original %s changed: sha256 %s, want %s", p, got, want)
		}
	}
}

func sum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func (e *env) spec(uuid string, params map[string]string) Spec {
	return Spec{
		OrderUUID: uuid, LogPath: e.logPath, Preprocessing: order.Preprocessing{Container: e.image, InputFile: "{Files}",
			OutputFolder: "/data", AltOutputFolder: "/out", ExtraParams: params},
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestImageName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ubuntu", "docker.io/ubuntu"},
		{"cellularimagingcf/converter:latest", "docker.io/cellularimagingcf/converter:latest"},
		{"localhost/adi-test:1", "localhost/adi-test:1"},
		{"quay.io/org/img:2", "quay.io/org/img:2"},
		{"registry:5000/img", "registry:5000/img"},
		{"docker.io/library/alpine", "docker.io/library/alpine"},
	} {
		if got := ImageName(tc.in); got != tc.want {
			t.Errorf("ImageName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no runtime", func(c *Config) { c.Runtime = "" }, "preprocessing.runtime: must name the container runtime"},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }, `preprocessing.timeout: must be a positive duration such as "2h", got "-1s"`},
		{"bad userns", func(c *Config) { c.UsernsMode = "keep id" }, `preprocessing.userns_mode: must be empty or keep-id, got "keep id"`},
		{"empty extra arg", func(c *Config) { c.ExtraArgs = []string{"--network=none", ""} }, "preprocessing.extra_args[1]: must not be empty"},
		{"bad env", func(c *Config) { c.Env = []string{"NOEQUALS"} }, `env[0] "NOEQUALS"`},
		{"empty local command", func(c *Config) { c.Local = map[string][]string{"img": nil} }, `preprocessing.local."img": must be a command`},
		{"flag as image", func(c *Config) { c.Local = map[string][]string{"-v": {"/bin/true"}} }, `preprocessing.local."-v"`},
		{"zero bind retries", func(c *Config) { c.BindRetryAttempts = 0 }, "preprocessing.bind_retry_attempts: must be at least 1, got 0"},
		{"no tmp root", func(c *Config) { c.LocalTmpRoot = "" }, "omero.local_tmp_root"},
		{"no processed folder", func(c *Config) { c.ProcessedFolder = "" }, "processed_folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(testConfig(t.TempDir(), tc.edit), nil)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want ErrConfig naming %s", err, tc.want)
			}
		})
	}
	for _, name := range []string{"a/b", "..", "x:y", "", "*"} {
		if ValidFolderName(name) == nil {
			t.Errorf("ValidFolderName(%q) = nil, want an error", name)
		}
	}
}

// testConfig is DefaultConfig with the agent's part filled in and edits applied.
func testConfig(tmpRoot string, edits ...func(*Config)) Config {
	cfg := DefaultConfig()
	cfg.LocalTmpRoot = tmpRoot
	for _, e := range edits {
		e(&cfg)
	}
	return cfg
}

func TestRunRejectsBadSpec(t *testing.T) {
	r, err := New(testConfig(t.TempDir()), nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "a.lif")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := Spec{OrderUUID: "6f1c-1", Preprocessing: order.Preprocessing{Container: "img", InputFile: "{Files}", OutputFolder: "/data", AltOutputFolder: "/out"}}
	for _, tc := range []struct {
		name  string
		edit  func(*Spec)
		files []string
		want  string
	}{
		{"order uuid escapes", func(s *Spec) { s.OrderUUID = "../etc" }, nil, `order uuid "../etc"`},
		{"empty container", func(s *Spec) { s.Container = "" }, nil, "preprocessing.container"},
		{"container is a flag", func(s *Spec) { s.Container = "--privileged" }, nil, `container: "--privileged"`},
		{"empty input file", func(s *Spec) { s.InputFile = "" }, nil, "input_file"},
		{"relative output folder", func(s *Spec) { s.OutputFolder = "data" }, nil, `output_folder: "data"`},
		{"root output folder", func(s *Spec) { s.OutputFolder = "/" }, nil, `output_folder: "/"`},
		{"colon in alt folder", func(s *Spec) { s.AltOutputFolder = "/out:rw" }, nil, `alt_output_folder: "/out:rw"`},
		{"alt inside output", func(s *Spec) { s.AltOutputFolder = "/data/out" }, nil, "overlaps"},
		{"reserved param", func(s *Spec) { s.ExtraParams = map[string]string{"outputfolder": "/x"} }, nil, `name "outputfolder"`},
		{"param with space", func(s *Spec) { s.ExtraParams = map[string]string{"a b": "x"} }, nil, `name "a b"`},
		{"no files", nil, []string{}, "no files"},
		{"relative file", nil, []string{"a.lif"}, `files[0] "a.lif"`},
		{"missing file", nil, []string{file + ".gone"}, "files[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			if tc.edit != nil {
				tc.edit(&s)
			}
			files := tc.files
			if files == nil {
				files = []string{file}
			}
			_, err := r.Run(context.Background(), s, files)
			if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want ErrSpec naming %s", err, tc.want)
			}
		})
	}
}

func TestCommand(t *testing.T) {
	root := t.TempDir()
	r, err := New(testConfig(root, func(c *Config) {
		c.UsernsMode, c.ExtraArgs = "keep-id", []string{"--network=none"}
		c.Local = map[string][]string{"docker.io/local/conv:1": {"/usr/bin/conv", "--quiet"}}
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	spec := Spec{OrderUUID: "o1", Preprocessing: order.Preprocessing{Container: "cellularimagingcf/convertleica-docker:v1.2.0", InputFile: "{Files}",
		OutputFolder: "/data", AltOutputFolder: "/out", ExtraParams: map[string]string{"saveoption": "single", "a": "1"}}}
	got := r.Command(spec, "/d/g/my file.lif")
	want := []string{"podman", "run", "--rm", "--name", "adi-{run}-0", "--label", "omero-adi.order=o1",
		"--userns=keep-id", "--network=none",
		"-v", "/d/g:/data", "-v", "/d/g/.processed/o1:/data/.processed", "-v", root + "/{run}/0:/out",
		"docker.io/cellularimagingcf/convertleica-docker:v1.2.0",
		"--inputfile", "/data/my file.lif", "--a", "1", "--saveoption", "single",
		"--outputfolder", "/data/.processed", "--altoutputfolder", "/out"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("podman argv\n got %q\nwant %q", got, want)
	}

	spec.Container, spec.AltOutputFolder, spec.ExtraParams = "local/conv:1", "", nil
	got = r.Command(spec, "/d/g/x.lif")
	want = []string{"/usr/bin/conv", "--quiet", "--inputfile", "/d/g/x.lif", "--outputfolder", "/d/g/.processed/o1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("local argv\n got %q\nwant %q", got, want)
	}

	// processed_folder (PROCESSED_DATA_FOLDER) names the folder on the host and in the container.
	r, err = New(testConfig(root, func(c *Config) { c.ProcessedFolder = "processed" }), nil)
	if err != nil {
		t.Fatal(err)
	}
	spec.Container = "conv:1"
	got = r.Command(spec, "/d/g/x.lif")
	want = []string{"podman", "run", "--rm", "--name", "adi-{run}-0", "--label", "omero-adi.order=o1",
		"-v", "/d/g:/data", "-v", "/d/g/processed/o1:/data/processed", "docker.io/conv:1",
		"--inputfile", "/data/x.lif", "--outputfolder", "/data/processed"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("argv with processed_folder\n got %q\nwant %q", got, want)
	}
	spec.Container = "local/conv:1"
	r, _ = New(testConfig(root, func(c *Config) {
		c.ProcessedFolder, c.Local = "processed", map[string][]string{"docker.io/local/conv:1": {"/usr/bin/conv"}}
	}), nil)
	got = r.Command(spec, "/d/g/x.lif")
	want = []string{"/usr/bin/conv", "--inputfile", "/d/g/x.lif", "--outputfolder", "/d/g/processed/o1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("local argv with processed_folder\n got %q\nwant %q", got, want)
	}
}

func TestParseResults(t *testing.T) {
	for _, tc := range []struct {
		name    string
		line    string
		wantKV  [][2]string
		wantErr string
	}{
		{"list of objects", `[{"name":"x","full_path":"/d/x","keyvalues":[{"b":"1"},{"a":"2","c":3}]}]`, [][2]string{{"b", "1"}, {"a", "2"}, {"c", "3"}}, ""},
		{"one object keeps order", `[{"name":"x","full_path":"/d/x","keyvalues":{"z":"1","a":true,"m":null,"o":{"k": 1}}}]`, [][2]string{{"z", "1"}, {"a", "true"}, {"m", ""}, {"o", `{"k":1}`}}, ""},
		{"no keyvalues", `[{"name":"x","full_path":"/d/x"}]`, nil, ""},
		{"not a list", `{"name":"x"}`, nil, "not a JSON list"},
		{"text", `converted 1 file`, nil, "not a JSON list"},
		{"empty list", `[]`, nil, "empty list"},
		{"truncated", `[{"name":"x"`, nil, "not a JSON list of results"},
		{"no full_path", `[{"name":"x"}]`, nil, "no full_path"},
		{"keyvalues string", `[{"full_path":"/d/x","keyvalues":"a=b"}]`, nil, "want a list of objects"},
		{"keyvalues list of strings", `[{"full_path":"/d/x","keyvalues":["a"]}]`, nil, "item 0 is not an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raws, err := parseResults(tc.line)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseResults: %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(raws[0].kv, tc.wantKV) {
				t.Errorf("keyvalues %q, want %q", raws[0].kv, tc.wantKV)
			}
		})
	}
}

func TestLastLine(t *testing.T) {
	var l lastLine
	for _, chunk := range []string{"first\nsec", "ond [1", ",2]\n", "\n  \n"} {
		l.Write([]byte(chunk))
	}
	if got := l.last(); got != "second [1,2]" {
		t.Errorf("last = %q", got)
	}
	var m lastLine
	m.Write([]byte("a\n[no newline at end]"))
	if got := m.last(); got != "[no newline at end]" {
		t.Errorf("last = %q", got)
	}
}

// A local command gets baseEnv, podman podmanEnv: never a secret or a proxy setting.
func TestChildEnv(t *testing.T) {
	got := child.Env([]string{"PATH=/bin", "OMERO_PASSWORD=secret", "HOME=/root", "http_proxy=x", "CONTAINERS_CONF=/c"},
		child.Names(baseEnv...), []string{"EXTRA=1"})
	want := []string{"PATH=/bin", "HOME=/root", "EXTRA=1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("local env %q, want %q", got, want)
	}
	got = child.Env([]string{"OMERO_PASSWORD=secret", "CONTAINERS_CONF=/c"}, child.Names(podmanEnv...), nil)
	want = []string{"CONTAINERS_CONF=/c", "PATH=" + child.DefaultPath}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("podman env %q, want %q", got, want)
	}
}

// checkOutput verifies one result: paths in the right folders, content copied, keyvalues.
func checkOutput(t *testing.T, e *env, o Output, order, input, rel string) {
	t.Helper()
	dir := filepath.Dir(input)
	wantProcessed := filepath.Join(dir, ".processed", order, rel)
	if o.Processed != wantProcessed {
		t.Errorf("Processed = %s, want %s", o.Processed, wantProcessed)
	}
	if o.Input != input {
		t.Errorf("Input = %s, want %s", o.Input, input)
	}
	if !strings.HasPrefix(o.Alt, e.tmpRoot+"/") || !strings.HasSuffix(o.Alt, "/"+rel) {
		t.Errorf("Alt = %s, want <%s>/<run>/<k>/%s", o.Alt, e.tmpRoot, rel)
	}
	for _, p := range []string{o.Processed, o.Alt} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("result missing: %v", err)
		}
	}
}

func TestRunPodman(t *testing.T) {
	e := setup(t, podmanMode, time.Minute)
	ctx := context.Background()

	t.Run("single result", func(t *testing.T) {
		in := e.original(t, "g/alice/plate1.lif", "plate one pixels")
		res, err := e.runner.Run(ctx, e.spec("order-single", map[string]string{"saveoption": "single"}), []string{in})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Outputs) != 1 {
			t.Fatalf("outputs %+v", res.Outputs)
		}
		o := res.Outputs[0]
		checkOutput(t, e, o, "order-single", in, "plate1.ome.tiff")
		if want := filepath.Join(e.data, "g/alice/.processed/order-single"); o.ProcessedDir != want {
			t.Errorf("ProcessedDir = %s, want %s", o.ProcessedDir, want)
		}
		if o.Name != "plate1" {
			t.Errorf("Name = %q", o.Name)
		}
		if got := readFile(t, o.Processed); got != "plate one pixels" {
			t.Errorf("processed content %q", got)
		}
		wantKV := [][2]string{{"source", "plate1.lif"}, {"result", "0"}, {"param_saveoption", "single"}}
		if !reflect.DeepEqual(o.KeyValues, wantKV) {
			t.Errorf("KeyValues %q, want %q", o.KeyValues, wantKV)
		}
		if res.TempDir == "" || filepath.Dir(res.TempDir) != e.tmpRoot {
			t.Errorf("TempDir = %q, want a folder directly below %s", res.TempDir, e.tmpRoot)
		}
		wantRedirects := map[string]string{filepath.Dir(o.Alt): filepath.Dir(o.Processed)}
		if !reflect.DeepEqual(res.Redirects, wantRedirects) {
			t.Errorf("Redirects %v, want %v", res.Redirects, wantRedirects)
		}
		log := readFile(t, e.logPath)
		for _, want := range []string{"order order-single file " + in, "converting /data/plate1.lif", "starting conversion of plate1.lif"} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
		e.checkOriginals(t)
	})

	t.Run("nested output", func(t *testing.T) {
		in := e.original(t, "g/bob/well.czi", "nested pixels")
		res, err := e.runner.Run(ctx, e.spec("order-nested", map[string]string{"nested": "yes"}), []string{in})
		if err != nil {
			t.Fatal(err)
		}
		o := res.Outputs[0]
		checkOutput(t, e, o, "order-nested", in, "well.ome.zarr")
		for _, base := range []string{o.Processed, o.Alt} {
			if got := readFile(t, filepath.Join(base, "0", "0", "0.0")); got != "nested pixels" {
				t.Errorf("chunk below %s: %q", base, got)
			}
		}
		e.checkOriginals(t)
	})

	t.Run("several results, spaces, keyvalues object", func(t *testing.T) {
		in := e.original(t, "g/carol x/my scan 1.lif", "scan")
		res, err := e.runner.Run(ctx, e.spec("order-several", map[string]string{"results": "3", "keyvalues": "object", "note": "a b"}), []string{in})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Outputs) != 3 {
			t.Fatalf("%d outputs, want 3", len(res.Outputs))
		}
		for i, o := range res.Outputs {
			name := "my scan 1_" + string(rune('0'+i))
			checkOutput(t, e, o, "order-several", in, name+".ome.tiff")
			wantKV := [][2]string{{"source", "my scan 1.lif"}, {"result", string(rune('0' + i))}, {"param_note", "a b"}}
			if o.Name != name || !reflect.DeepEqual(o.KeyValues, wantKV) {
				t.Errorf("result %d: name %q keyvalues %q", i, o.Name, o.KeyValues)
			}
		}
		e.checkOriginals(t)
	})

	t.Run("filtered environment", func(t *testing.T) {
		t.Setenv("OMERO_PASSWORD", "secret")
		t.Setenv("http_proxy", "http://proxy.invalid:3128")
		in := e.original(t, "g/env/e.lif", "e")
		res, err := e.runner.Run(ctx, e.spec("order-env", map[string]string{"echoenv": "OMERO_PASSWORD,http_proxy"}), []string{in})
		if err != nil {
			t.Fatal(err)
		}
		want := [][2]string{{"source", "e.lif"}, {"result", "0"}, {"env_OMERO_PASSWORD", "<unset>"}, {"env_http_proxy", "<unset>"}}
		if got := res.Outputs[0].KeyValues; !reflect.DeepEqual(got, want) {
			t.Errorf("keyvalues %q, want %q: the container must see neither secrets nor the host's proxy", got, want)
		}
	})

	t.Run("without alt folder", func(t *testing.T) {
		in := e.original(t, "g/dan/x.lif", "x")
		spec := e.spec("order-noalt", nil)
		spec.AltOutputFolder = ""
		res, err := e.runner.Run(ctx, spec, []string{in})
		if err != nil {
			t.Fatal(err)
		}
		o := res.Outputs[0]
		if res.TempDir != "" || res.Redirects != nil || o.Alt != "" {
			t.Errorf("temp folder used without alt_output_folder: %+v", res)
		}
		if want := filepath.Join(e.data, "g/dan/.processed/order-noalt/x.ome.tiff"); o.Processed != want {
			t.Errorf("Processed = %s, want %s", o.Processed, want)
		}
	})

	t.Run("several files in several folders", func(t *testing.T) {
		a := e.original(t, "g/eve/a/img.lif", "A")
		b := e.original(t, "g/eve/b/img.lif", "BB")
		c := e.original(t, "g/eve/a/other.lif", "CCC")
		res, err := e.runner.Run(ctx, e.spec("order-multi", nil), []string{a, b, c})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Outputs) != 3 || len(res.Redirects) != 2 {
			t.Fatalf("outputs %+v redirects %v", res.Outputs, res.Redirects)
		}
		for i, in := range []string{a, b, c} {
			o := res.Outputs[i]
			checkOutput(t, e, o, "order-multi", in, strings.TrimSuffix(filepath.Base(in), ".lif")+".ome.tiff")
			if got, want := readFile(t, o.Alt), readFile(t, in); got != want {
				t.Errorf("%s: alt content %q, want %q", in, got, want)
			}
			if res.Redirects[filepath.Dir(o.Alt)] != filepath.Dir(o.Processed) {
				t.Errorf("Redirects %v lack %s", res.Redirects, o.Alt)
			}
		}
		e.checkOriginals(t)
	})
}

// TestTwoOrdersSameFolder runs two orders at once on files of one folder whose container names
// its outputs the same: neither temp folders nor .processed results collide.
func TestTwoOrdersSameFolder(t *testing.T) {
	e := setup(t, podmanMode, time.Minute)
	a := e.original(t, "g/shared/sample.lif", "from order A")
	b := e.original(t, "g/shared/sample.czi", "from order B, longer")
	var wg sync.WaitGroup
	results := make([]Result, 2)
	errs := make([]error, 2)
	for i, in := range []string{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.runner.Run(context.Background(), e.spec([]string{"order-a", "order-b"}[i], nil), []string{in})
		}()
	}
	wg.Wait()
	for i := range errs {
		if errs[i] != nil {
			t.Fatalf("order %d: %v", i, errs[i])
		}
	}
	if results[0].TempDir == results[1].TempDir {
		t.Fatalf("both orders use temp folder %s", results[0].TempDir)
	}
	for i, in := range []string{a, b} {
		o := results[i].Outputs[0]
		if got, want := readFile(t, o.Processed), readFile(t, in); got != want {
			t.Errorf("order %d: %s holds %q, want %q", i, o.Processed, got, want)
		}
		if got, want := readFile(t, o.Alt), readFile(t, in); got != want {
			t.Errorf("order %d: %s holds %q, want %q", i, o.Alt, got, want)
		}
	}
	e.checkOriginals(t)
}

func TestCollisionWithinOrder(t *testing.T) {
	e := setup(t, localMode, time.Minute)
	a := e.original(t, "g/x/sample.lif", "one")
	b := e.original(t, "g/x/sample.czi", "two")
	res, err := e.runner.Run(context.Background(), e.spec("order-collide", nil), []string{a, b})
	if !errors.Is(err, ErrCollision) {
		t.Fatalf("Run: %v, want ErrCollision", err)
	}
	for _, want := range []string{a, b, "separate orders"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if res.TempDir != "" {
		t.Errorf("result returned with an error: %+v", res)
	}
	assertEmpty(t, e.tmpRoot)
}

// assertEmpty checks that a failed Run removed its temp folder.
func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s still holds %v after a failed run", dir, entries)
	}
}

func TestFailures(t *testing.T) {
	cases := []struct {
		fail     string
		sentinel error
		want     []string
	}{
		{"exit", ErrExit, []string{"exited with status 3", "unsupported input format"}},
		{"noout", ErrNoOutput, []string{"no results line"}},
		{"badjson", ErrBadOutput, []string{`"converted 1 file"`, "not a JSON list"}},
		{"outside", ErrOutside, []string{"full_path", "/etc/passwd", "is not below"}},
		{"missing", ErrMissing, []string{"full_path", "the file is not there"}},
		{"symlink", ErrOutside, []string{"resolves outside its folder", "/etc/passwd"}},
	}
	for _, m := range []struct {
		name string
		mode mode
	}{{"podman", podmanMode}, {"local", localMode}} {
		t.Run(m.name, func(t *testing.T) {
			e := setup(t, m.mode, time.Minute)
			in := e.original(t, "g/f/input file.lif", "pixels")
			for _, tc := range cases {
				t.Run(tc.fail, func(t *testing.T) {
					spec := e.spec("order-"+tc.fail, map[string]string{"fail": tc.fail})
					_, err := e.runner.Run(context.Background(), spec, []string{in})
					if !errors.Is(err, tc.sentinel) {
						t.Fatalf("Run: %v, want %v", err, tc.sentinel)
					}
					var perr *Error
					if !errors.As(err, &perr) {
						t.Fatalf("error %T is not *Error", err)
					}
					msg := err.Error()
					for _, want := range append(tc.want, e.image, in, e.logPath) {
						if !strings.Contains(msg, want) {
							t.Errorf("error lacks %q:\n%s", want, msg)
						}
					}
					// Cause and fix only: the runner adds how to retry the order.
					if strings.Contains(msg, "retry") || strings.Contains(msg, "Import Pending") {
						t.Errorf("error has a retry hint of its own:\n%s", msg)
					}
					assertEmpty(t, e.tmpRoot)
					e.checkOriginals(t)
				})
			}
		})
	}
}

func TestProcessedSymlinkRefused(t *testing.T) {
	e := setup(t, localMode, time.Minute)
	in := e.original(t, "g/evil/a.lif", "a")
	victim := t.TempDir()
	if err := os.Symlink(victim, filepath.Join(e.data, "g/evil/.processed")); err != nil {
		t.Fatal(err)
	}
	_, err := e.runner.Run(context.Background(), e.spec("order-evil", nil), []string{in})
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("Run: %v, want ErrUnsafe", err)
	}
	if entries, _ := os.ReadDir(victim); len(entries) != 0 {
		t.Errorf("something was written through the symlink: %v", entries)
	}
	assertEmpty(t, e.tmpRoot)
}

func TestStartFailure(t *testing.T) {
	in := filepath.Join(t.TempDir(), "a.lif")
	if err := os.WriteFile(in, []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := New(testConfig(t.TempDir(), func(c *Config) { c.Runtime = "/nonexistent/podman" }), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Run(context.Background(), Spec{OrderUUID: "o", Preprocessing: order.Preprocessing{Container: "img", InputFile: "{Files}", OutputFolder: "/data"}}, []string{in})
	if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "/nonexistent/podman") {
		t.Fatalf("Run: %v, want ErrStart naming the runtime", err)
	}
}

// podmanLeft lists the containers of an order that still exist.
func podmanLeft(t *testing.T, order string) string {
	t.Helper()
	out, err := exec.Command("podman", "ps", "-a", "--filter", "label="+OrderLabel+"="+order, "--format", "{{.Names}}").CombinedOutput()
	if err != nil {
		t.Fatalf("podman ps: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestTimeoutPodman(t *testing.T) {
	e := setup(t, podmanMode, 2*time.Second)
	in := e.original(t, "g/t/slow.lif", "slow")
	start := time.Now()
	_, err := e.runner.Run(context.Background(), e.spec("order-timeout", map[string]string{"fail": "sleep"}), []string{in})
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "timeout of 2s") {
		t.Fatalf("Run: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("Run took %s after a 2s timeout", d)
	}
	if left := podmanLeft(t, "order-timeout"); left != "" {
		t.Errorf("containers left after the timeout: %s", left)
	}
	assertEmpty(t, e.tmpRoot)
}

func TestCancelPodman(t *testing.T) {
	e := setup(t, podmanMode, time.Minute)
	in := e.original(t, "g/t/slow.lif", "slow")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.runner.Run(ctx, e.spec("order-cancel", map[string]string{"fail": "sleep"}), []string{in})
		done <- err
	}()
	// Cancel once the container is running.
	deadline := time.After(30 * time.Second)
	for podmanLeft(t, "order-cancel") == "" {
		select {
		case <-deadline:
			t.Fatal("container never started")
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if left := podmanLeft(t, "order-cancel"); left != "" {
		t.Errorf("containers left after cancel: %s", left)
	}
}

func TestTimeoutLocal(t *testing.T) {
	e := setup(t, localMode, time.Second)
	in := e.original(t, "g/t/slow.lif", "slow")
	pidfile := filepath.Join(t.TempDir(), "pid")
	_, err := e.runner.Run(context.Background(), e.spec("order-ltimeout", map[string]string{"fail": "sleep", "pidfile": pidfile}), []string{in})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Run: %v, want ErrTimeout", err)
	}
	pid := strings.TrimSpace(readFile(t, pidfile))
	// The converter runs under the guard, so once killed it is reaped by whoever inherits it: a
	// zombie is dead too.
	if st, err := os.ReadFile("/proc/" + pid + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
		t.Errorf("converter process %s still runs after the timeout", pid)
	}
}

func TestRunLocal(t *testing.T) {
	e := setup(t, localMode, time.Minute, func(c *Config) { c.Env = []string{"CONVERTER_LICENSE=abc"} })
	t.Setenv("OMERO_PASSWORD", "secret")
	in := e.original(t, "g/l/my file.lif", "local pixels")
	spec := e.spec("order-local", map[string]string{"nested": "yes", "echoenv": "OMERO_PASSWORD"})
	spec.ExtraParams["echoenv"] = "OMERO_PASSWORD,CONVERTER_LICENSE"
	res, err := e.runner.Run(context.Background(), spec, []string{in})
	if err != nil {
		t.Fatal(err)
	}
	o := res.Outputs[0]
	checkOutput(t, e, o, "order-local", in, "my file.ome.zarr")
	if got := readFile(t, filepath.Join(o.Processed, "0", "0", "0.0")); got != "local pixels" {
		t.Errorf("chunk %q", got)
	}
	want := [][2]string{{"source", "my file.lif"}, {"result", "0"}, {"env_OMERO_PASSWORD", "<unset>"}, {"env_CONVERTER_LICENSE", "abc"}}
	if !reflect.DeepEqual(o.KeyValues, want) {
		t.Errorf("KeyValues %q, want %q (the child must not see OMERO_PASSWORD, and must see Config.Env)", o.KeyValues, want)
	}
	e.checkOriginals(t)
}

// TestPreprocessThenRedirect imports (as OMERO's ln_s would: symlinks to the temp copies) and
// redirects the links to .processed, then removes the temp folder: the links still resolve.
func TestPreprocessThenRedirect(t *testing.T) {
	e := setup(t, podmanMode, time.Minute)
	a := e.original(t, "g/r/one.lif", "one")
	b := e.original(t, "g/r/sub/two.lif", "two two")
	res, err := e.runner.Run(context.Background(), e.spec("order-redirect", map[string]string{"nested": "yes"}), []string{a, b})
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	prefixes := []string{"alice_5/2024-01/15/10-30-00.123/", "alice_5/2024-01/15/10-30-00.124/"}
	var links []string
	for i, o := range res.Outputs {
		err := filepath.WalkDir(o.Alt, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(filepath.Dir(o.Alt), p)
			link := filepath.Join(repo, prefixes[i], rel)
			links = append(links, link)
			if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
				return err
			}
			return os.Symlink(p, link)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	changed, err := redirect.Redirect(repo, prefixes, res.Redirects)
	if err != nil || changed != len(links) || changed < 10 {
		t.Fatalf("Redirect: %d changed of %d, %v", changed, len(links), err)
	}
	if err := e.runner.RemoveTemp(res.TempDir); err != nil {
		t.Fatal(err)
	}
	assertEmpty(t, e.tmpRoot)
	for _, l := range links {
		target, err := os.Readlink(l)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(target, "/.processed/order-redirect/") {
			t.Errorf("%s -> %s, want a target in .processed", l, target)
		}
		if _, err := os.Stat(l); err != nil {
			t.Errorf("link broken after removing the temp folder: %v", err)
		}
	}
	if got := readFile(t, filepath.Join(repo, prefixes[1], "two.ome.zarr/0/0/0.0")); got != "two two" {
		t.Errorf("redirected chunk %q", got)
	}
}

func TestRemoveTempRefusesOutsideRoot(t *testing.T) {
	e := setup(t, localMode, time.Minute)
	outside := t.TempDir()
	if err := e.runner.RemoveTemp(outside); !errors.Is(err, redirect.ErrRefused) {
		t.Fatalf("RemoveTemp(%s): %v, want ErrRefused", outside, err)
	}
	if _, err := os.Stat(outside); err != nil {
		t.Fatalf("folder outside the root was touched: %v", err)
	}
}

// busyRuntime writes a stand-in for the container runtime that fails like podman on a busy CIFS
// bind source (exit 125, "statfs …: device or resource busy") for the first fails calls and
// then runs the real podman; it counts its calls in the returned file.
func busyRuntime(t *testing.T, fails int, message string) (runtime, calls string) {
	t.Helper()
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	runtime = filepath.Join(dir, "podman")
	script := fmt.Sprintf(`#!/bin/sh
if [ "$1" = run ]; then
  echo x >> %[1]q
  if [ "$(wc -l < %[1]q)" -le %[2]d ]; then
    echo %[3]q >&2
    exit 125
  fi
fi
exec %[4]q "$@"
`, calls, fails, message, podman)
	if err := os.WriteFile(runtime, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return runtime, calls
}

func countLines(t *testing.T, p string) int {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

// TestBindBusyRetried: podman's transient bind error is retried with backoff, other failures are
// not, and a share that stays busy fails the run naming the setting.
func TestBindBusyRetried(t *testing.T) {
	const busy = "Error: statfs /data/cellular_imaging: device or resource busy"
	for _, tc := range []struct {
		name      string
		fails     int
		message   string
		wantCalls int
		wantErr   string // "" for success
	}{
		{"busy once then runs", 1, busy, 2, ""},
		{"busy every time", 5, busy, 3, "the share stayed busy through 3 attempts (preprocessing.bind_retry_attempts)"},
		{"other error not retried", 5, "Error: statfs /data/cellular_imaging: permission denied", 1, "permission denied); fix the cause"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime, calls := busyRuntime(t, tc.fails, tc.message)
			e := setup(t, podmanMode, time.Minute, func(c *Config) {
				c.Runtime, c.BindRetryAttempts, c.BindRetryDelay = runtime, 3, 10*time.Millisecond
			})
			in := e.original(t, "g/cifs/a.lif", "pixels on a share")
			res, err := e.runner.Run(context.Background(), e.spec("order-busy", nil), []string{in})
			if n := countLines(t, calls); n != tc.wantCalls {
				t.Errorf("runtime called %d times, want %d", n, tc.wantCalls)
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				checkOutput(t, e, res.Outputs[0], "order-busy", in, "a.ome.tiff")
				if log := readFile(t, e.logPath); !strings.Contains(log, "# bind source busy; retrying in 10ms (attempt 2 of 3)") {
					t.Errorf("log lacks the retry:\n%s", log)
				}
			} else if !errors.Is(err, ErrExit) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run: %v, want ErrExit with %q", err, tc.wantErr)
			}
			e.checkOriginals(t)
		})
	}
}

// TestProcessedFolderPodman: with processed_folder set, the container writes below that folder.
func TestProcessedFolderPodman(t *testing.T) {
	e := setup(t, podmanMode, time.Minute, func(c *Config) { c.ProcessedFolder = "processed" })
	in := e.original(t, "g/p/plate.lif", "plate pixels")
	res, err := e.runner.Run(context.Background(), e.spec("order-pf", nil), []string{in})
	if err != nil {
		t.Fatal(err)
	}
	o := res.Outputs[0]
	if want := filepath.Join(e.data, "g/p/processed/order-pf"); o.ProcessedDir != want || filepath.Dir(o.Processed) != want {
		t.Fatalf("ProcessedDir %s, Processed %s; want below %s", o.ProcessedDir, o.Processed, want)
	}
	if got := readFile(t, o.Processed); got != "plate pixels" {
		t.Errorf("processed content %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.data, "g/p/.processed")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".processed was made although processed_folder is %q: %v", "processed", err)
	}
	e.checkOriginals(t)
}

func TestMissingImage(t *testing.T) {
	e := setup(t, podmanMode, time.Minute, func(c *Config) { c.ExtraArgs = append(c.ExtraArgs, "--pull=never") })
	in := e.original(t, "g/m/a.lif", "a")
	spec := e.spec("order-noimage", nil)
	spec.Container = "localhost/adi-no-such-image:1"
	_, err := e.runner.Run(context.Background(), spec, []string{in})
	if !errors.Is(err, ErrExit) {
		t.Fatalf("Run: %v, want ErrExit", err)
	}
	for _, want := range []string{"podman could not run the container with status 125", "localhost/adi-no-such-image:1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// BenchmarkRunPodman measures one container run per file (podman start-up dominates).
func BenchmarkRunPodman(b *testing.B) {
	e := setupBench(b)
	in := filepath.Join(e.data, "bench.lif")
	if err := os.WriteFile(in, []byte("bench"), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		res, err := e.runner.Run(context.Background(), e.spec("order-bench", nil), []string{in})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.runner.RemoveTemp(res.TempDir); err != nil {
			b.Fatal(err)
		}
	}
}

func setupBench(b *testing.B) *env {
	e := &env{data: b.TempDir(), tmpRoot: b.TempDir(), image: convtest.Image(b)}
	r, err := New(testConfig(e.tmpRoot, func(c *Config) { c.Timeout, c.ExtraArgs = time.Minute, convtest.PodmanArgs() }), logrus.NewEntry(logrus.New()))
	if err != nil {
		b.Fatal(err)
	}
	e.runner = r
	return e
}
