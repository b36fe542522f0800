package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/internal/omerotest"
)

// imageRunFlags are the run flags README and examples/compose.yaml document for the image.
var imageRunFlags = []string{"--privileged", "--device", "/dev/fuse", "--cgroupns=private"}

// omeroPyDouble returns an image with the omero CLI double as /opt/omero/venv/bin/omero: the
// Containerfile's omero-py stage takes such an image as it is (OMERO_PY_IMAGE).
func omeroPyDouble(t testing.TB, base, bin string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bin, "omero"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte(base+"\n"), b...))
	name := "localhost/adi-test-omero-py-double:" + hex.EncodeToString(sum[:])[:12]
	if exec.Command("podman", "image", "exists", name).Run() == nil {
		return name
	}
	ctx := t.TempDir()
	if err := os.WriteFile(filepath.Join(ctx, "omero"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	file := "FROM " + base + "\nCOPY omero /opt/omero/venv/bin/omero\n"
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, nil, "podman", "build", "--quiet", "--network=none", "-t", name, ctx)
	// Images of other doubles are of no further use once a day old (a younger one may serve
	// another checkout's test right now); failures here do not matter.
	out, _ := tryRun(nil, "podman", "images", "--filter", "reference=localhost/adi-test-omero-py-double",
		"--filter", "until=24h", "--format", "{{.Repository}}:{{.Tag}}")
	for _, old := range strings.Fields(out) {
		if old != name {
			_, _ = tryRun(nil, "podman", "rmi", old)
		}
	}
	return name
}

// The Containerfile, built offline from local parts (the bookworm root as every base image with
// the host's Go toolchain and module cache mounted, the omero CLI double in place of omero-py),
// runs with the documented flags: the agent, as the image's unprivileged user, runs a
// preprocessing order end to end through podman nested in the container.
func TestContainerImage(t *testing.T) {
	base := bookwormImage(t)
	bin := binaries(t)
	root := repoRoot(t)
	goroot := strings.TrimSpace(run(t, nil, "go", "env", "GOROOT"))
	modcache := strings.TrimSpace(run(t, nil, "go", "env", "GOMODCACHE"))
	gocache := strings.TrimSpace(run(t, nil, "go", "env", "GOCACHE"))
	image := "localhost/adi-test-image:" + randomName("")
	start := time.Now()
	run(t, nil, "podman", "build", "--quiet", "--network=none", "--runtime", "runc",
		"--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768",
		"-v", goroot+":/usr/local/go:ro", "-v", modcache+":/go/pkg/mod:ro", "-v", gocache+":/root/.cache/go-build",
		"--build-arg", "GO_IMAGE="+base, "--build-arg", "BASE_IMAGE="+base,
		"--build-arg", "OMERO_PY_IMAGE="+omeroPyDouble(t, base, bin),
		// the base has these already; Java is left out: the double needs none
		"--build-arg", "PACKAGES=podman runc uidmap fuse-overlayfs ca-certificates",
		"-f", filepath.Join(root, "Containerfile"), "-t", image, root)
	t.Cleanup(func() { _, _ = tryRun(nil, "podman", "rmi", "-f", image) })
	t.Logf("image built in %s", time.Since(start).Round(time.Second))

	d := omerotest.New(t)
	data := t.TempDir()
	for _, dir := range []string{filepath.Join(data, "demo", "alice")} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(data, "demo", "alice", "raw.tif"), []byte("raw\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	settings := filepath.Join(t.TempDir(), "settings.toml")
	text := agentSettings("/opt/omero/venv/bin/omero", d.Port, d.StatePath, d.ManagedRepo)
	if err := os.WriteFile(settings, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// The image's user omero-adi (uid 1000) writes the data root's .processed and the double's
	// state and ManagedRepository.
	doubleDir := filepath.Dir(d.StatePath)
	for _, dir := range []string{data, doubleDir} {
		run(t, nil, "chown", "-R", "1000:1000", dir)
	}

	name := randomName("adi-image-")
	argv := append([]string{"podman", "run", "-d", "--name", name}, imageRunFlags...)
	// What this sandbox needs on top (as convtest.PodmanArgs); the host network reaches the
	// double's server port on the host's loopback.
	argv = append(argv, "--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768", "--network=host",
		"-e", "OMERO_PASSWORD="+omerotest.AdminPassword,
		"-v", settings+":/etc/omero-adi/settings.toml:ro", "-v", data+":/data", "-v", doubleDir+":"+doubleDir,
		"-v", bin+":/stage:ro", image)
	run(t, nil, argv...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := tryRun(nil, "podman", "logs", "--tail", "80", name)
			t.Logf("end of the agent's log:\n%s", out)
		}
		_, _ = tryRun(nil, "podman", "rm", "-f", "-v", "-t", "5", name)
	})
	// Debian's udev makes /dev/fuse mode 0666; this sandbox has no udev and leaves it 0600, which
	// the device node podman gives the container copies. Make the container's node what a host's is.
	run(t, nil, "podman", "exec", "-u", "root", name, "chmod", "0666", "/dev/fuse")
	as := func(argv ...string) string {
		return run(t, nil, append([]string{"podman", "exec", "-u", "omero-adi", name}, argv...)...)
	}
	if uid := as("sh", "-c", "grep '^Uid:' /proc/1/status"); !strings.Contains(uid, "1000") {
		t.Errorf("the agent (pid 1) runs as %q, want uid 1000", uid)
	}
	as("podman", "load", "--quiet", "-i", "/stage/converter.tar")
	cli := []string{"omero-adi", "--config", "/etc/omero-adi/settings.toml"}
	uuid := strings.TrimSpace(as(append(cli, "orders", "create", "--group", "Demo", "--user", "alice", "--dataset", "151",
		"--container", convtest.Image(t), "/data/demo/alice/raw.tif")...))
	if o := waitOrder(t, as, cli, uuid, 2*time.Minute); o.Stage != "Import Completed" {
		t.Fatalf("order %s ended %q: %s", uuid, o.Stage, o.Description)
	}
	st := d.State(t)
	if len(st.Imports) != 1 || !strings.HasSuffix(strings.Join(st.Imports[0].Paths, " "), "raw.ome.tiff") {
		t.Errorf("imports: %+v, want one of the converted file", st.Imports)
	}
	run(t, nil, "podman", "stop", "-t", "30", name)
	if code := strings.TrimSpace(run(t, nil, "podman", "inspect", "--format", "{{.State.ExitCode}}", name)); code != "0" {
		t.Errorf("the agent exited %s after podman stop, want 0", code)
	}
}

// README, the Containerfile and examples/compose.yaml document the run flags TestContainerImage
// uses.
func TestRunFlagsDocumented(t *testing.T) {
	root := repoRoot(t)
	flags := strings.Join(imageRunFlags, " ")
	for _, c := range []struct{ file, want string }{
		{"README.md", flags},
		{"Containerfile", flags},
		{"examples/compose.yaml", "privileged: true"},
		{"examples/compose.yaml", "devices: [/dev/fuse]"},
		{"examples/compose.yaml", "cgroup: private"},
	} {
		b, err := os.ReadFile(filepath.Join(root, c.file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), c.want) {
			t.Errorf("%s does not say %q", c.file, c.want)
		}
	}
}
