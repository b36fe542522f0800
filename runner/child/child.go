// Package child starts the programs the runner runs (the omero CLI, the container runtime, local
// preprocessing commands) one way: an argv, never a shell string; an environment filtered from
// this process's, so that no secret reaches a program that does not need it; a process group of
// the program's own under a guard (package guard), so that a stop reaches everything the program
// started and nothing outlives the agent. Tail keeps the end of a program's stderr for error
// messages, Quote writes an argv for logs.
package child

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omero-adi/omero-adi/runner/guard"
)

// DefaultPath is the PATH of a child when the kept environment has none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Env returns the environment of a child: the entries of environ whose name keep accepts, with
// PATH=DefaultPath when none of them is PATH, then extra.
func Env(environ []string, keep func(name string) bool, extra []string) []string {
	var env []string
	hasPath := false
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if keep(k) {
			env = append(env, kv)
			hasPath = hasPath || k == "PATH"
		}
	}
	if !hasPath {
		env = append(env, "PATH="+DefaultPath)
	}
	return append(env, extra...)
}

// Names returns a keep function for Env that accepts exactly these names.
func Names(names ...string) func(string) bool {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return func(k string) bool { return set[k] }
}

// Options of Command.
type Options struct {
	Env []string // the whole environment (see Env)
	// Stop is the signal the process group gets when ctx ends (SIGKILL when 0); BeforeStop, when
	// set, runs first (for a container: podman rm).
	Stop       syscall.Signal
	BeforeStop func()
	// WaitDelay bounds the wait for the output to close after the program ended or was signalled
	// (exec.Cmd.WaitDelay).
	WaitDelay time.Duration
	// Cleanup is done by the guard, detached, when the agent went away (see guard.Wrap).
	Cleanup guard.Cleanup
}

// Command returns the command for argv (not started) in a process group of its own under a
// guard. The caller sets its standard streams.
func Command(ctx context.Context, argv []string, o Options) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = o.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stop := o.Stop
	if stop == 0 {
		stop = syscall.SIGKILL
	}
	cmd.Cancel = func() error {
		if o.BeforeStop != nil {
			o.BeforeStop()
		}
		return syscall.Kill(-cmd.Process.Pid, stop)
	}
	cmd.WaitDelay = o.WaitDelay
	if err := guard.Wrap(cmd, o.Cleanup); err != nil {
		return nil, err
	}
	return cmd, nil
}

// KillGroup sends SIGKILL to the process group of a started command: what survived a stop, or
// what the program left behind holding its output open.
func KillGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Tail keeps the last Max bytes written to it. It is safe for concurrent use.
type Tail struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.Max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

// String returns what is kept.
func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Quote returns argv as one line that a POSIX shell reads back as the same argv: arguments with
// other characters than letters, digits and -_./:=,@%+ are put in single quotes.
func Quote(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@%+", r))
		}) < 0 {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}
