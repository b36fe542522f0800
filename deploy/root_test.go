package deploy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/internal/convtest"
	"github.com/omero-adi/omero-adi/internal/testenv"
)

// rootPackages is what debootstrap installs into the bookworm root beyond minbase: systemd as
// PID 1 (with logind and dbus for lingering), podman with runc (crun fails on these hybrid cgroup
// hosts), the user-namespace helpers and fuse-overlayfs for rootless podman. debootstrap does not
// resolve virtual packages, so the container network stack is named (netavark, aardvark-dns).
var rootPackages = []string{
	"systemd", "systemd-sysv", "dbus", "libpam-systemd",
	"podman", "runc", "conmon", "golang-github-containers-common", "netavark", "aardvark-dns",
	"uidmap", "fuse-overlayfs", "catatonit", "passwd", "ca-certificates",
}

const (
	suite      = "bookworm"
	rootRepo   = "localhost/adi-test-bookworm"
	depsHint   = "apt-get install debootstrap podman runc (scripts/test-deps.sh does)"
	cacheEnv   = "ADI_DEPLOY_CACHE"
	cacheDir   = "/var/cache/omero-adi-test"
	mirrorEnv  = "ADI_DEBIAN_MIRROR"
	stepTimout = 4 * time.Minute
)

// repoRoot is the repository's top folder (the parent of this package's folder).
func repoRoot(t testing.TB) string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("locate the deploy package")
	}
	return filepath.Dir(filepath.Dir(self))
}

// need stops the test unless it runs as root with podman, runc and debootstrap.
func need(t testing.TB) {
	t.Helper()
	testenv.Root(t, "debootstrap, podman run --privileged")
	for _, p := range []string{"podman", "runc", "debootstrap", "tar"} {
		testenv.LookPath(t, p, depsHint)
	}
}

// run executes argv with a timeout and returns its stdout; a failure ends the test with stderr.
func run(t testing.TB, stdin []byte, argv ...string) string {
	t.Helper()
	out, err := tryRun(stdin, argv...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return out
}

func tryRun(stdin []byte, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), stepTimout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, tail(stdout.String()), tail(stderr.String()))
	}
	return stdout.String(), nil
}

func tail(s string) string {
	if len(s) > 6000 {
		return "…" + s[len(s)-6000:]
	}
	return s
}

// mirror is the Debian mirror debootstrap downloads from: ADI_DEBIAN_MIRROR, else the first
// deb.debian.org-style URI of apt's sources for suite, else deb.debian.org.
func mirror() string {
	if m := os.Getenv(mirrorEnv); m != "" {
		return m
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range append([]string{"/etc/apt/sources.list"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			for i, w := range fields {
				if (w == "URIs:" || w == "deb") && i+1 < len(fields) && strings.HasSuffix(strings.TrimRight(fields[i+1], "/"), "/debian") {
					return fields[i+1]
				}
			}
		}
	}
	return "http://deb.debian.org/debian"
}

var (
	rootOnce  sync.Once
	rootImage string
	rootErr   error
)

// bookwormImage returns a podman image of the bookworm root, made with debootstrap once per key
// (suite and packages): the root's tarball is cached in cacheDir, the image in podman's storage.
func bookwormImage(t testing.TB) string {
	t.Helper()
	need(t)
	rootOnce.Do(func() { rootImage, rootErr = makeBookworm() })
	if rootErr != nil {
		t.Fatalf("bookworm root: %v", rootErr)
	}
	return rootImage
}

func makeBookworm() (string, error) {
	sum := sha256.Sum256([]byte(suite + "\n" + strings.Join(rootPackages, "\n")))
	key := hex.EncodeToString(sum[:])[:12]
	name := rootRepo + ":" + key
	if exec.Command("podman", "image", "exists", name).Run() == nil {
		return name, nil
	}
	dir := os.Getenv(cacheEnv)
	if dir == "" {
		dir = cacheDir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tarball := filepath.Join(dir, "bookworm-"+key+".tar")
	if _, err := os.Stat(tarball); err != nil {
		target, err := os.MkdirTemp(dir, "root-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(target)
		if _, err := tryRun(nil, "debootstrap", "--variant=minbase", "--include="+strings.Join(rootPackages, ","),
			suite, target, mirror()); err != nil {
			return "", fmt.Errorf("debootstrap: %w", err)
		}
		// Leave the apt lists and the downloaded packages out: the image never installs anything.
		for _, d := range []string{"var/cache/apt/archives", "var/lib/apt/lists"} {
			matches, _ := filepath.Glob(filepath.Join(target, d, "*"))
			for _, m := range matches {
				os.RemoveAll(m)
			}
		}
		partial := tarball + ".partial"
		if _, err := tryRun(nil, "tar", "--numeric-owner", "--xattrs", "-C", target, "-cf", partial, "."); err != nil {
			return "", fmt.Errorf("tar the root: %w", err)
		}
		if err := os.Rename(partial, tarball); err != nil {
			return "", err
		}
	}
	if _, err := tryRun(nil, "podman", "import", "--quiet", "--change", `CMD ["/sbin/init"]`, tarball, name); err != nil {
		return "", fmt.Errorf("podman import: %w", err)
	}
	return name, nil
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries builds the agent and the omero CLI double statically (they run in the bookworm root)
// and saves the test converter image as an archive a rootless podman can load; all in one folder.
func binaries(t testing.TB) string {
	t.Helper()
	image := convtest.Image(t)
	binOnce.Do(func() { binDir, binErr = buildBinaries(repoRoot(t), image) })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

func buildBinaries(root, image string) (string, error) {
	dir, err := os.MkdirTemp("", "omero-adi-deploy-")
	if err != nil {
		return "", err
	}
	// Read inside the roots by the service user too.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	for out, pkg := range map[string]string{"omero-adi": "./cmd/omero-adi", "omero": "./internal/omerotest/omero"} {
		cmd := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(dir, out), pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build %s: %w: %s", pkg, err, b)
		}
	}
	if _, err := tryRun(nil, "podman", "save", "--quiet", "-o", filepath.Join(dir, "converter.tar"), image); err != nil {
		return "", fmt.Errorf("podman save: %w", err)
	}
	return dir, nil
}
