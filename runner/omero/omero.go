// Package omero drives the OMERO command-line client (`omero`; what this package relies on, and
// where upstream implements it, is in docs/omero-cli.md): it logs in as the admin on behalf of a user in a group (one
// session folder per order), runs in-place imports and reads their YAML output, finds the
// templatePrefix of each fileset, and writes key-value annotations and image names.
//
// An order starts the CLI at most four times whatever its size: `omero load` for the login and
// `sessions key` (with Config.ReadUsers also `user info --style json`, the requester's name and
// address for notifications, cached per user), the import, and two `omero load` runs of an `obj --file` batch (Prepare: the
// templatePrefix reads, the MapAnnotations and their links; Finish: every map-set and rename, then
// the logout). Each start is about a second of Python and a session join on a real host. An
// OME-Zarr registration (Register, see zarr.go) takes the import's place, and PrepareImages
// Prepare's.
//
// A call that joins the session by key and exits 11 is told apart from a rejected key by a TCP
// probe of the server: an outage is "OMERO server unreachable at HOST:PORT" and is retried
// ConnectRetries times, for the login, the import and the batches alike.
//
// The importer's ids are read from the --file log, where omero-py sends the Java importer's stdout,
// and from stdout, so either behaviour works; its log (--errs: the summary, the filesets found, the
// files that failed) is read into ImportResult.Log. Prepare's batch also reads, with hql in the
// same CLI start, the files of each created fileset (FilesetEntry.clientPath), so the runner
// knows which file became which fileset; Entries reads them for any number of filesets in one
// start, as the admin, to check finished orders.
//
// Every call is an argv (never a shell string) with a filtered environment; the admin password
// travels only in OMERO_PASSWORD of the login call, never in argv or logs. Imports run in their own
// process group, which is killed as a whole on cancellation or timeout.
package omero

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/omero-adi/omero-adi/order"
	"github.com/omero-adi/omero-adi/retry"
	"github.com/omero-adi/omero-adi/settings"
)

// Sentinel errors, checked with errors.Is. Their messages, with the detail wrapped around them,
// are meant for order descriptions.
var (
	// ErrConfig: the Config is not usable.
	ErrConfig = errors.New("invalid OMERO settings")
	// ErrConnection: the server could not be reached (connection refused, unknown host, or a
	// session join that failed while the server's port did not answer), after the configured retries.
	ErrConnection = errors.New("OMERO server unreachable")
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

// Exit codes of the CLI (login failures arrive modulo 256; omero-py plugins/sessions.py login).
const (
	exitBadKey        = 11 // 523: bad session key, and any other failure to join by key (the server being down included)
	exitUnknownUser   = 13 // 525: "User account error" (RemovedSessionException): no such user
	exitRefused       = 42 // 554: connection refused
	exitUnknownHost   = 43 // 555: unknown host
	exitUnknownGroup  = 44 // 556: "cannot connect, or another error", e.g. no such group
	exitSecurity      = 45 // 557: security violation, e.g. user not in group
	exitNoTerminal    = 52 // 564: the CLI wanted to prompt (wrong password, missing server)
	exitImportFailure = 2
)

// Client runs the omero CLI. It holds no resources; sessions are closed with Close.
type Client struct {
	cfg Config
	log *logrus.Entry

	mu     sync.Mutex
	people map[string]cachedPerson // by login, see Known
}

// Session is one order's OMERO session. Dir is its OMERO_SESSIONDIR; Key is secret-ish and is
// masked in logs. loggedOut is set once a batch logged the session out (Finish). Person is the
// user's name and address when Config.ReadUsers is set and they are known (nil otherwise).
type Session struct {
	Key, User, Group, Dir string
	Person                *Person
	loggedOut             bool
}

// ImportRequest is one `omero import` of an order: every path goes to the same target.
type ImportRequest struct {
	OrderUUID string
	Target    order.Target // by id: -d ID or -r ID; by name: -T Kind:name:NAME
	Paths     []string     // absolute
	Depth     int          // 0: the CLI's default (4)
}

// Fileset is one fileset the import created with its images and plates.
type Fileset struct {
	ID     int64
	Images []int64
	Plates []int64
}

// ImportResult lists what an import created, in output order, with what its log says (the
// summary, the filesets it found, the files that failed) and its exit code. An import that exits
// 0 may still have failed files (with -c, or a file dropped while candidates were scanned): the
// Log's Errors and Failed tell.
type ImportResult struct {
	Filesets []Fileset
	Log      Log
	ExitCode int
}

// New checks cfg (Validate, plus what running needs: the admin password unless DryRun, and
// LogDir); it runs nothing.
func New(cfg Config, log *logrus.Entry) (*Client, error) {
	if log == nil {
		l := logrus.New()
		log = logrus.NewEntry(l)
	}
	var p settings.Problems
	p.Include("omero", cfg.Validate())
	p.Include("", cfg.ImportConfig.Validate())
	if err := p.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	switch {
	case cfg.AdminPassword == "" && !cfg.DryRun:
		return nil, fmt.Errorf("%w: omero.password (env OMERO_PASSWORD) is empty: set the admin's password", ErrConfig)
	case !filepath.IsAbs(cfg.LogDir):
		return nil, fmt.Errorf("%w: log_dir must be an absolute path, got %q", ErrConfig, cfg.LogDir)
	case cfg.KillGrace < 0:
		return nil, fmt.Errorf("%w: kill grace must be 0 (5 seconds) or positive, got %s", ErrConfig, cfg.KillGrace)
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 5 * time.Second
	}
	cfg.Env = append([]string(nil), cfg.Env...)
	cfg.PassEnv = append([]string(nil), cfg.PassEnv...)
	return &Client{cfg: cfg, log: log.WithField("component", "omero"), people: map[string]cachedPerson{}}, nil
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

// LoginArgs is the exact command Login runs for user in group, program first, and the CLI lines
// it feeds that command on stdin; the admin password travels in its environment (OMERO_PASSWORD)
// and the session folder is OMERO_SESSIONDIR=<session_dir>/<order uuid>. For previews.
func (c *Client) LoginArgs(user, group string) (argv []string, stdin string) {
	return []string{c.cfg.CLI, "load"}, c.loginScript(user, group)
}

// loginLine is the `omero load` line that logs in as user with the password in OMERO_PASSWORD.
func (c *Client) loginLine(user string) string {
	return cliLine(append(append([]string{"login"}, c.server()...), "-u", user))
}

// loginScript is what Login feeds `omero load`: the admin's sudo login as user in group, then the
// session's key.
func (c *Client) loginScript(user, group string) string {
	login := append(append([]string{"login", "--sudo", c.cfg.AdminUser}, c.server()...), "-u", user, "-g", group)
	return cliLine(login) + "\n" + cliLine([]string{"sessions", "key"}) + "\n"
}

// Login opens a session for user in group in a fresh session folder SessionRoot/<orderUUID>, in
// one `omero load` run: `login --sudo ADMIN -s HOST -p PORT -u USER -g GROUP` (the admin password
// in OMERO_PASSWORD of this call only), then `sessions key`. A refused connection or an unknown
// host is retried ConnectRetries times.
func (c *Client) Login(ctx context.Context, orderUUID, user, group string) (*Session, error) {
	s, _, err := c.login(ctx, orderUUID, user, group, nil)
	return s, err
}

// Found maps client paths (absolute, as asked) to the filesets OMERO holds them in.
type Found map[string][]int64

// LoginFinding is Login that also asks, in the same CLI start (hql lines after `sessions key`),
// which of paths OMERO already holds in the group: a FilesetEntry with the path's client path
// (ClientPath). A retry asks it, so that a fileset that reached OMERO without being reported (in
// flight when the importer stopped, or when the agent died) is not imported again. A failed
// lookup returns the session and a nil Found with lookupErr set.
func (c *Client) LoginFinding(ctx context.Context, orderUUID, user, group string, paths []string) (s *Session, found Found, lookupErr error, err error) {
	var queries [][]string
	byClient := map[string][]string{}
	var lits []string
	for _, p := range paths {
		cp := ClientPath(p)
		if _, seen := byClient[cp]; !seen {
			lits = append(lits, "'"+strings.ReplaceAll(strings.TrimPrefix(cp, "/"), "'", "''")+"'")
		}
		byClient[cp] = append(byClient[cp], p)
	}
	for start := 0; start < len(lits); start += lookupsPerQuery {
		chunk := lits[start:min(start+lookupsPerQuery, len(lits))]
		queries = append(queries, []string{"hql", "-q", "--style", "plain", "--limit", strconv.Itoa(entryLimit),
			"select fe.fileset.id, fe.clientPath from FilesetEntry fe where fe.clientPath in (" + strings.Join(chunk, ",") + ")"})
	}
	s, rows, err := c.login(ctx, orderUUID, user, group, queries)
	if err != nil {
		return nil, nil, nil, err
	}
	if rows == nil && len(queries) > 0 {
		return s, nil, fmt.Errorf("%w: the lookup of the files in OMERO failed", ErrCall), nil
	}
	entries, perr := parseEntries(rows)
	if perr != nil {
		return s, nil, perr, nil
	}
	found = Found{}
	for fs, cps := range entries {
		for _, cp := range cps {
			for _, p := range byClient[cp] {
				found[p] = append(found[p], fs)
			}
		}
	}
	return s, found, nil, nil
}

// lookupsPerQuery bounds the client paths of one hql line of LoginFinding.
const lookupsPerQuery = 200

// login is Login with CLI lines after `sessions key` in the same run; it returns their rows
// (lines starting "INDEX,"), nil when one of them failed after the session was opened.
func (c *Client) login(ctx context.Context, orderUUID, user, group string, tail [][]string) (*Session, []string, error) {
	if err := checkUUID(orderUUID); err != nil {
		return nil, nil, err
	}
	if err := checkArg("user", user); err != nil {
		return nil, nil, err
	}
	if err := checkArg("group", group); err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(c.cfg.SessionRoot, orderUUID)
	if err := freshDir(dir); err != nil {
		return nil, nil, fmt.Errorf("create session folder: %w", err)
	}
	s := &Session{User: user, Group: group, Dir: dir}
	log := c.log.WithFields(logrus.Fields{"order": orderUUID, "user": user, "group": group})
	script := c.loginScript(user, group)
	readPerson := c.wantPerson(user)
	if readPerson {
		// After the key: should the line fail, the login stands (the key was printed).
		script += userInfoLine + "\n"
	}
	for _, l := range tail {
		script += cliLine(l) + "\n"
	}
	env := []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + c.cfg.AdminPassword}
	var res callResult
	attempts, q := 0, new(retry.Quiet)
	err := retry.Do(ctx, c.connectPolicy(log, q), func(attempt int) error {
		attempts = attempt
		var err error
		res, err = c.run(ctx, call{args: []string{"load"}, env: env, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout})
		switch {
		case err != nil:
			return retry.Stop(err)
		case res.code == exitRefused || res.code == exitUnknownHost:
			return unreachableError{res.code}
		}
		return nil // a refused login is not retried: loginError explains it
	})
	if err != nil {
		if _, spent := err.(unreachableError); !spent {
			removeDir(dir)
			return nil, nil, fmt.Errorf("log in: %w", err)
		}
		c.gaveUp(log, q, attempts, res.code)
	}
	var rows []string
	for _, line := range strings.Split(string(res.stdout), "\n") {
		line = strings.TrimSpace(line)
		if keyRE.MatchString(line) {
			s.Key = line
		} else if s.Key != "" && isRow(line) {
			rows = append(rows, line)
		}
	}
	lookedUp := true // every line after `sessions key` ran
	switch {
	case res.code != 0 && s.Key != "" && (len(tail) > 0 || readPerson):
		// The session is open; a line after `sessions key` failed.
		log.WithField("exit", res.code).Warn("OMERO lookup after the login failed")
		lookedUp = false
	case res.code != 0:
		removeDir(dir)
		return nil, nil, c.loginError(res, user, group, attempts)
	case s.Key == "":
		c.Close(ctx, s)
		return nil, nil, fmt.Errorf("%w: `omero sessions key` printed no session key%s", ErrLogin, detail(res))
	}
	if readPerson {
		p, err := parsePerson(res.stdout, user)
		if err == nil && res.code != 0 {
			err = fmt.Errorf("%w (exit %d)%s", ErrCall, res.code, detail(res))
		}
		if err != nil {
			log.WithError(err).Warn("read the user's name and e-mail address")
		} else {
			c.remember(p)
		}
	}
	if p, ok := c.Known(user); ok {
		s.Person = &p
	}
	log.Debug("OMERO session opened")
	switch {
	case !lookedUp:
		rows = nil // unknown
	case rows == nil:
		rows = []string{}
	}
	return s, rows, nil
}

// connectPolicy retries a call that found the server unreachable ConnectRetries times, after
// ConnectBackoff, doubled for each further retry up to maxConnectBackoff. The first wait of a
// call is logged at Warn on q, the others at Debug.
func (c *Client) connectPolicy(log *logrus.Entry, q *retry.Quiet) retry.Policy {
	return retry.Policy{
		Attempts: c.cfg.ConnectRetries + 1,
		Initial:  c.cfg.ConnectBackoff,
		Max:      maxConnectBackoff,
		Retrying: func(attempt int, wait time.Duration, err error) {
			var u unreachableError
			errors.As(err, &u)
			q.Failed(log.WithFields(logrus.Fields{"exit": u.code, "attempt": attempt, "wait": wait}), "OMERO server unreachable, retrying")
		},
	}
}

// maxConnectBackoff bounds the wait between two tries of a call that found the server unreachable.
const maxConnectBackoff = 5 * time.Minute

// gaveUp logs that a call found the server unreachable through all its attempts.
func (c *Client) gaveUp(log *logrus.Entry, q *retry.Quiet, attempts, code int) {
	q.GaveUp(log.WithFields(logrus.Fields{"exit": code, "attempts": attempts}), "OMERO server unreachable, giving up")
}

// unreachableError is a try that found the server unreachable (exit code): connectPolicy retries it.
type unreachableError struct{ code int }

func (e unreachableError) Error() string {
	return fmt.Sprintf("OMERO server unreachable (exit %d)", e.code)
}

// unreachable is the error of an outage: the server's port did not answer.
func (c *Client) unreachable(attempts int, res callResult) error {
	return fmt.Errorf("%w at %s:%d (attempts: %d)%s; check that OMERO.server is running and that omero.host/omero.port (env OMERO_HOST, OMERO_PORT) point at it",
		ErrConnection, c.cfg.Host, c.cfg.Port, attempts, detail(res))
}

// reachable probes the server's port: the CLI reports a server that is down with the same exit
// code as a rejected session key (11), so the probe tells the two apart.
func (c *Client) reachable(ctx context.Context) bool {
	d := net.Dialer{Timeout: probeTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(c.cfg.Host, strconv.Itoa(c.cfg.Port)))
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// probeTimeout bounds the TCP probe of the server.
const probeTimeout = 5 * time.Second

// joined runs a call that joins the session by key (mk builds it afresh for each attempt); an
// exit 11 while the server's port does not answer is an outage, retried ConnectRetries times. It
// returns the last result and the number of attempts; outage reports whether that result was an
// outage.
func (c *Client) joined(ctx context.Context, log *logrus.Entry, mk func() (call, error)) (res callResult, attempts int, outage bool, err error) {
	q := new(retry.Quiet)
	err = retry.Do(ctx, c.connectPolicy(log, q), func(attempt int) error {
		cl, err := mk()
		if err != nil {
			return retry.Stop(err)
		}
		attempts = attempt
		if res, err = c.run(ctx, cl); err != nil {
			return retry.Stop(err)
		}
		if res.code != exitBadKey || c.reachable(ctx) {
			return nil
		}
		return unreachableError{res.code}
	})
	if _, spent := err.(unreachableError); spent {
		c.gaveUp(log, q, attempts, res.code)
		return res, attempts, true, nil
	}
	return res, attempts, errors.As(err, new(unreachableError)), err
}

func (c *Client) loginError(res callResult, user, group string, attempts int) error {
	who := fmt.Sprintf("user %q in group %q", user, group)
	switch res.code {
	case exitRefused:
		return c.unreachable(attempts, res)
	case exitUnknownHost:
		return fmt.Errorf("%w: unknown host %q (attempts: %d)%s; fix omero.host (env OMERO_HOST)",
			ErrConnection, c.cfg.Host, attempts, detail(res))
	case exitUnknownUser:
		return fmt.Errorf("%w: no such OMERO user %q%s; create the user in OMERO, or fix the order's user",
			ErrLogin, user, detail(res))
	case exitUnknownGroup:
		return fmt.Errorf("%w for %s%s; check that group %q exists in OMERO and that the server works",
			ErrLogin, who, detail(res), group)
	case exitSecurity:
		return fmt.Errorf("%w for %s%s; add user %q to group %q in OMERO, or fix the order's group",
			ErrLogin, who, detail(res), user, group)
	case exitNoTerminal:
		return fmt.Errorf("%w for %s%s; check the admin omero.user %q and its password (OMERO_PASSWORD)",
			ErrLogin, who, detail(res), c.cfg.AdminUser)
	default:
		return fmt.Errorf("%w for %s (exit %d)%s", ErrLogin, who, res.code, detail(res))
	}
}

// Close logs the session out (unless Finish did) and removes its folder. It is safe to call with
// nil or twice, and works after ctx was cancelled (it then still gets CallTimeout).
func (c *Client) Close(ctx context.Context, s *Session) {
	if s == nil || s.Dir == "" {
		return
	}
	if !s.loggedOut {
		ctx = context.WithoutCancel(ctx)
		if _, err := c.run(ctx, call{args: []string{"logout"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, timeout: c.cfg.CallTimeout}); err != nil {
			c.log.WithError(err).WithField("dir", s.Dir).Warn("OMERO logout failed")
		}
		s.loggedOut = true
	}
	removeDir(s.Dir)
}

// detail formats what a call printed for an error message: the end of stderr, or stdout when
// stderr is empty (the CLI prints some failures there, e.g. "Previous session expired").
func detail(res callResult) string {
	s := strings.TrimSpace(res.stderr)
	if s == "" {
		s = strings.TrimSpace(lastBytes(res.stdout, stderrTail))
	}
	if s == "" {
		return ""
	}
	return " (omero said: " + oneLine(s) + ")"
}

// lastBytes is the end of b, at most n bytes.
func lastBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
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
