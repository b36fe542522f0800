package preprocess

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/internal/convtest"
)

func newDoctor(t *testing.T, edit func(*Config)) *Runner {
	t.Helper()
	r, err := New(testConfig(t.TempDir(), edit), logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func failed(checks []Check) []Check {
	var out []Check
	for _, c := range checks {
		if c.Err != nil {
			out = append(out, c)
		}
	}
	return out
}

// Doctor creates and initialises a container of each image once with podman, and fails an image
// that is not in the storage with the command that gets it.
func TestDoctorTriesEachImage(t *testing.T) {
	image := convtest.Image(t)
	r := newDoctor(t, func(c *Config) { c.ExtraArgs = convtest.PodmanArgs() })
	checks := r.Doctor(context.Background(), []string{image, image})
	if bad := failed(checks); len(bad) > 0 {
		t.Fatalf("failed checks: %+v", bad)
	}
	n := 0
	for _, c := range checks {
		if strings.Contains(c.Name, image) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d checks name %s, want 1: %+v", n, image, checks)
	}
	missing := "localhost/adi-test-missing:none"
	bad := failed(r.Doctor(context.Background(), []string{missing}))
	if len(bad) != 1 || !strings.Contains(bad[0].Name, missing) || !strings.Contains(bad[0].Fix, "podman pull") {
		t.Errorf("a missing image: %+v", bad)
	}
	if out, _ := r.probe(context.Background(), "ps", "-a", "--filter", "name=omero-adi-doctor-", "--format", "{{.Names}}"); strings.TrimSpace(out) != "" {
		t.Errorf("doctor left containers: %s", out)
	}
}

func TestDoctorWithoutRuntime(t *testing.T) {
	r := newDoctor(t, func(c *Config) { c.Runtime = filepath.Join(t.TempDir(), "podman") })
	checks := r.Doctor(context.Background(), []string{"localhost/x:1"})
	if len(checks) != 1 || checks[0].Err == nil || !strings.Contains(checks[0].Fix, "apt-get install podman") {
		t.Errorf("checks: %+v", checks)
	}
}

func TestSubIDs(t *testing.T) {
	file := filepath.Join(t.TempDir(), "subuid")
	text := "alice:100000:65536\n# comment\n1001:200000:1000\nbob:300000:x\nomero-adi:400000:65536\nomero-adi:500000:10\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, user, uid string
		want            int
	}{
		{"by name", "alice", "1000", 65536},
		{"by uid", "carol", "1001", 1000},
		{"two ranges add up", "omero-adi", "999", 65546},
		{"a bad count counts nothing", "bob", "1002", 0},
		{"none", "dave", "1003", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			if n, err := subIDs(file, c.user, c.uid); err != nil || n != c.want {
				t.Errorf("subIDs = %d, %v; want %d", n, err, c.want)
			}
		})
	}
	if n, err := subIDs(filepath.Join(t.TempDir(), "none"), "alice", "1000"); n != 0 || err != nil {
		t.Errorf("a missing file: %d, %v", n, err)
	}
}

// The rootless checks fail a user without ranges and a process with no-new-privileges, each with
// its fix (usermod, the unit option).
func TestRootlessChecks(t *testing.T) {
	status := filepath.Join(t.TempDir(), "status")
	for _, c := range []struct {
		name   string
		status string
		nnp    bool
	}{
		{"no-new-privileges", "Name:\tomero-adi\nNoNewPrivs:\t1\nSeccomp:\t0\n", true},
		{"privileges as usual", "Name:\tomero-adi\nNoNewPrivs:\t0\nSeccomp:\t0\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := os.WriteFile(status, []byte(c.status), 0o644); err != nil {
				t.Fatal(err)
			}
			u := &user.User{Username: "omero-adi-test-nobody", Uid: "4242424"}
			byName := map[string]Check{}
			for _, ch := range rootlessChecks(u, status) {
				byName[ch.Name] = ch
			}
			for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
				ch := byName["subordinate ids of omero-adi-test-nobody in "+file]
				if ch.Err == nil || !strings.Contains(ch.Fix, "usermod --add-sub") {
					t.Errorf("%s: %+v", file, ch)
				}
			}
			ch := byName["newuidmap usable (no no-new-privileges)"]
			if (ch.Err != nil) != c.nnp || !strings.Contains(ch.Fix, "NoNewPrivileges=yes") {
				t.Errorf("no-new-privileges check: %+v", ch)
			}
		})
	}
}
