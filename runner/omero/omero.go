// Package omero drives the OMERO command-line client (`omero`, see
// /work/shared/design/omero-cli.md): it logs in as the admin on behalf of a user in a group (one
// session folder per order), runs in-place imports and reads their YAML output, finds the
// templatePrefix of each fileset, and writes key-value annotations and image names in few calls.
//
// The importer's ids are read from the --file log, where omero-py sends the Java importer's stdout,
// and from stdout, so either behaviour works.
//
// Every call is an argv (never a shell string) with a filtered environment; the admin password
// travels only in OMERO_PASSWORD of the login call, never in argv or logs. Imports run in their own
// process group, which is killed as a whole on cancellation or timeout.
package omero

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// Sentinel errors, checked with errors.Is. Their messages, with the detail wrapped around them,
// are meant for order descriptions.
var (
	// ErrConfig: the Config is not usable.
	ErrConfig = errors.New("invalid OMERO settings")
	// ErrConnection: the server could not be reached (connection refused or unknown host), after
	// the configured retries.
	ErrConnection = errors.New("cannot connect to the OMERO server")
	// ErrLogin: the server refused the login, or the session key was rejected.
	ErrLogin = errors.New("OMERO login refused")
	// ErrNoImport: the import exited 0 but created no Image and no Plate.
	ErrNoImport = errors.New("OMERO import created nothing")
	// ErrImport: the import failed (a fileset failed, or the CLI rejected the arguments).
	ErrImport = errors.New("OMERO import failed")
	// ErrTimeout: a call did not finish in time and was killed.
	ErrTimeout = errors.New("OMERO call timed out")
	// ErrCall: a short call (obj, sessions) failed.
	ErrCall = errors.New("OMERO command failed")
	// ErrRequest: the caller passed a value the CLI cannot take.
	ErrRequest = errors.New("invalid OMERO request")
)

// Exit codes of the CLI (login failures arrive modulo 256).
const (
	exitBadKey        = 11 // 523: bad session key
	exitRefused       = 42 // 554: connection refused
	exitUnknownHost   = 43 // 555: unknown host
	exitUnknownGroup  = 44 // 556: internal exception, e.g. no such group
	exitSecurity      = 45 // 557: security violation, e.g. user not in group
	exitNoTerminal    = 52 // 564: the CLI wanted to prompt (wrong password, missing server)
	exitImportFailure = 2
)

// Config is what the client needs; the agent fills it from its settings.
type Config struct {
	CLI               string // path of the omero program (omero.cli)
	Host              string // omero.host
	Port              int    // omero.port
	AdminUser         string // omero.user: the admin that creates sessions for users (--sudo)
	AdminPassword     string // omero.password / OMERO_PASSWORD; only ever put in the login call's environment
	ManagedRepository string // omero.managed_repository as this host sees it
	LogDir            string // log_dir: cli.<uuid>.logs and cli.<uuid>.errs go here
	SessionRoot       string // each order's OMERO_SESSIONDIR is SessionRoot/<uuid>

	// ParallelUpload and ParallelFilesets (parallel_*_per_worker): 0 leaves the CLI's default.
	ParallelUpload, ParallelFilesets int

	// Skip* (skip_*): import steps to skip; SkipAll covers the rest.
	SkipAll, SkipChecksum, SkipMinmax, SkipThumbnails, SkipUpgrade bool

	ImportTimeout  time.Duration // 0: no limit
	CallTimeout    time.Duration // login, obj, logout…; 0: 2 minutes
	ConnectRetries int           // extra login attempts after a refused connection or unknown host
	ConnectBackoff time.Duration // wait before the first retry, doubled each time; 0: 2 seconds
	KillGrace      time.Duration // between SIGTERM and SIGKILL of a cancelled call; 0: 5 seconds

	// Env is extra environment for every call (KEY=VALUE). The child environment is otherwise
	// PATH, HOME, LANG, LC_ALL, TMPDIR, OMERO_* and JAVA_* of this process.
	Env []string
}

// Client runs the omero CLI. It holds no resources; sessions are closed with Close.
type Client struct {
	cfg Config
	log *logrus.Entry
}

// Session is one order's OMERO session. Dir is its OMERO_SESSIONDIR; Key is secret-ish and is
// masked in logs.
type Session struct {
	Key, User, Group, Dir string
}

// Target is where an import goes: a Dataset or Screen by ID, or a Dataset found or created by Name.
type Target struct {
	Kind string // "Dataset" or "Screen"
	ID   int64
	Name string // used when ID is 0: -T Kind:name:NAME
}

// ImportRequest is one `omero import` of an order: every path goes to the same target.
type ImportRequest struct {
	OrderUUID string
	Target    Target
	Paths     []string // absolute
	Depth     int      // 0: the CLI's default (4)
}

// Fileset is one fileset the import created with its images and plates.
type Fileset struct {
	ID     int64
	Images []int64
	Plates []int64
}

// ImportResult lists what an import created, in output order.
type ImportResult struct {
	Filesets []Fileset
}

// New checks cfg and fills defaults; it runs nothing.
func New(cfg Config, log *logrus.Entry) (*Client, error) {
	if log == nil {
		l := logrus.New()
		log = logrus.NewEntry(l)
	}
	bad := func(field, setting string, v any, why string) error {
		return fmt.Errorf("%w: %s (%s) = %q: %s", ErrConfig, field, setting, fmt.Sprint(v), why)
	}
	switch {
	case cfg.CLI == "":
		return nil, bad("CLI", "omero.cli", cfg.CLI, "name the omero program")
	case cfg.Host == "" || strings.HasPrefix(cfg.Host, "-") || strings.ContainsAny(cfg.Host, " \t\n"):
		return nil, bad("Host", "omero.host", cfg.Host, "give the OMERO server's host name")
	case cfg.Port < 1 || cfg.Port > 65535:
		return nil, bad("Port", "omero.port", cfg.Port, "a port is 1-65535")
	case cfg.AdminUser == "" || strings.HasPrefix(cfg.AdminUser, "-"):
		return nil, bad("AdminUser", "omero.user", cfg.AdminUser, "name the admin user that logs in for others")
	case cfg.AdminPassword == "":
		return nil, fmt.Errorf("%w: AdminPassword (omero.password or env OMERO_PASSWORD) is empty: set the admin's password", ErrConfig)
	case cfg.LogDir == "" || !filepath.IsAbs(cfg.LogDir):
		return nil, bad("LogDir", "log_dir", cfg.LogDir, "must be an absolute path")
	case cfg.SessionRoot == "" || !filepath.IsAbs(cfg.SessionRoot):
		return nil, bad("SessionRoot", "session folder root", cfg.SessionRoot, "must be an absolute path")
	case cfg.ManagedRepository != "" && !filepath.IsAbs(cfg.ManagedRepository):
		return nil, bad("ManagedRepository", "omero.managed_repository", cfg.ManagedRepository, "must be an absolute path")
	case cfg.ParallelUpload < 0:
		return nil, bad("ParallelUpload", "parallel_upload_per_worker", cfg.ParallelUpload, "must be 0 or more")
	case cfg.ParallelFilesets < 0:
		return nil, bad("ParallelFilesets", "parallel_filesets_per_worker", cfg.ParallelFilesets, "must be 0 or more")
	case cfg.ImportTimeout < 0:
		return nil, bad("ImportTimeout", "omero.import_timeout", cfg.ImportTimeout, "must be 0 (no limit) or positive")
	case cfg.CallTimeout < 0:
		return nil, bad("CallTimeout", "call timeout", cfg.CallTimeout, "must be 0 (default) or positive")
	case cfg.ConnectRetries < 0:
		return nil, bad("ConnectRetries", "connect retries", cfg.ConnectRetries, "must be 0 or more")
	case cfg.ConnectBackoff < 0:
		return nil, bad("ConnectBackoff", "connect backoff", cfg.ConnectBackoff, "must be 0 (default) or positive")
	case cfg.KillGrace < 0:
		return nil, bad("KillGrace", "kill grace", cfg.KillGrace, "must be 0 (default) or positive")
	}
	for i, kv := range cfg.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, bad(fmt.Sprintf("Env[%d]", i), "environment", kv, "write KEY=VALUE")
		}
	}
	if cfg.CallTimeout == 0 {
		cfg.CallTimeout = 2 * time.Minute
	}
	if cfg.ConnectBackoff == 0 {
		cfg.ConnectBackoff = 2 * time.Second
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 5 * time.Second
	}
	cfg.Env = append([]string(nil), cfg.Env...)
	return &Client{cfg: cfg, log: log.WithField("component", "omero")}, nil
}

var (
	safeNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	keyRE      = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
)

func checkUUID(uuid string) error {
	if !safeNameRE.MatchString(uuid) {
		return fmt.Errorf("%w: order uuid %q: use letters, digits, '.', '_' and '-' only", ErrRequest, uuid)
	}
	return nil
}

// checkArg refuses values the CLI would read as an option or that argv cannot carry.
func checkArg(field, v string) error {
	switch {
	case v == "":
		return fmt.Errorf("%w: %s is empty", ErrRequest, field)
	case strings.HasPrefix(v, "-"):
		return fmt.Errorf("%w: %s %q starts with '-'", ErrRequest, field, v)
	case strings.ContainsAny(v, "\x00\n\r"):
		return fmt.Errorf("%w: %s %q holds a NUL or line break", ErrRequest, field, v)
	}
	return nil
}

// server is the -s HOST -p PORT part of every server call.
func (c *Client) server() []string {
	return []string{"-s", c.cfg.Host, "-p", strconv.Itoa(c.cfg.Port)}
}

func (c *Client) conn(s *Session) []string {
	return append(c.server(), "-k", s.Key)
}

// Login opens a session for user in group (omero login --sudo ADMIN) in a fresh session folder
// SessionRoot/<orderUUID>, retrying a refused connection or an unknown host ConnectRetries times.
func (c *Client) Login(ctx context.Context, orderUUID, user, group string) (*Session, error) {
	if err := checkUUID(orderUUID); err != nil {
		return nil, err
	}
	if err := checkArg("user", user); err != nil {
		return nil, err
	}
	if err := checkArg("group", group); err != nil {
		return nil, err
	}
	dir := filepath.Join(c.cfg.SessionRoot, orderUUID)
	if err := freshDir(dir); err != nil {
		return nil, fmt.Errorf("create session folder: %w", err)
	}
	s := &Session{User: user, Group: group, Dir: dir}
	log := c.log.WithFields(logrus.Fields{"order": orderUUID, "user": user, "group": group})
	args := append(append([]string{"login", "--sudo", c.cfg.AdminUser}, c.server()...), "-u", user, "-g", group)
	env := []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + c.cfg.AdminPassword}
	for attempt := 0; ; attempt++ {
		res, err := c.run(ctx, call{args: args, env: env, timeout: c.cfg.CallTimeout})
		if err != nil {
			removeDir(dir)
			return nil, fmt.Errorf("log in: %w", err)
		}
		if res.code == 0 {
			break
		}
		if (res.code == exitRefused || res.code == exitUnknownHost) && attempt < c.cfg.ConnectRetries {
			wait := backoff(c.cfg.ConnectBackoff, attempt)
			entry := log.WithFields(logrus.Fields{"exit": res.code, "attempt": attempt + 1, "wait": wait})
			if attempt == 0 {
				entry.Warn("OMERO server unreachable, retrying")
			} else {
				entry.Debug("OMERO server unreachable, retrying")
			}
			if err := sleepCtx(ctx, wait); err != nil {
				removeDir(dir)
				return nil, fmt.Errorf("log in: %w", err)
			}
			continue
		}
		removeDir(dir)
		return nil, c.loginError(res, user, group, attempt+1)
	}
	res, err := c.run(ctx, call{args: []string{"sessions", "key"}, env: []string{"OMERO_SESSIONDIR=" + dir}, timeout: c.cfg.CallTimeout})
	if err != nil {
		c.Close(ctx, s)
		return nil, fmt.Errorf("read session key: %w", err)
	}
	for _, line := range strings.Split(string(res.stdout), "\n") {
		if line = strings.TrimSpace(line); keyRE.MatchString(line) {
			s.Key = line
		}
	}
	if res.code != 0 || s.Key == "" {
		c.Close(ctx, s)
		return nil, fmt.Errorf("%w: `omero sessions key` printed no session key (exit %d)%s", ErrLogin, res.code, detail(res.stderr))
	}
	log.Debug("OMERO session opened")
	return s, nil
}

func (c *Client) loginError(res callResult, user, group string, attempts int) error {
	who := fmt.Sprintf("user %q in group %q", user, group)
	switch res.code {
	case exitRefused:
		return fmt.Errorf("%w at %s:%d: connection refused (attempts: %d)%s; check that OMERO.server is running and that omero.host/omero.port (env OMERO_HOST, OMERO_PORT) point at it",
			ErrConnection, c.cfg.Host, c.cfg.Port, attempts, detail(res.stderr))
	case exitUnknownHost:
		return fmt.Errorf("%w: unknown host %q (attempts: %d)%s; fix omero.host (env OMERO_HOST)",
			ErrConnection, c.cfg.Host, attempts, detail(res.stderr))
	case exitUnknownGroup:
		return fmt.Errorf("%w for %s%s; check that group %q exists in OMERO", ErrLogin, who, detail(res.stderr), group)
	case exitSecurity:
		return fmt.Errorf("%w for %s%s; add user %q to group %q in OMERO, or fix the order's group",
			ErrLogin, who, detail(res.stderr), user, group)
	case exitNoTerminal:
		return fmt.Errorf("%w for %s%s; check the admin omero.user %q and its password (OMERO_PASSWORD), and that user %q exists",
			ErrLogin, who, detail(res.stderr), c.cfg.AdminUser, user)
	default:
		return fmt.Errorf("%w for %s (exit %d)%s", ErrLogin, who, res.code, detail(res.stderr))
	}
}

// Close logs the session out and removes its folder. It is safe to call with nil or twice, and
// works after ctx was cancelled (it then still gets CallTimeout).
func (c *Client) Close(ctx context.Context, s *Session) {
	if s == nil || s.Dir == "" {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if _, err := c.run(ctx, call{args: []string{"logout"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, timeout: c.cfg.CallTimeout}); err != nil {
		c.log.WithError(err).WithField("dir", s.Dir).Warn("OMERO logout failed")
	}
	removeDir(s.Dir)
}

func backoff(base time.Duration, attempt int) time.Duration {
	d := base
	for i := 0; i < attempt && d < 5*time.Minute; i++ {
		d *= 2
	}
	return min(d, 5*time.Minute)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// detail formats the end of a program's stderr for an error message.
func detail(stderr string) string {
	s := strings.TrimSpace(stderr)
	if s == "" {
		return ""
	}
	return " (omero said: " + oneLine(s) + ")"
}

// oneLine joins the non-empty lines of s with " | ", spaces collapsed.
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, " | ")
}
