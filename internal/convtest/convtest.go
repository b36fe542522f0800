// Package convtest gives tests a real preprocessing converter: a static Go program that follows the
// container convention (see the converter folder), either as a host binary (for the local-command
// mapping) or inside a podman image built from a tar rootfs, since no registry is reachable.
package convtest

import (
	"archive/tar"
	"bytes"
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

	"github.com/omero-adi/omero-adi/internal/testenv"
)

// ImageRepo is the repository of the test image; its tag is the converter binary's hash, so an
// image left by an earlier run is reused only when the binary is the same.
const ImageRepo = "localhost/adi-test-converter"

// PodmanHint says how to install what Image needs.
const PodmanHint = "apt-get install podman runc"

// PodmanArgs returns the podman run flags our test machines need: runc (crun fails on hybrid
// cgroup hosts), no network, and ulimits the sandbox allows (podman's defaults exceed them).
// These are test settings, not code defaults.
func PodmanArgs() []string {
	return []string{
		"--runtime", "runc",
		"--network=none",
		"--ulimit", "nofile=20000:20000",
		"--ulimit", "nproc=32768:32768",
	}
}

var (
	buildOnce sync.Once
	buildPath string
	buildHash string
	buildErr  error

	imageOnce sync.Once
	imageName string
	imageErr  error
)

// Binary builds the converter (CGO_ENABLED=0, static) once per test binary and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { buildPath, buildHash, buildErr = build() })
	if buildErr != nil {
		t.Fatalf("build test converter: %v", buildErr)
	}
	return buildPath
}

// build compiles the converter into a shared cache folder under a name holding its hash.
func build() (string, string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", "", fmt.Errorf("locate convtest source")
	}
	dir := filepath.Join(os.TempDir(), "omero-adi-convtest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	tmp, err := os.CreateTemp(dir, "build-*")
	if err != nil {
		return "", "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp.Name(), "./converter")
	cmd.Dir = filepath.Dir(self)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w: %s", err, out)
	}
	b, err := os.ReadFile(tmp.Name())
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(b)
	hash := hex.EncodeToString(sum[:])[:16]
	final := filepath.Join(dir, "converter-"+hash)
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", "", err
	}
	// Binaries of older converter sources are of no further use (an hour later, when no other
	// checkout's tests can be using them).
	old, _ := filepath.Glob(filepath.Join(dir, "converter-*"))
	for _, p := range old {
		if fi, err := os.Stat(p); err == nil && p != final && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(p)
		}
	}
	return final, hash, nil
}

// Image returns the name of a podman image whose entrypoint is the converter, building it once per
// test binary (podman import of a tar rootfs holding only /convert). Without podman the test
// stops through testenv.Missing.
func Image(t testing.TB) string {
	t.Helper()
	podman := testenv.LookPath(t, "podman", PodmanHint)
	testenv.LookPath(t, "runc", PodmanHint)
	bin := Binary(t)
	imageOnce.Do(func() { imageName, imageErr = buildImage(podman, bin, buildHash) })
	if imageErr != nil {
		t.Fatalf("build test image: %v", imageErr)
	}
	return imageName
}

func buildImage(podman, bin, hash string) (string, error) {
	name := ImageRepo + ":" + hash
	if exec.Command(podman, "image", "exists", name).Run() == nil {
		return name, nil
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for d, mode := range map[string]int64{"tmp/": 0o1777, "etc/": 0o755} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: mode}); err != nil {
			return "", err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "convert", Mode: 0o755, Size: int64(len(b))}); err != nil {
		return "", err
	}
	if _, err := tw.Write(b); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "convtest-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	rootfs := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(rootfs, buf.Bytes(), 0o644); err != nil {
		return "", err
	}
	cmd := exec.Command(podman, "import", "--quiet", "--change", `ENTRYPOINT ["/convert"]`,
		"--change", "LABEL omero-adi.test=converter", rootfs, name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("podman import: %w: %s", err, out)
	}
	// Images of other converter sources are of no further use once a day old (a younger one may
	// serve a test run of another checkout right now); failures here do not matter.
	out, _ := exec.Command(podman, "images", "--filter", "reference="+ImageRepo, "--filter", "until=24h",
		"--format", "{{.Repository}}:{{.Tag}}").Output()
	for _, old := range strings.Fields(string(out)) {
		if old != name {
			_ = exec.Command(podman, "rmi", old).Run()
		}
	}
	// Two test binaries importing the same tag at once leave the loser's image untagged.
	out, _ = exec.Command(podman, "images", "--quiet", "--filter", "dangling=true", "--filter", "label=omero-adi.test=converter").Output()
	for _, id := range strings.Fields(string(out)) {
		_ = exec.Command(podman, "rmi", id).Run()
	}
	return name, nil
}
