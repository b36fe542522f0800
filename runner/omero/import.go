package omero

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"

	"github.com/omero-adi/omero-adi/order"
)

// ImportError is the error of a failed import. Partial lists the filesets that finished before
// the failure (also returned as Import's result); errors.Is matches its sentinel.
type ImportError struct {
	Sentinel error // ErrImport, ErrNoImport, ErrLogin or ErrConnection
	ExitCode int
	Partial  ImportResult
	Server   string // HOST:PORT, named when Sentinel is ErrConnection
	ErrsFile string // the CLI's log of this import
	Tail     string // the last lines of ErrsFile and of stderr
	Advice   string // what a person should do
}

func (e *ImportError) Error() string {
	var b strings.Builder
	b.WriteString(e.Sentinel.Error())
	if e.Sentinel == ErrConnection && e.Server != "" {
		b.WriteString(" at " + e.Server)
	}
	fmt.Fprintf(&b, " (exit status %d", e.ExitCode)
	if n := len(e.Partial.Filesets); n > 0 {
		fmt.Fprintf(&b, "; %d fileset(s) were imported before the failure", n)
	}
	b.WriteString(")")
	if e.Advice != "" {
		b.WriteString(": " + e.Advice)
	}
	if e.Tail != "" {
		b.WriteString("; last log lines: " + oneLine(e.Tail))
	}
	return b.String()
}

func (e *ImportError) Unwrap() error { return e.Sentinel }

// LogFiles returns the paths of an order's CLI logs in log_dir: --file (what the importer prints
// on stdout: the ids) and --errs (its log and summary).
func LogFiles(logDir, orderUUID string) (logs, errs string) {
	base := filepath.Join(logDir, "cli."+orderUUID)
	return base + ".logs", base + ".errs"
}

// LogFiles returns the paths of an order's CLI logs (see the package's LogFiles).
func (c *Client) LogFiles(orderUUID string) (logs, errs string) {
	return LogFiles(c.cfg.LogDir, orderUUID)
}

// ErrsTail is the last lines of an order's --errs file (bounded; "" when there is none).
func (c *Client) ErrsTail(orderUUID string) string {
	_, errs := c.LogFiles(orderUUID)
	return fileTail(errs)
}

// ImportArgs is the exact command of an import, program first (for dry runs; mask the key before
// showing it).
func (c *Client) ImportArgs(s *Session, req ImportRequest) []string {
	logs, errs := c.LogFiles(req.OrderUUID)
	// The key stays on this argv (the batches take it on stdin): omero-py's import plugin puts it
	// on the Java importer's command line anyway (import.py CommandArguments.set_login_arguments),
	// and a key joins again after an outage, while the session folder's current session, used
	// without -k, is forgotten when attaching it fails (sessions.py login).
	args := append([]string{c.cfg.CLI, "import"}, c.conn(s)...)
	args = append(args, "--transfer=ln_s", "--output", "yaml", "--file", logs, "--errs", errs)
	if c.cfg.ParallelUpload > 0 {
		args = append(args, "--parallel-upload", strconv.Itoa(c.cfg.ParallelUpload))
	}
	// The importer resolves -T …:name:NAME per fileset: filesets imported side by side could each
	// create a container of that name, so a name target imports one fileset at a time.
	if c.cfg.ParallelFilesets > 0 && req.Target.ID > 0 {
		args = append(args, "--parallel-fileset", strconv.Itoa(c.cfg.ParallelFilesets))
	}
	if c.cfg.ContinueOnError {
		args = append(args, "-c")
	}
	if c.cfg.SkipAll {
		args = append(args, "--skip", "all")
	} else {
		for _, s := range []struct {
			on   bool
			name string
		}{{c.cfg.SkipChecksum, "checksum"}, {c.cfg.SkipMinmax, "minmax"}, {c.cfg.SkipThumbnails, "thumbnails"}, {c.cfg.SkipUpgrade, "upgrade"}} {
			if s.on {
				args = append(args, "--skip", s.name)
			}
		}
	}
	if req.Depth > 0 {
		args = append(args, "--depth", strconv.Itoa(req.Depth))
	}
	t := req.Target
	switch {
	case t.ID > 0 && t.Kind == order.Screen:
		args = append(args, "-r", strconv.FormatInt(t.ID, 10))
	case t.ID > 0:
		args = append(args, "-d", strconv.FormatInt(t.ID, 10))
	default:
		args = append(args, "-T", t.Kind+":name:"+t.Name)
	}
	return append(args, req.Paths...)
}

func checkRequest(req ImportRequest) error {
	if req.Depth < 0 {
		return fmt.Errorf("%w: depth %d: must be 0 (default) or positive", ErrRequest, req.Depth)
	}
	return checkPaths(req.OrderUUID, req.Target, "path", req.Paths)
}

// checkPaths checks what an import and a registration share: the order's uuid, the target, and
// paths (what names them in errors), at least one, absolute, without NUL or line breaks.
func checkPaths(uuid string, t order.Target, what string, paths []string) error {
	if err := checkUUID(uuid); err != nil {
		return err
	}
	if _, err := order.ParseTarget(t.Kind, t.IDColumn()); err != nil {
		return fmt.Errorf("%w: target: %v", ErrRequest, err)
	}
	if len(paths) == 0 {
		return fmt.Errorf("%w: no %s to import", ErrRequest, what)
	}
	for _, p := range paths {
		if !filepath.IsAbs(p) || strings.ContainsAny(p, "\x00\n\r") {
			return fmt.Errorf("%w: %s %q: must be absolute, without NUL or line breaks", ErrRequest, what, p)
		}
	}
	return nil
}

// Import runs one in-place import (see ImportArgs) in its own process group, killed as a whole on
// cancellation or after ImportTimeout. It returns what was created; on failure the error is an
// *ImportError (or ErrTimeout / ctx.Err()) and the result holds the filesets that finished first.
func (c *Client) Import(ctx context.Context, s *Session, req ImportRequest) (ImportResult, error) {
	logs, errs, err := c.checkImport(s, req)
	if err != nil {
		return ImportResult{}, err
	}
	log := c.log.WithFields(logrus.Fields{"order": req.OrderUUID, "target": req.Target.String(), "paths": len(req.Paths)})
	log.Info("OMERO import started")
	start := time.Now()
	res, attempts, outage, runErr := c.runImport(ctx, log, s, c.ImportArgs(s, req), logs, errs)

	// The ids are on stdout, or in the --file log when the CLI writes stdout there.
	out := append(readBounded(logs, maxStdout), '\n')
	out = append(out, res.stdout...)
	filesets, parseErr := parseOutput(out)
	result := ImportResult{Filesets: filesets, Log: readLog(errs), ExitCode: res.code}

	if runErr != nil {
		if errors.Is(runErr, ErrTimeout) {
			runErr = fmt.Errorf("%w: the import did not finish within %s (omero.import_timeout) and was stopped; raise the timeout for very large data, or check the OMERO server; see %s",
				ErrTimeout, c.cfg.ImportTimeout, errs)
		}
		return result, runErr
	}
	if ie := c.importError(s, res, result, parseErr, attempts, outage, logs, errs); ie != nil {
		log.WithFields(logrus.Fields{"exit": res.code, "filesets": len(filesets)}).Warn("OMERO import failed")
		return result, ie
	}
	log.WithFields(logrus.Fields{"filesets": len(filesets), "errors": result.Log.Errors, "took": time.Since(start)}).Info("OMERO import finished")
	return result, nil
}

// checkImport checks the request and the session, and that log_dir exists and has room for the
// import's logs; it returns their paths.
func (c *Client) checkImport(s *Session, req ImportRequest) (logs, errs string, err error) {
	if err := checkRequest(req); err != nil {
		return "", "", err
	}
	if s == nil || s.Key == "" {
		return "", "", fmt.Errorf("%w: import without a session", ErrRequest)
	}
	if err := os.MkdirAll(c.cfg.LogDir, 0o755); err != nil {
		return "", "", fmt.Errorf("create log_dir: %w", err)
	}
	logs, errs = c.LogFiles(req.OrderUUID)
	// The importer writes the ids of what it imported to the --file log and cannot tell when that
	// fails: on a full log_dir the images would reach OMERO while the order saw nothing.
	if err := probeSpace(logs, logProbe); err != nil {
		return "", "", fmt.Errorf("%w: log_dir cannot take the import's logs (%v); nothing was imported: free space there", ErrCall, err)
	}
	return logs, errs, nil
}

// runImport runs the import's argv as a call that joins the session. An outage before the import
// joined the session (exit 11, port closed) imported nothing and is retried; the logs of a failed
// attempt are replaced by the next one's.
func (c *Client) runImport(ctx context.Context, log *logrus.Entry, s *Session, argv []string, logs, errs string) (res callResult, attempts int, outage bool, err error) {
	return c.joined(ctx, log, func() (call, error) {
		for _, f := range []string{logs, errs} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				return call{}, fmt.Errorf("remove old import log: %w", err)
			}
		}
		return call{args: argv[1:], env: []string{"OMERO_SESSIONDIR=" + s.Dir}, timeout: c.cfg.ImportTimeout, secret: s.Key}, nil
	})
}

// importError tells what went wrong with an import that ran to its end (nil: it created the
// filesets it reports): output that cannot be read, a record of the ids that went missing, nothing
// imported, an outage, a rejected session key, a cause known from the logs, or another exit.
func (c *Client) importError(s *Session, res callResult, result ImportResult, parseErr error, attempts int, outage bool, logs, errs string) *ImportError {
	filesets := result.Filesets
	ie := &ImportError{ExitCode: res.code, Partial: result, ErrsFile: errs, Tail: joinTail(res.stderr, fileTail(errs))}
	if ie.Tail == "" {
		ie.Tail = joinTail(lastBytes(res.stdout, stderrTail))
	}
	ie.Tail = strings.ReplaceAll(ie.Tail, s.Key, "***")
	hint := c.findHint(res.stderr, errs)
	switch {
	case res.code == 0 && parseErr != nil:
		ie.Sentinel = ErrImport
		ie.Advice = fmt.Sprintf("cannot read the import's output (%v); see %s and %s", parseErr, logs, errs)
	case res.code == 0 && !hasIDs(filesets) && (result.Log.Filesets > 0 || probeSpace(logs+".space", logProbe) != nil):
		// The importer cannot report a failed write of its ids (log_dir filled up during the
		// import), so an empty record proves nothing when its summary counts filesets or log_dir
		// has no room now.
		ie.Sentinel = ErrImport
		ie.Advice = fmt.Sprintf("the importer exited 0 but its record of what it imported is missing (log_dir %s is full, or %s is incomplete): the images may be in OMERO; look for them there before retrying the order, a retry imports them again", c.cfg.LogDir, logs)
	case res.code == 0 && !hasIDs(filesets):
		ie.Sentinel = ErrNoImport
		ie.Advice = fmt.Sprintf("the importer exited without an Image or Plate; check that the files are in a format OMERO reads and are not excluded, see %s", errs)
	case res.code == 0:
		return nil
	case outage:
		ie.Sentinel, ie.Server = ErrConnection, net.JoinHostPort(c.cfg.Host, strconv.Itoa(c.cfg.Port))
		ie.Advice = fmt.Sprintf("the session could not be joined and the server's port did not answer (attempts: %d); nothing was imported: check that OMERO.server is running", attempts)
	case res.code == exitBadKey:
		ie.Sentinel = ErrLogin
		ie.Advice = "the session key was rejected (the session expired or was closed)"
	case hint != "":
		ie.Sentinel = ErrImport
		ie.Advice = hint
	default:
		ie.Sentinel = ErrImport
		ie.Advice = fmt.Sprintf("see %s for the cause and fix it", errs)
	}
	return ie
}

// errsScanMax bounds how much of the --errs file is searched for known causes.
const errsScanMax = 16 << 20

// hints are causes the CLI or the importer names somewhere in a long log, with what to do.
func (c *Client) hints() []struct{ text, advice string } {
	return []struct{ text, advice string }{
		{"You likely do not have access to the ManagedRepository", fmt.Sprintf("in-place import needs write access to the ManagedRepository at %s (omero.managed_repository) with the same path as the server; fix the mount or permissions", c.repoName())},
		{"No JAR files found under", "the OMERO.java importer jars are missing: fetch them with `omero import --fetch-jars VERSION` where the agent runs (the container image does this at build time; check with `omero-adi doctor`)"},
		{"downloads.openmicroscopy.org/omero/", "the importer tried to download the OMERO.java jars because none were found: fetch them with `omero import --fetch-jars VERSION` where the agent runs (check with `omero-adi doctor`)"},
		{"java.lang.OutOfMemoryError", "the Java importer ran out of memory; import fewer or smaller files per order"},
	}
}

// findHint searches stderr and the whole (bounded) --errs file for a known cause and returns what
// to do about the first one found, or "".
func (c *Client) findHint(stderr, errsFile string) string {
	text := stderr + "\n" + string(readBounded(errsFile, errsScanMax))
	for _, h := range c.hints() {
		if strings.Contains(text, h.text) {
			return h.advice
		}
	}
	return ""
}

func (c *Client) repoName() string {
	if c.cfg.ManagedRepository == "" {
		return "/OMERO/ManagedRepository"
	}
	return c.cfg.ManagedRepository
}

func hasIDs(fs []Fileset) bool {
	for _, f := range fs {
		if len(f.Images) > 0 || len(f.Plates) > 0 {
			return true
		}
	}
	return false
}

func joinTail(parts ...string) string {
	var keep []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			lines := strings.Split(p, "\n")
			if len(lines) > errsLines {
				lines = lines[len(lines)-errsLines:]
			}
			keep = append(keep, strings.Join(lines, "\n"))
		}
	}
	return strings.Join(keep, "\n")
}

// idList reads a YAML sequence of ids, or a single id.
type idList []int64

func (l *idList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var id int64
		if err := n.Decode(&id); err != nil {
			return err
		}
		*l = idList{id}
		return nil
	}
	var ids []int64
	if err := n.Decode(&ids); err != nil {
		return err
	}
	*l = ids
	return nil
}

type outputEntry struct {
	Fileset int64  `yaml:"Fileset"`
	Image   idList `yaml:"Image"`
	Plate   idList `yaml:"Plate"`
}

var legacyRE = regexp.MustCompile(`^(Image|Plate):(\d+(?:,\d+)*)$`)

// parseOutput reads the importer's output: YAML documents ("---" then a list of {Fileset, Image,
// Plate} in any key order), and, outside documents, legacy lines "Image:1,2" or "Plate:4" (one
// fileset each, id unknown: 0). Other text outside documents is ignored; a document that is not
// such YAML is an error. Filesets seen twice (stdout and --file) are kept once.
func parseOutput(b []byte) ([]Fileset, error) {
	// First split the text into documents and legacy lines, in order.
	type item struct {
		doc    string
		legacy *Fileset
	}
	var items []item
	var doc []string
	inDoc := false
	flush := func() {
		if inDoc && strings.TrimSpace(strings.Join(doc, "")) != "" {
			items = append(items, item{doc: strings.Join(doc, "\n")})
		}
		doc, inDoc = nil, false
	}
	for _, line := range strings.Split(string(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "---" || strings.HasPrefix(trimmed, "--- "):
			flush()
			inDoc = true
			if rest := strings.TrimSpace(strings.TrimPrefix(trimmed, "---")); rest != "" {
				doc = append(doc, rest)
			}
		case trimmed == "...":
			flush()
		case inDoc:
			doc = append(doc, line)
		default:
			if m := legacyRE.FindStringSubmatch(trimmed); m != nil {
				var ids []int64
				for _, s := range strings.Split(m[2], ",") {
					id, _ := strconv.ParseInt(s, 10, 64)
					ids = append(ids, id)
				}
				f := Fileset{Images: ids}
				if m[1] == "Plate" {
					f = Fileset{Plates: ids}
				}
				items = append(items, item{legacy: &f})
			}
		}
	}
	flush()

	var out []Fileset
	seen := map[int64]bool{}
	add := func(f Fileset) {
		if f.ID != 0 && seen[f.ID] {
			return
		}
		seen[f.ID] = true
		out = append(out, f)
	}
	addEntries := func(entries []outputEntry, text string) error {
		for _, e := range entries {
			if e.Fileset <= 0 && len(e.Image) == 0 && len(e.Plate) == 0 {
				return fmt.Errorf("parse import output %q: an entry without Fileset, Image or Plate", firstLine(text))
			}
			add(Fileset{ID: e.Fileset, Images: e.Image, Plates: e.Plate})
		}
		return nil
	}

	// Fast path: documents that are all YAML lists concatenate into one list.
	all := make([]string, 0, len(items))
	for _, it := range items {
		if it.legacy != nil || !strings.HasPrefix(strings.TrimSpace(it.doc), "- ") {
			all = nil
			break
		}
		all = append(all, it.doc)
	}
	if len(all) > 0 {
		var entries []outputEntry
		text := strings.Join(all, "\n")
		if err := yaml.Unmarshal([]byte(text), &entries); err == nil {
			return out, addEntries(entries, text)
		}
	}

	for _, it := range items {
		if it.legacy != nil {
			add(*it.legacy)
			continue
		}
		var entries []outputEntry
		if err := yaml.Unmarshal([]byte(it.doc), &entries); err != nil {
			var one outputEntry
			if err2 := yaml.Unmarshal([]byte(it.doc), &one); err2 != nil {
				return out, fmt.Errorf("parse import output %q: %w", firstLine(it.doc), err)
			}
			entries = []outputEntry{one}
		}
		if err := addEntries(entries, it.doc); err != nil {
			return out, err
		}
	}
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return order.Clip(s, 80)
}
