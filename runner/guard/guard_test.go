package guard_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/omero-adi/omero-adi/runner/guard"
)

// envParent makes the test binary play an agent: it starts a guarded shell that starts two
// sleepers (one in the background), prints their pids and waits to be killed.
const envParent = "GUARD_TEST_PARENT"

// envCleanupTo, with envParent, gives the guarded shell a clean-up: touch <dir>/cleaned, then
// remove <dir>/temp.
const envCleanupTo = "GUARD_TEST_CLEANUP"

func TestMain(m *testing.M) {
	if os.Getenv(envParent) != "" {
		cmd := exec.Command("/bin/sh", "-c", `sleep 300 & echo $!; echo $$; exec sleep 301`)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		var c guard.Cleanup
		if dir := os.Getenv(envCleanupTo); dir != "" {
			c = guard.Cleanup{Command: []string{"/usr/bin/touch", dir + "/cleaned"}, Remove: dir + "/temp"}
		}
		if err := guard.Wrap(cmd, c); err != nil {
			panic(err)
		}
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		_ = cmd.Wait()
		os.Exit(3)
	}
	os.Exit(m.Run())
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	// A zombie waits for its parent to reap it: it runs no more.
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// kill -9 of the agent: the guarded program and what it started in the background die too.
func TestAgentDeathKillsTheGroup(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(self, "-test.run=^$")
	parent.Env = append(os.Environ(), envParent+"=1")
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = parent.Process.Kill(); _ = parent.Wait() }()
	sc := bufio.NewScanner(out)
	var pids []int
	for len(pids) < 2 && sc.Scan() {
		pid, err := strconv.Atoi(strings.TrimSpace(sc.Text()))
		if err != nil {
			t.Fatalf("unexpected output %q", sc.Text())
		}
		pids = append(pids, pid)
	}
	if len(pids) < 2 {
		t.Fatal("the guarded shell did not start")
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("pid %d not running before the kill", pid)
		}
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("pid %d outlived its agent by 10s", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// While the agent lives the guard passes streams, exit codes and signals through.
func TestGuardIsTransparent(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", `read x; echo "got $x"; echo err >&2; exit 7`)
	cmd.Stdin = strings.NewReader("hello\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := guard.Wrap(cmd, guard.Cleanup{}); err != nil {
		t.Fatal(err)
	}
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit: %v, want status 7", err)
	}
	if stdout.String() != "got hello\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}

	cmd = exec.Command("/bin/sh", "-c", `sleep 30`)
	if err := guard.Wrap(cmd, guard.Cleanup{}); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	err = cmd.Wait()
	if !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Errorf("status %v, want ended by SIGTERM", ws)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("SIGTERM to the group took %s", time.Since(start))
	}

	missing := exec.Command("/nonexistent/omero")
	if err := guard.Wrap(missing, guard.Cleanup{}); err != nil {
		t.Fatal(err)
	}
	if err := missing.Run(); err == nil || !strings.Contains(err.Error(), "/nonexistent/omero") {
		t.Errorf("missing program: %v, want the start error naming it", err)
	}
}

// BenchmarkStart compares running /bin/true plain and under the guard (the test binary serves as
// the guard, as omero-adi does in production): the guard's cost per program start.
func BenchmarkStart(b *testing.B) {
	for _, guarded := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "guarded"}[guarded]
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				cmd := exec.Command("/bin/true")
				if guarded {
					if err := guard.Wrap(cmd, guard.Cleanup{}); err != nil {
						b.Fatal(err)
					}
				}
				if err := cmd.Run(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// The clean-up runs once the agent is gone: its command, then the folder is removed.
func TestCleanupAfterAgentDeath(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	marker, doomed := dir+"/cleaned", dir+"/temp"
	if err := os.MkdirAll(doomed+"/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(self, "-test.run=^$")
	parent.Env = append(os.Environ(), envParent+"=1", envCleanupTo+"="+dir)
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = parent.Process.Kill(); _ = parent.Wait() }()
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("the guarded shell did not start")
	}
	if err := parent.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, errMarker := os.Stat(marker)
		_, errDoomed := os.Stat(doomed)
		if errMarker == nil && os.IsNotExist(errDoomed) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the agent's death: marker %v, temp folder %v", errMarker, errDoomed)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
