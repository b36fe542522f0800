package omero

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/order"
)

func TestParseOutput(t *testing.T) {
	cases := []struct {
		name    string
		in      string
		want    []Fileset
		wantErr bool
	}{
		{"one document", "---\n- Fileset: 55\n  Image: [101, 102, 103]\n",
			[]Fileset{{ID: 55, Images: []int64{101, 102, 103}}}, false},
		{"several documents, key order free", "---\n- Image: [7]\n  Fileset: 6\n---\n- Fileset: 8\n  Image: [9, 10]\n",
			[]Fileset{{ID: 6, Images: []int64{7}}, {ID: 8, Images: []int64{9, 10}}}, false},
		{"plate", "---\n- Plate: [4]\n  Fileset: 56\n  Image: [201, 202]\n",
			[]Fileset{{ID: 56, Images: []int64{201, 202}, Plates: []int64{4}}}, false},
		{"block sequences and scalar", "---\n- Fileset: 3\n  Image:\n  - 11\n  - 12\n  Plate: 9\n",
			[]Fileset{{ID: 3, Images: []int64{11, 12}, Plates: []int64{9}}}, false},
		{"two entries in one document", "---\n- Fileset: 1\n  Image: [2]\n- Fileset: 3\n  Image: [4]\n",
			[]Fileset{{ID: 1, Images: []int64{2}}, {ID: 3, Images: []int64{4}}}, false},
		{"text before the documents is ignored", "Some log line\nOther: thing\n---\n- Fileset: 5\n  Image: [6]\n",
			[]Fileset{{ID: 5, Images: []int64{6}}}, false},
		{"end marker and CRLF", "---\r\n- Fileset: 5\r\n  Image: [6]\r\n...\r\nafter\r\n",
			[]Fileset{{ID: 5, Images: []int64{6}}}, false},
		{"the same fileset twice is kept once", "---\n- Fileset: 5\n  Image: [6]\n\n---\n- Fileset: 5\n  Image: [6]\n",
			[]Fileset{{ID: 5, Images: []int64{6}}}, false},
		{"a mapping document", "---\nFileset: 5\nImage: [6]\n---\n- Fileset: 7\n  Image: [8]\n",
			[]Fileset{{ID: 5, Images: []int64{6}}, {ID: 7, Images: []int64{8}}}, false},
		{"legacy lines", "Image:101,102\nPlate:4\n",
			[]Fileset{{Images: []int64{101, 102}}, {Plates: []int64{4}}}, false},
		{"empty", "", nil, false},
		{"empty document", "---\n", nil, false},
		{"not YAML", "---\n- Fileset: [unclosed\n", nil, true},
		{"ids that are not numbers", "---\n- Fileset: 5\n  Image: [a, b]\n", nil, true},
		{"an entry without ids", "---\n- Something: 5\n", nil, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseOutput([]byte(c.in))
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if !c.wantErr && !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestQuoteForBatch(t *testing.T) {
	cases := map[string]string{
		"plain":       "'plain'",
		"with space":  "'with space'",
		"it's":        `'it'"'"'s'`,
		`"double" \ `: `'"double" \ '`,
		"":            "''",
	}
	for in, want := range cases {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNewValidates(t *testing.T) {
	good := DefaultConfig()
	good.AdminPassword, good.LogDir, good.SessionRoot = "pw", "/var/log/adi", "/var/lib/adi/sessions"
	if _, err := New(good, nil); err != nil {
		t.Fatalf("good config: %v", err)
	}
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no cli", func(c *Config) { c.CLI = "" }, "omero.cli"},
		{"no host", func(c *Config) { c.Host = "" }, "omero.host"},
		{"host like a flag", func(c *Config) { c.Host = "-w" }, "omero.host"},
		{"port", func(c *Config) { c.Port = 70000 }, "omero.port: must be a port number, got 70000"},
		{"admin", func(c *Config) { c.AdminUser = "" }, "omero.user"},
		{"password", func(c *Config) { c.AdminPassword = "" }, "OMERO_PASSWORD"},
		{"tmp root with a comma", func(c *Config) { c.LocalTmpRoot = "/tmp/a,b" }, `omero.local_tmp_root: must be a clean absolute path below / without ':' or ',', got "/tmp/a,b"`},
		{"zero call timeout", func(c *Config) { c.CallTimeout = 0 }, `omero.call_timeout: must be a positive duration such as "5m", got "0s"`},
		{"relative log dir", func(c *Config) { c.LogDir = "logs" }, `log_dir must be an absolute path, got "logs"`},
		{"relative session root", func(c *Config) { c.SessionRoot = "s" }, `omero.session_dir: must be an absolute path, got "s"`},
		{"relative repository", func(c *Config) { c.ManagedRepository = "OMERO" }, "omero.managed_repository"},
		{"negative upload", func(c *Config) { c.ParallelUpload = -1 }, "parallel_upload_per_worker: must be at least 1, got -1"},
		{"negative timeout", func(c *Config) { c.ImportTimeout = -time.Second }, "omero.import_timeout"},
		{"negative retries", func(c *Config) { c.ConnectRetries = -1 }, "omero.connect_retries"},
		{"bad env", func(c *Config) { c.Env = []string{"NOEQUALS"} }, `omero.env[0]: must be NAME=VALUE with NAME of letters, digits and '_', got "NOEQUALS"`},
		{"env name", func(c *Config) { c.Env = []string{"A=1", "BAD-NAME=x"} }, `omero.env[1]: must be NAME=VALUE with NAME of letters, digits and '_', got "BAD-NAME=x"`},
		{"password in env", func(c *Config) { c.Env = []string{"OMERO_PASSWORD=x"} }, `omero.env[0]: OMERO_PASSWORD may not be set for the CLI: the admin password`},
		{"pass_env name", func(c *Config) { c.PassEnv = []string{"HTTP PROXY"} }, `omero.pass_env[0]: must name an environment variable (letters, digits and '_'), got "HTTP PROXY"`},
		{"pass_env db url", func(c *Config) { c.PassEnv = []string{"INGEST_TRACKING_DB_URL"} }, "omero.pass_env[0]: INGEST_TRACKING_DB_URL is never passed to the CLI"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			_, err := New(cfg, nil)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.field) {
				t.Errorf("err = %v, want ErrConfig naming %s", err, c.field)
			}
		})
	}
	bad := good
	bad.AdminPassword, bad.LogDir, bad.Port = "secret-pw", "x", 0
	if _, err := New(bad, nil); err == nil || strings.Contains(err.Error(), "secret-pw") {
		t.Errorf("config errors must not show the password: %v", err)
	}
}

func TestImportArgs(t *testing.T) {
	base := DefaultConfig()
	base.CLI, base.Host, base.AdminPassword, base.LogDir, base.SessionRoot = "/usr/bin/omero", "omero.example", "pw", "/log", "/s"
	s := &Session{Key: "KEY"}
	req := ImportRequest{OrderUUID: "u1", Target: order.Target{Kind: "Dataset", ID: 151}, Paths: []string{"/data/a b.tif", "/data/c"}}
	cases := []struct {
		name string
		edit func(*Config, *ImportRequest)
		want string
	}{
		{"defaults", func(*Config, *ImportRequest) {},
			"/usr/bin/omero import -s omero.example -p 4064 -k KEY --transfer=ln_s --output yaml --file /log/cli.u1.logs --errs /log/cli.u1.errs --parallel-upload 2 --parallel-fileset 2 -d 151 /data/a b.tif /data/c"},
		{"skip all wins", func(c *Config, _ *ImportRequest) { c.SkipAll, c.SkipChecksum = true, true },
			"--parallel-fileset 2 --skip all -d 151"},
		{"skips and parallelism", func(c *Config, r *ImportRequest) {
			c.SkipChecksum, c.SkipUpgrade, c.ParallelUpload, c.ParallelFilesets, r.Depth = true, true, 3, 2, 6
		}, "--parallel-upload 3 --parallel-fileset 2 --skip checksum --skip upgrade --depth 6 -d 151"},
		{"screen", func(_ *Config, r *ImportRequest) { r.Target = order.Target{Kind: "Screen", ID: 201} }, " -r 201 "},
		{"dataset by name", func(_ *Config, r *ImportRequest) { r.Target = order.Target{Kind: "Dataset", Name: "my set"} }, " -T Dataset:name:my set "},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, r := base, req
			c.edit(&cfg, &r)
			cl, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(cl.ImportArgs(s, r), " ")
			if !strings.Contains(got, c.want) {
				t.Errorf("argv %q lacks %q", got, c.want)
			}
			if strings.Contains(got, "pw") || strings.Contains(got, "no-upgrade") {
				t.Errorf("argv %q holds the password or a flag the CLI lacks", got)
			}
		})
	}
}

// BenchmarkParseOutput reads the output of a 2,000-fileset import (a large plate screen).
func BenchmarkParseOutput(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&sb, "---\n- Plate: [%d]\n  Fileset: %d\n  Image: [%d, %d, %d, %d]\n", i, 10000+i, 4*i, 4*i+1, 4*i+2, 4*i+3)
	}
	in := []byte(sb.String())
	b.SetBytes(int64(len(in)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fs, err := parseOutput(in)
		if err != nil || len(fs) != 2000 {
			b.Fatal(len(fs), err)
		}
	}
}
