// Package testenv decides what a test does when a real tool it needs (PostgreSQL server binaries,
// podman, bindfs) is missing: locally it skips with the command that installs the tool; in CI
// (CI=true) it fails, because there nothing may be skipped.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI, where every check must run.
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing stops the test because something it needs is not there: Skip locally, Fatal in CI.
// hint says how to install it, e.g. "apt-get install podman runc".
func Missing(t testing.TB, what, hint string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is needed and missing in CI (install with: %s)", what, hint)
	}
	t.Skipf("%s is missing; install it with: %s", what, hint)
}

// LookPath returns the path of program, or stops the test through Missing.
func LookPath(t testing.TB, program, hint string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Missing(t, program, hint)
	}
	return p
}

// Root stops the test through Missing unless it runs as root (FUSE mounts, sysctls).
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root ("+why+")", "run the tests as root, as CI does")
	}
}
