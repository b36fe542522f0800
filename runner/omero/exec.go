package omero

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omero-adi/omero-adi/runner/child"
)

// Bounds on what is kept of a call's output.
const (
	maxStdout   = 64 << 20 // ids of very large imports still fit
	stderrTail  = 4 << 10  // the end of stderr, for error messages
	errsTailMax = 2 << 10  // the end of the --errs file, for error messages
	errsLines   = 12
)

// call is one run of the CLI.
type call struct {
	args    []string  // without the program
	env     []string  // added to the filtered environment
	stdin   io.Reader // nil: empty
	timeout time.Duration
	secret  string // the session key, masked in what is kept of stderr
}

type callResult struct {
	stdout []byte
	stderr string // the last stderrTail bytes
	code   int
}

// Secret environment variables: never copied to a call (the password reaches the login call
// only, through its own OMERO_PASSWORD).
var secretEnv = map[string]bool{"OMERO_PASSWORD": true, "INGEST_TRACKING_DB_URL": true}

// childEnv is the filtered environment of every call: what the CLI and Java need (PATH, HOME,
// LANG, LC_ALL, TMPDIR; OMERODIR, where omero-py finds lib/client and the logback configuration;
// XDG_CACHE_HOME, where it keeps the importer jars; OMERO_* and JAVA_*) and the PassEnv names, all
// without the password, the database URL and this process's session folder; then Config.Env,
// then extra.
func (c *Client) childEnv(extra []string) []string {
	keep := func(k string) bool {
		switch {
		case secretEnv[k], k == "OMERO_SESSIONDIR", k == "OMERO_SESSION_DIR":
			return false
		case k == "PATH", k == "HOME", k == "LANG", k == "LC_ALL", k == "TMPDIR", k == "OMERODIR", k == "XDG_CACHE_HOME":
			return true
		case slices.Contains(c.cfg.PassEnv, k):
			return true
		}
		return strings.HasPrefix(k, "OMERO_") || strings.HasPrefix(k, "JAVA_")
	}
	var add []string
	for _, kv := range c.cfg.Env {
		if k, _, _ := strings.Cut(kv, "="); !secretEnv[k] {
			add = append(add, kv)
		}
	}
	return child.Env(os.Environ(), keep, append(add, extra...))
}

// masked is argv for logs: the session key hidden.
func masked(args []string) string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-k" || out[i] == "--key" {
			out[i+1] = "***"
		}
	}
	return child.Quote(out)
}

// run executes the CLI in its own process group, under a guard that kills the group if the agent
// dies. When ctx ends or the timeout passes, the whole
// group gets SIGTERM, then SIGKILL after KillGrace; run returns ErrTimeout (timeout) or ctx.Err()
// (cancelled). A non-zero exit is not an error: callers read callResult.code.
func (c *Client) run(ctx context.Context, cl call) (callResult, error) {
	var res callResult
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cl.timeout > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cl.timeout)
	}
	defer cancel()
	// The CLI and the Java importer it starts die with the agent, even with kill -9; a stop
	// gives them SIGTERM and KillGrace to finish.
	cmd, err := child.Command(runCtx, append([]string{c.cfg.CLI}, cl.args...), child.Options{
		Env: c.childEnv(cl.env), Stop: syscall.SIGTERM, WaitDelay: c.cfg.KillGrace,
	})
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrCall, err)
	}
	cmd.Stdin = cl.stdin
	stdout := &limitedBuffer{limit: maxStdout}
	stderr := &child.Tail{Max: stderrTail}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	start := time.Now()
	c.log.WithField("argv", masked(cl.args)).Debug("run omero")
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("%w: start %s: %v; check omero.cli", ErrCall, c.cfg.CLI, err)
	}
	err = cmd.Wait()
	if runCtx.Err() != nil {
		// Whatever survived SIGTERM and the grace period goes now.
		child.KillGroup(cmd)
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, fmt.Errorf("%w: `omero %s` did not finish within %s and was killed", ErrTimeout, cl.args[0], cl.timeout)
	}
	res.stdout, res.stderr = stdout.Bytes(), stderr.String()
	if cl.secret != "" {
		res.stderr = strings.ReplaceAll(res.stderr, cl.secret, "***")
	}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case errors.Is(err, exec.ErrWaitDelay):
		// The program exited but something it started kept the output open.
		child.KillGroup(cmd)
	case err != nil:
		return res, fmt.Errorf("%w: run omero %s: %v", ErrCall, cl.args[0], err)
	}
	c.log.WithField("argv", masked(cl.args)).WithField("exit", res.code).WithField("took", time.Since(start)).Debug("omero finished")
	return res, nil
}

// limitedBuffer keeps the first limit bytes and drops the rest.
type limitedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf.Bytes()...)
}

// fileTail returns the last lines of a log file, bounded.
func fileTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	var off int64
	if fi, err := f.Stat(); err == nil && fi.Size() > errsTailMax {
		off = fi.Size() - errsTailMax
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, errsTailMax))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first line is cut
	}
	if len(lines) > errsLines {
		lines = lines[len(lines)-errsLines:]
	}
	return strings.Join(lines, "\n")
}

func readBounded(path string, limit int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer func() { _ = f.Close() }()
	b, _ := io.ReadAll(io.LimitReader(f, limit))
	return b
}

func freshDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

func removeDir(dir string) {
	_ = os.RemoveAll(dir)
}
