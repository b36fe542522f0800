// Command omero is a test double of the OMERO command-line client, following the upstream sources
// that docs/omero-cli.md names: it implements the subcommands omero-adi calls (login, logout,
// sessions key|open|login|logout, import, obj, hql, user info|listgroups, version, and zarr import
// of omero-cli-zarr, see zarr.go) with the real client's flags, output
// and exit codes, against a simulated server whose state is a JSON file named by the environment
// variable OMERO_DOUBLE_STATE (see package world). It rejects what the real CLI rejects.
//
// Choices the real CLI leaves to the server or to Bio-Formats, made here so tests can rely on them:
//   - Filesets: a file given on the command line is one fileset. A folder yields one fileset per
//     file below it, down to --depth levels (default 4; files directly inside are level 1); hidden
//     entries (name starting with ".") are skipped. A folder whose name ends in ".zarr", or that
//     holds a ".zattrs" or "zarr.json" file, is one fileset of every file below it.
//   - Images: one image per fileset, except when the fileset's name (file or .zarr folder) contains
//     "__series_N": then N images (named "NAME [k]"). With a Screen target (-r or -T Screen:…) every
//     fileset becomes one Plate holding its images.
//   - A fileset's files land at <ManagedRepository>/<templatePrefix><path below its root>, where the
//     root is the folder holding the file (or the .zarr folder) that was found: a .zarr folder keeps
//     its name and subfolders. The ManagedRepository is the folder named by OMERO_DOUBLE_MANAGED_REPO.
//   - -T Dataset:name:NAME uses the newest dataset of that name in the session's group, or creates one.
//     The importer resolves it per fileset: with --parallel-fileset N > 1 and no such dataset yet,
//     each of the first N filesets creates its own (they run at once and all miss it).
//   - --file receives what the Java importer prints on stdout (the ids), as in omero-py, and --errs
//     what it prints on stderr (the log and the summary).
//   - What the Java importer prints (ome/omero-blitz): "- Fileset: N" first in each YAML document
//     (LoggingImportMonitor outputYamlResults); log lines in the logback pattern of
//     examples/logback-cli.xml, with ImportCandidates' "N file(s) parsed into G group(s)" line, the
//     ErrorHandler's "FILE_EXCEPTION: PATH" / "INTERNAL_EXCEPTION: PATH" lines followed by the
//     exception, and the closing summary exactly as ImportSummary.report writes it, also after a
//     failure ("1 file uploaded, 1 fileset, 1 plate created, 1 image imported, 0 errors in
//     0:00:05.123": singular forms, plates only when created, H:mm:ss.SSS).
//   - A fileset that fails (world.Failure ImportFail, FailImport) stops the run with exit 2 after the
//     ids of the filesets done before it; with -c the run goes on and exits 0. A file that fails
//     while candidates are scanned (ScanFail) is dropped and counted as an error, and the run goes
//     on (exit 0); when nothing is left, "No imports due to errors!", the summary, exit 0.
//   - hql answers three shapes: the templatePrefixes of images, and `select fe.fileset.id,
//     fe.clientPath from FilesetEntry fe where fe.fileset.id in (…)` or `… where fe.clientPath in
//     ('…', …)` (client paths without their leading "/", unsanitized), with --style plain (csv rows, index first; no rows: one empty
//     line), in the session's group, or every group with --all (admins only, else exit 53).
//   - A path that does not exist fails the import before anything is imported (exit 1); nothing
//     found to import is "No imports found" (exit 1, CommandLineImporter.start shows the usage); a target that does not exist or lies in another
//     group than the session's fails with exit 2 and no import; a ManagedRepository the double cannot
//     write fails an ln_s import with exit 2 and the "Check failed" message.
//   - `--transfer` must be written `--transfer=TYPE` (TYPE one of ln_s, ln, cp, upload); `--skip`
//     takes all|checksum|minmax|thumbnails|upgrade; there is no `--no-upgrade`.
//   - Login failures exit with the real codes modulo 256 (omero-py plugins/sessions.py login): with
//     -k any failure to join, a server that is down included, is 11 "Bad session key. Cannot join
//     KEY on HOST:PORT."; a password login gives 42 connection refused, 43 unknown host, 13 an
//     unknown user (--sudo), 44 unknown group, 45 user not in the group, 52 no terminal (also after
//     a refused password, as the CLI cannot ask again). Without -k, a stored current session that
//     cannot be attached is forgotten ("Previous session expired …" on stdout). The server is up
//     while the port in the state accepts TCP connections on 127.0.0.1 (see omerotest.Double).
//   - `user info [USER…] --style json` prints the users as cli.py output_users_list does through
//     util/text.py JSONStyle; every user counts as active (the double has no "user" group); the
//     groups a user owns (Group.Owners) are "owner of", the others "member of". `user listgroups
//     [USER] --style json` prints the user's groups as output_groups_list does, every group with
//     permissions "rw----". Other styles are refused.
//   - `omero load` runs CLI lines from stdin (or files) in one process, stopping at the first
//     failure with its exit code unless -k (plugins/basics.py LoadControl); commands after a login
//     reuse its session without connection arguments.
//
// Failure switches (world.Failure) and every call's argv are kept in the state for tests.
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// exitError ends the program with a message on stderr and an exit status (taken modulo 256 as the
// operating system does with Python's sys.exit(523)).
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func die(code int, format string, a ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, a...)}
}

func main() {
	// A call lives for milliseconds and allocates little beyond the state it decodes: collecting
	// garbage would only slow the many calls a load test makes.
	debug.SetGCPercent(-1)
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "__hang" {
		time.Sleep(time.Duration(1<<62 - 1))
		return 0
	}
	if len(args) > 1 && args[0] == "import" && args[1] == "--fetch-jars" {
		return exitCode(fetchJars(args[2:]))
	}
	statePath := os.Getenv("OMERO_DOUBLE_STATE")
	if err := recordCall(statePath, args); err != nil {
		fmt.Fprintf(os.Stderr, "omero double: %v\n", err)
		return 1
	}
	if asRoot(statePath) {
		// omero-py main.py not_root: refuses an effective uid 0, on stdout, before any command.
		fmt.Printf("FATAL: Running %s as root can corrupt your directory permissions.\n", os.Args[0])
		return 1
	}
	return exitCode(dispatch(statePath, args))
}

// exitCode prints err's message and returns the exit status it stands for.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(os.Stderr, ee.msg)
		}
		return ee.code % 256
	}
	fmt.Fprintf(os.Stderr, "omero double: %v\n", err)
	return 1
}

func dispatch(statePath string, args []string) error {
	if len(args) == 0 {
		return usageError("omero", "the following arguments are required: subcommand")
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "login":
		return cmdLogin(statePath, rest)
	case "logout":
		return cmdLogout(statePath, rest)
	case "sessions":
		if len(rest) == 0 {
			return usageError("omero sessions", "the following arguments are required: subcommand")
		}
		switch rest[0] {
		case "login":
			return cmdLogin(statePath, rest[1:])
		case "logout":
			return cmdLogout(statePath, rest[1:])
		case "key":
			return cmdSessionsKey(rest[1:])
		case "open":
			return cmdSessionsOpen(statePath, rest[1:])
		default:
			return usageError("omero sessions", fmt.Sprintf("argument subcommand: invalid choice: '%s'", rest[0]))
		}
	case "load":
		return cmdLoad(statePath, rest)
	case "import":
		return cmdImport(statePath, rest)
	case "obj":
		return cmdObj(statePath, rest)
	case "hql":
		return cmdHQL(statePath, rest)
	case "zarr":
		return cmdZarr(statePath, rest)
	case "user":
		return cmdUser(statePath, rest)
	case "version":
		fmt.Println("5.21.0-double")
		return nil
	default:
		return usageError("omero", fmt.Sprintf("argument subcommand: invalid choice: '%s'", sub))
	}
}

// asRoot reports the AsRoot failure switch (the tests themselves may run as root, so the double
// does not look at its real uid).
func asRoot(statePath string) bool {
	var st struct {
		Failure world.Failure `json:"failure"`
	}
	b, err := os.ReadFile(statePath)
	return err == nil && jsonUnmarshal(b, &st) == nil && st.Failure.AsRoot
}

// recordCall stores argv and whether a password travelled on it. It appends to the journal without
// the state lock and reads the users from the state file lock-free (it is replaced atomically);
// only a password on the command line takes the lock, to set State.PasswordInArgv.
func recordCall(statePath string, args []string) error {
	if statePath == "" {
		return errors.New("OMERO_DOUBLE_STATE is not set")
	}
	var users struct {
		Users []world.User `json:"users"`
	}
	b, err := os.ReadFile(statePath)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if err := jsonUnmarshal(b, &users); err != nil {
		return fmt.Errorf("decode state %s: %w", statePath, err)
	}
	c := world.Call{
		Argv:          append([]string(nil), args...),
		Lines:         loadInput(args),
		PasswordInEnv: os.Getenv("OMERO_PASSWORD") != "",
		SessionDir:    os.Getenv("OMERO_SESSIONDIR"),
	}
	for _, a := range args {
		if a == "-w" || a == "--password" || strings.HasPrefix(a, "--password=") ||
			(strings.HasPrefix(a, "-w") && len(a) > 2 && !strings.HasPrefix(a, "--")) {
			c.PasswordInArgv = true
		}
		for _, u := range users.Users {
			if u.Password != "" && a == u.Password {
				c.PasswordInArgv = true
			}
		}
	}
	if c.PasswordInArgv {
		if err := world.Update(statePath, func(st *world.State) error { st.PasswordInArgv = true; return nil }); err != nil {
			return err
		}
	}
	return world.Append(statePath, []world.Call{c}, nil)
}

// --- argument parsing, after Python's argparse ---

type optSpec struct {
	names    []string
	dest     string
	value    bool     // takes a value
	optional bool     // nargs="?": the value may be missing
	eqOnly   bool     // only the --name=VALUE form is accepted
	choices  []string // allowed values
	isInt    bool
}

type parsed struct {
	vals map[string][]string
	pos  []string
}

func (p *parsed) get(dest string) string {
	v := p.vals[dest]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func (p *parsed) has(dest string) bool { _, ok := p.vals[dest]; return ok }

func (p *parsed) all(dest string) []string { return p.vals[dest] }

func usageError(prog, msg string) error {
	return die(2, "usage: %s [-h] ...\n%s: error: %s", prog, prog, msg)
}

var loginSpecs = []optSpec{
	{names: []string{"-C", "--create"}, dest: "create"},
	{names: []string{"-s", "--server"}, dest: "server", value: true},
	{names: []string{"-p", "--port"}, dest: "port", value: true},
	{names: []string{"-g", "--group"}, dest: "group", value: true},
	{names: []string{"-u", "--user"}, dest: "user", value: true},
	{names: []string{"-w", "--password"}, dest: "password", value: true},
	{names: []string{"-k", "--key"}, dest: "key", value: true},
	{names: []string{"--sudo"}, dest: "sudo", value: true},
	{names: []string{"-q", "--quiet"}, dest: "quiet"},
	{names: []string{"--session-dir"}, dest: "session_dir", value: true},
}

func parseArgs(prog string, specs []optSpec, args []string) (*parsed, error) {
	p := &parsed{vals: map[string][]string{}}
	find := func(name string) *optSpec {
		for i := range specs {
			for _, n := range specs[i].names {
				if n == name {
					return &specs[i]
				}
			}
		}
		return nil
	}
	add := func(s *optSpec, shown, v string) error {
		if s.value && len(s.choices) > 0 && v != "" {
			ok := false
			for _, c := range s.choices {
				ok = ok || c == v
			}
			if !ok {
				quoted := make([]string, len(s.choices))
				for i, c := range s.choices {
					quoted[i] = "'" + c + "'"
				}
				return usageError(prog, fmt.Sprintf("argument %s: invalid choice: '%s' (choose from %s)",
					strings.Join(s.names, "/"), v, strings.Join(quoted, ", ")))
			}
		}
		if s.isInt {
			if _, err := strconv.Atoi(v); err != nil {
				return usageError(prog, fmt.Sprintf("argument %s: invalid int value: '%s'", shown, v))
			}
		}
		p.vals[s.dest] = append(p.vals[s.dest], v)
		return nil
	}
	var unknown []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			p.pos = append(p.pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			p.pos = append(p.pos, a)
			continue
		}
		name, val, hasEq := a, "", false
		if strings.HasPrefix(a, "--") {
			if k, v, ok := strings.Cut(a, "="); ok {
				name, val, hasEq = k, v, true
			}
		}
		s := find(name)
		if s == nil && !strings.HasPrefix(a, "--") && len(a) > 2 {
			// -d151: a short option with its value attached
			if s2 := find(a[:2]); s2 != nil && s2.value {
				s, name, val, hasEq = s2, a[:2], a[2:], true
			}
		}
		if s == nil {
			unknown = append(unknown, a)
			continue
		}
		shown := strings.Join(s.names, "/")
		switch {
		case !s.value:
			if hasEq {
				return nil, usageError(prog, fmt.Sprintf("argument %s: ignored explicit argument '%s'", shown, val))
			}
			p.vals[s.dest] = append(p.vals[s.dest], "")
		case hasEq:
			if err := add(s, shown, val); err != nil {
				return nil, err
			}
		case s.eqOnly:
			return nil, usageError(prog, fmt.Sprintf("argument %s: write it as %s=TYPE", shown, name))
		case i+1 < len(args) && (!strings.HasPrefix(args[i+1], "-") || args[i+1] == "-"):
			i++
			if err := add(s, shown, args[i]); err != nil {
				return nil, err
			}
		case s.optional:
			p.vals[s.dest] = append(p.vals[s.dest], "")
		default:
			return nil, usageError(prog, fmt.Sprintf("argument %s: expected one argument", shown))
		}
	}
	if len(unknown) > 0 {
		return nil, usageError("omero", "unrecognized arguments: "+strings.Join(unknown, " "))
	}
	return p, nil
}

// --- sessions store: the current session of one OMERO_SESSIONDIR ---

type current struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	User string `json:"user"`
	Key  string `json:"key"`
}

func sessionDir(p *parsed) string {
	if d := p.get("session_dir"); d != "" {
		return d
	}
	if d := os.Getenv("OMERO_SESSIONDIR"); d != "" {
		return d
	}
	if d := os.Getenv("OMERO_USERDIR"); d != "" {
		return filepath.Join(d, "sessions")
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, "omero", "sessions")
}

func readCurrent(dir string) (current, bool) {
	var c current
	b, err := os.ReadFile(filepath.Join(dir, "._CURRENT_"))
	if err != nil {
		return c, false
	}
	if err := jsonUnmarshal(b, &c); err != nil || c.Key == "" {
		return c, false
	}
	return c, true
}

func writeCurrent(dir string, c current) error {
	if err := os.MkdirAll(filepath.Join(dir, c.Host, c.User), 0o700); err != nil {
		return fmt.Errorf("write session: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, c.Host, c.User, c.Key), []byte("omero.sess="+c.Key+"\n"), 0o600); err != nil {
		return fmt.Errorf("write session: %w", err)
	}
	b, _ := jsonMarshal(c)
	if err := os.WriteFile(filepath.Join(dir, "._CURRENT_"), b, 0o600); err != nil {
		return fmt.Errorf("write session: %w", err)
	}
	return nil
}

func removeCurrent(dir string, c current) {
	_ = os.Remove(filepath.Join(dir, c.Host, c.User, c.Key))
	_ = os.Remove(filepath.Join(dir, "._CURRENT_"))
}
