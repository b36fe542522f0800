// Package pgtest gives tests a fresh, empty PostgreSQL database on a throwaway cluster that is
// started once per test binary (or on the server named by ADI_TEST_DATABASE_URL), and SQLite URLs
// in a temporary directory.
//
// The cluster's postmaster is a child of the test binary with a parent-death signal, so it cannot
// outlive the binary even when the binary is killed; Main stops it cleanly after the tests, and a
// stale cluster directory left by a killed run is removed by the next run.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver for CREATE DATABASE

	"github.com/omero-adi/omero-adi/internal/testenv"
)

// EnvURL names an existing PostgreSQL server (a URL with rights to CREATE DATABASE) to use
// instead of a throwaway cluster.
const EnvURL = "ADI_TEST_DATABASE_URL"

const dirPrefix = "adi-pgtest-"

var (
	once     sync.Once
	shared   *cluster
	startErr error
	missing  bool
	seq      atomic.Int64
)

type cluster struct {
	adminURL string // URL of the maintenance database, with rights to create databases
	dir      string // "" for an external server
	bin      string
	cred     *syscall.Credential
	port     int
	durable  bool // commits survive an immediate stop (synchronous_commit on)
	cmd      *exec.Cmd
	exited   chan struct{}
	stopOnce sync.Once
}

// URL returns the URL of a new, empty database (unique name) and drops it when the test ends.
// Without PostgreSQL server binaries it skips the test (fails in CI) with an install hint.
func URL(t testing.TB) string {
	t.Helper()
	once.Do(func() { shared, startErr = start() })
	if missing {
		testenv.Missing(t, "PostgreSQL server", "apt-get install postgresql")
	}
	if startErr != nil {
		t.Fatalf("start PostgreSQL for tests: %v", startErr)
	}
	return shared.createDB(t)
}

func (c *cluster) createDB(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("adi_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, seq.Add(1))
	admin, err := sql.Open("pgx", c.adminURL)
	if err != nil {
		t.Fatalf("open test database server: %v", err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database %s: %v", name, err)
	}
	u, _ := url.Parse(c.adminURL)
	u.Path = "/" + name
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", c.adminURL)
		if err != nil {
			return
		}
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return u.String()
}

// Cluster is a throwaway PostgreSQL server of one test that the test may stop and start again,
// to play a database outage. Every commit survives a stop (synchronous_commit is on; fsync stays
// off: the operating system does not crash).
type Cluster struct{ c *cluster }

// Own starts a private cluster for t (never the server of ADI_TEST_DATABASE_URL, which a test
// must not stop) and removes it when the test ends. Without PostgreSQL server binaries it skips
// the test (fails in CI) with an install hint.
func Own(t testing.TB) *Cluster {
	t.Helper()
	bin, err := findBinaries()
	if err != nil {
		testenv.Missing(t, "PostgreSQL server", "apt-get install postgresql")
	}
	c, err := startCluster(bin, true)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(c.stop)
	return &Cluster{c: c}
}

// URL returns the URL of a new, empty database on the cluster.
func (c *Cluster) URL(t testing.TB) string {
	t.Helper()
	return c.c.createDB(t)
}

// Stop stops the server at once (immediate shutdown: clients see their connections dropped and
// new ones refused) and keeps its data.
func (c *Cluster) Stop() { c.c.halt() }

// Start starts a stopped server again on the same port and waits until it answers.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.c.run(); err != nil {
		t.Fatalf("restart PostgreSQL: %v", err)
	}
}

// SQLiteURL returns the URL of a new SQLite database file in the test's temporary directory.
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return "sqlite:///" + filepath.Join(t.TempDir(), "adi.db")
}

// Main runs the tests of a package and then stops the throwaway cluster: call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop shuts the throwaway cluster down (immediate mode) and removes its directory. Main calls
// it; it is safe to call more than once.
func Stop() {
	if c := shared; c != nil {
		c.stop()
	}
}

func (c *cluster) stop() {
	if c.cmd == nil {
		return
	}
	c.halt()
	_ = os.RemoveAll(c.dir)
}

// halt stops the postmaster (immediate mode, like pg_ctl stop -m immediate) and keeps the data.
func (c *cluster) halt() {
	c.stopOnce.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

func start() (*cluster, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &cluster{adminURL: u}, nil
	}
	bin, err := findBinaries()
	if err != nil {
		missing = true
		return nil, err
	}
	removeStale()
	var lastErr error
	for try := 0; try < 5; try++ {
		c, err := startCluster(bin, false)
		if err == nil {
			return c, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// findBinaries returns the directory holding initdb and postgres.
func findBinaries() (string, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(r))
		}
		dirs = append(dirs, filepath.Dir(p))
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(found, func(i, j int) bool { return versionOf(found[i]) > versionOf(found[j]) })
	dirs = append(dirs, found...)
	for _, d := range dirs {
		if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "postgres")) {
			return d, nil
		}
	}
	return "", errors.New("initdb and postgres not found on PATH or in /usr/lib/postgresql/*/bin")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// removeStale deletes cluster directories of test binaries that no longer run (their postmaster
// died with them through the parent-death signal).
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "owner.pid"))
		if err != nil {
			if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > time.Hour {
				_ = os.RemoveAll(d)
			}
			continue
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid > 0 && syscall.Kill(pid, 0) == nil {
			continue // still running
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			if pm, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0]); pm > 0 {
				_ = syscall.Kill(pm, syscall.SIGKILL)
			}
		}
		_ = os.RemoveAll(d)
	}
}

// credential returns the postgres user's ids when running as root (PostgreSQL refuses root).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startCluster(bin string, durable bool) (*cluster, error) {
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*cluster, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return fail(err)
	}
	data, sock := filepath.Join(dir, "data"), filepath.Join(dir, "sock")
	if err := os.Mkdir(sock, 0o755); err != nil {
		return fail(err)
	}
	if cred != nil {
		for _, p := range []string{dir, sock} {
			if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
				return fail(err)
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("initdb: %w: %s", err, tail(out)))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	c := &cluster{dir: dir, bin: bin, cred: cred, port: port, durable: durable,
		adminURL: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?host=%s&sslmode=disable", port, sock)}
	if err := c.run(); err != nil {
		return fail(err)
	}
	return c, nil
}

// run starts the postmaster on the cluster's data folder and port and waits until it answers.
func (c *cluster) run() error {
	logFile, err := os.OpenFile(filepath.Join(c.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	c.exited = make(chan struct{})
	c.stopOnce = sync.Once{}
	syncCommit := "synchronous_commit=off"
	if c.durable {
		syncCommit = "synchronous_commit=on"
	}
	c.cmd = exec.Command(filepath.Join(c.bin, "postgres"), "-D", filepath.Join(c.dir, "data"), "-p", strconv.Itoa(c.port),
		"-k", filepath.Join(c.dir, "sock"), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", syncCommit,
		"-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB")
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	c.cmd.Dir = c.dir
	// Pdeathsig is tied to the thread that forks: start from a thread that lives as long as the
	// process, so the postmaster dies with the test binary and never earlier.
	started := make(chan error, 1)
	cmd, exited := c.cmd, c.exited
	go func() {
		runtime.LockOSThread() // never unlocked: this thread stays until the process ends
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL}
		err := cmd.Start()
		started <- err
		if err != nil {
			return
		}
		_ = cmd.Wait()
		close(exited)
		select {} // keep the thread (and the parent-death signal) alive until the process ends
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if err := c.waitReady(30 * time.Second); err != nil {
		c.halt()
		log, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
		return fmt.Errorf("%w: %s", err, tail(log))
	}
	return nil
}

func (c *cluster) waitReady(limit time.Duration) error {
	db, err := sql.Open("pgx", c.adminURL)
	if err != nil {
		return err
	}
	defer db.Close()
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := db.PingContext(ctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return errors.New("postgres exited during start")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after %s: %w", limit, err)
		}
	}
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return s
}
