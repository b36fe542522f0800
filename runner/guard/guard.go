// Package guard makes sure that no program the agent starts outlives the agent. Wrap turns a
// command into one that runs under a guard: this same executable started again in a hidden mode,
// which leads a process group of its own, starts the program in it and waits for it. The guard holds the read end
// of a lifeline pipe whose write end only the agent holds; when the agent is gone (exit, kill -9,
// the OOM killer) the pipe reports end of file and the guard kills the whole process group — the
// program and everything it started, such as the Java importer under the omero CLI, which a
// parent-death signal alone would not reach — after starting an optional clean-up (for a
// container: podman rm, then removing the run's temp folder). While the agent lives, the guard is transparent: the program gets the
// command's standard streams and environment, and its exit status (or the signal that ended it)
// becomes the guard's.
//
// The hidden mode starts from this package's init when the guard's environment variable is set, so
// every binary that links the package (omero-adi and test binaries) can serve as the guard.
package guard

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// Environment of the hidden modes: the lifeline's descriptor number and the clean-up (JSON) of a
// guard; the clean-up a detached helper runs after the agent is gone.
const (
	envFD         = "OMERO_ADI_GUARD_FD"
	envCleanup    = "OMERO_ADI_GUARD_CLEANUP"
	envCleanupRun = "OMERO_ADI_GUARD_CLEANUP_RUN"
)

// Cleanup is what is done once the agent is gone and the program's group was killed: Command runs
// (e.g. podman rm of the container), then the folder Remove is deleted. Both are optional.
type Cleanup struct {
	Command []string `json:"command,omitempty"`
	Remove  string   `json:"remove,omitempty"`
}

func (c Cleanup) empty() bool { return len(c.Command) == 0 && c.Remove == "" }

var (
	lifelineOnce sync.Once
	lifelineR    *os.File // handed to every guard
	// lifelineW is held by this process until it ends and never written: were it not referenced,
	// the collector would close it and every guard would take the agent for dead.
	//lint:ignore U1000 kept open on purpose, see above
	lifelineW   *os.File
	lifelineErr error
)

func init() {
	if c := os.Getenv(envCleanupRun); c != "" {
		os.Exit(cleanUp(c))
	}
	if fd := os.Getenv(envFD); fd != "" {
		os.Exit(serve(fd))
	}
}

// cleanUp runs a Cleanup (JSON) to its end: the detached helper started by a guard.
func cleanUp(text string) int {
	var c Cleanup
	if err := json.Unmarshal([]byte(text), &c); err != nil {
		return 2
	}
	if len(c.Command) > 0 {
		cmd := exec.Command(c.Command[0], c.Command[1:]...)
		cmd.Env = os.Environ()
		_ = cmd.Run()
	}
	if c.Remove != "" {
		_ = os.RemoveAll(c.Remove)
	}
	return 0
}

// Wrap makes cmd (created by exec.Command or exec.CommandContext, not started) run its program
// under a guard. The guard leads the process group the program runs in, so the caller stops
// everything with a signal to the group (kill(-pid)); a signal to the guard alone is passed on to
// the program. cleanup, when not empty, is run (detached, with cmd's environment) when the group
// is killed because the agent went away. A program that cannot be found is left unwrapped, so
// that cmd.Start reports it as before.
func Wrap(cmd *exec.Cmd, cleanup Cleanup) error {
	if cmd.Err != nil {
		return nil
	}
	if st, err := os.Stat(cmd.Path); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("guard: find this executable: %w", err)
	}
	lifelineOnce.Do(func() { lifelineR, lifelineW, lifelineErr = os.Pipe() })
	if lifelineErr != nil {
		return fmt.Errorf("guard: lifeline pipe: %w", lifelineErr)
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	env = append(env[:len(env):len(env)], envFD+"="+strconv.Itoa(3+len(cmd.ExtraFiles)))
	if !cleanup.empty() {
		b, err := json.Marshal(cleanup)
		if err != nil {
			return fmt.Errorf("guard: clean-up command: %w", err)
		}
		env = append(env, envCleanup+"="+string(b))
	}
	cmd.Env = env
	cmd.ExtraFiles = append(cmd.ExtraFiles, lifelineR)
	cmd.Args = append([]string{"omero-adi-guard", cmd.Path}, cmd.Args[1:]...)
	cmd.Path = self
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return nil
}

// serve is the guard: it runs os.Args[1:] and returns the exit code to leave with.
func serve(fdText string) int {
	fd, err := strconv.Atoi(fdText)
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "omero-adi guard: bad %s %q\n", envFD, fdText)
		return 127
	}
	syscall.CloseOnExec(fd)
	lifeline := os.NewFile(uintptr(fd), "lifeline")
	cleanup := os.Getenv(envCleanup)
	_ = os.Unsetenv(envFD)
	_ = os.Unsetenv(envCleanup)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "omero-adi guard: no program")
		return 127
	}
	// Signals to the group reach the program directly; one sent to the guard alone is passed on.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	child := &exec.Cmd{Path: os.Args[1], Args: os.Args[1:], Env: os.Environ(),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	if err := child.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "omero-adi guard: start %s: %v\n", os.Args[1], err)
		return 127
	}
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := lifeline.Read(buf); err != nil {
				break // end of file: the agent is gone
			}
		}
		if cleanup != "" {
			// This executable again, in its clean-up mode, in a group of its own so it outlives ours.
			if self, err := os.Executable(); err == nil {
				c := exec.Command(self)
				c.Env = append(os.Environ(), envCleanupRun+"="+cleanup)
				c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
				_ = c.Start()
			}
		}
		_ = syscall.Kill(0, syscall.SIGKILL) // the whole group, the guard included
	}()
	go func() {
		for s := range sigs {
			_ = child.Process.Signal(s)
		}
	}()
	err = child.Wait()
	st, ok := child.ProcessState.Sys().(syscall.WaitStatus)
	if err != nil && !ok {
		return 127
	}
	if st.Signaled() {
		// End the same way, so the caller sees the signal.
		signal.Reset(st.Signal())
		_ = syscall.Kill(os.Getpid(), st.Signal())
		return 128 + int(st.Signal())
	}
	return st.ExitStatus()
}
