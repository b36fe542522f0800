package omero

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/sirupsen/logrus"
)

var (
	targetRE = regexp.MustCompile(`^(Image|Plate):[1-9][0-9]*$`)
	annRE    = regexp.MustCompile(`^MapAnnotation:[1-9][0-9]*$`)
	linkRE   = regexp.MustCompile(`^(Image|Plate)AnnotationLink:[1-9][0-9]*$`)
)

// quote makes a value one word for Python's shlex.split, which splits both an `omero load` line
// (cli.py CLI.execute) and an `obj --file` line (obj.py TxCmd): single quotes, each ' written '"'"'.
func quote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'"'"'`) + "'"
}

// cliLine is argv as one `omero load` line.
func cliLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = quote(a)
	}
	return strings.Join(q, " ")
}

// oneBatchLine makes v fit on one batch line: obj.py reads the batch file line by line
// (fileinput), so a line break cannot travel inside a value; each is written as a space.
func oneBatchLine(v string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(v)
}

// batch runs obj actions, one per line (obj.py TxCmd: "[NAME = ] action Class:id args…", split
// like a shell line, so a word starting with '-' is a plain word, never an option), in one
// `omero load` run: `login -k KEY -s HOST -p PORT`, `obj --file BATCH`, the CLI lines of tail
// (argv each, e.g. an hql query) and, with logout, `logout`. The key and the values travel on
// stdin and in a file in the session folder, never on argv. An outage (exit 11 with the server's
// port closed) is retried. It returns the actions' output lines, then what the tail printed.
func (c *Client) batch(ctx context.Context, s *Session, what, name string, actions []string, tail [][]string, logout bool) ([]string, []string, error) {
	lines, err := c.batchLines(ctx, s, what, name, actions, tail, logout)
	if len(lines) > len(actions) {
		return lines[:len(actions)], lines[len(actions):], err
	}
	return lines, nil, err
}

func (c *Client) batchLines(ctx context.Context, s *Session, what, name string, actions []string, tail [][]string, logout bool) ([]string, error) {
	if s == nil || s.Key == "" {
		return nil, fmt.Errorf("%w: %s without a session", ErrRequest, what)
	}
	file := filepath.Join(s.Dir, name)
	if err := os.WriteFile(file, []byte(strings.Join(actions, "\n")+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("%s: write batch: %w", what, err)
	}
	defer func() { _ = os.Remove(file) }()
	script := cliLine(append([]string{"login", "-k", s.Key}, c.server()...)) + "\n" + cliLine([]string{"obj", "--file", file}) + "\n"
	for _, l := range tail {
		script += cliLine(l) + "\n"
	}
	if logout {
		script += "logout\n"
	}
	res, attempts, outage, err := c.joined(ctx, c.log.WithField("batch", what), func() (call, error) {
		return call{args: []string{"load"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout, secret: s.Key}, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var lines []string
	if out := strings.TrimRight(string(res.stdout), "\n"); out != "" {
		lines = strings.Split(out, "\n")
	}
	switch {
	case outage:
		return lines, fmt.Errorf("%s: %w", what, c.unreachable(attempts, res))
	case res.code == exitBadKey:
		return lines, fmt.Errorf("%s: %w: the session key was rejected (the session expired or was closed)%s", what, ErrLogin, detail(res))
	case res.code != 0 && len(tail) > 0 && len(lines) >= len(actions):
		// Every action reported; a line of the tail failed after them.
		return lines, &tailError{fmt.Errorf("%s: %w (exit %d after the %d actions)%s", what, ErrCall, res.code, len(actions), detail(res))}
	case res.code != 0:
		return lines, fmt.Errorf("%s: %w (exit %d, %d of %d actions done)%s", what, ErrCall, res.code, min(len(lines), len(actions)), len(actions), detail(res))
	case len(lines) < len(actions) || (len(tail) == 0 && len(lines) != len(actions)):
		return lines, fmt.Errorf("%s: %w: %d of %d actions reported%s", what, ErrCall, len(lines), len(actions), detail(res))
	}
	if logout {
		s.loggedOut = true
	}
	return lines, nil
}

// tailError is a batch whose actions all ran and reported, and whose tail (after them) failed.
type tailError struct{ error }

func (e *tailError) Unwrap() error { return e.error }

// Prepared is what Prepare read and created.
type Prepared struct {
	Prefixes    map[int64]string  // fileset id -> templatePrefix, relative to the ManagedRepository, ending in "/"
	Annotations map[string]string // target ("Image:1", "Plate:4") -> its new "MapAnnotation:N"
	// Entries maps each fileset id to the client paths of its files, as the server records them
	// (see Entries); nil when they could not be read (EntriesErr says why).
	Entries    map[int64][]string
	EntriesErr error
}

// Prepare reads the templatePrefix of each fileset and creates one MapAnnotation in namespace ns
// linked to each target ("Image:101", "Plate:4"), in one batch (a `get Fileset:N templatePrefix`
// line per fileset first, then `aK = new MapAnnotation ns=NS` and `new KindAnnotationLink
// parent=TARGET child@=aK` per target), and in the same CLI start reads the files of each fileset
// (hql on FilesetEntry, see entryQueries). What ran before a failure is returned with the error.
func (c *Client) Prepare(ctx context.Context, s *Session, filesetIDs []int64, ns string, targets []string) (Prepared, error) {
	out, _, err := c.prepare(ctx, s, filesetIDs, ns, targets, nil)
	return out, err
}

// prepare is Prepare with more reads (one output line each) at the end of the batch; it also
// returns their output lines.
func (c *Client) prepare(ctx context.Context, s *Session, filesetIDs []int64, ns string, targets, reads []string) (Prepared, []string, error) {
	out := Prepared{Prefixes: map[int64]string{}, Annotations: map[string]string{}, EntriesErr: errors.New("not read")}
	uniq, err := filesetSet(filesetIDs)
	if err != nil {
		return out, nil, err
	}
	if len(targets) > 0 && (ns == "" || strings.ContainsAny(ns, "\x00\n\r")) {
		return out, nil, fmt.Errorf("%w: annotation namespace %q: must be one non-empty line", ErrRequest, ns)
	}
	for _, t := range targets {
		if !targetRE.MatchString(t) {
			return out, nil, fmt.Errorf("%w: annotation target %q: use Image:ID or Plate:ID", ErrRequest, t)
		}
	}
	var actions []string
	for _, id := range uniq {
		actions = append(actions, fmt.Sprintf("get Fileset:%d templatePrefix", id))
	}
	for i, t := range targets {
		kind, _, _ := strings.Cut(t, ":")
		actions = append(actions, fmt.Sprintf("a%d = new MapAnnotation %s", i, quote("ns="+ns)),
			fmt.Sprintf("new %sAnnotationLink parent=%s child@=a%d", kind, t, i))
	}
	actions = append(actions, reads...)
	if len(actions) == 0 {
		return out, nil, nil
	}
	queries := entryQueries(uniq, false)
	lines, rows, err := c.batch(ctx, s, "read fileset templatePrefix and create annotations", "batch-prepare", actions, queries, false)
	var te *tailError
	if errors.As(err, &te) {
		// The fileset query failed after every action ran: the annotations stand.
		out.EntriesErr, err = te.error, nil
	} else if out.EntriesErr = err; err == nil {
		out.Entries, out.EntriesErr = parseEntries(rows)
	}
	for i, id := range uniq {
		if i >= len(lines) {
			break
		}
		p := strings.TrimSpace(lines[i])
		if p == "" || strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || path.Clean(p)+"/" != p || strings.HasPrefix(p, "../") {
			return out, nil, fmt.Errorf("read fileset templatePrefix: %w: Fileset:%d has prefix %q, expected a relative folder like user_5/2024-01/15/10-30-00.123/", ErrCall, id, p)
		}
		out.Prefixes[id] = p
	}
	for i, t := range targets {
		n := len(uniq) + 2*i
		if n+1 >= len(lines) {
			break
		}
		ann, link := strings.TrimSpace(lines[n]), strings.TrimSpace(lines[n+1])
		if !annRE.MatchString(ann) || !linkRE.MatchString(link) {
			return out, nil, fmt.Errorf("create annotation of %s: %w: unexpected output %q, %q", t, ErrCall, ann, link)
		}
		out.Annotations[t] = ann
	}
	var extra []string
	if n := len(uniq) + 2*len(targets); len(lines) > n {
		extra = lines[n:]
	}
	return out, extra, err
}

// Write is what Finish writes: the key-value pairs of each annotation, in order, and new names.
type Write struct {
	Values  map[string][][2]string // "MapAnnotation:N" -> pairs; a repeated key keeps its last value (map-set replaces)
	Renames map[int64]string       // image id -> name
}

// Finish writes every pair (`map-set MapAnnotation:N mapValue KEY VALUE`) and every name (`update
// Image:N name=NAME`) in one batch, then logs the session out in the same run, so Close starts no
// CLI after it. A line break in a key, a value or a name is written as a space (see
// oneBatchLine); a NUL byte is refused.
func (c *Client) Finish(ctx context.Context, s *Session, w Write) error {
	anns := make([]string, 0, len(w.Values))
	for a := range w.Values {
		if !annRE.MatchString(a) {
			return fmt.Errorf("%w: annotation %q: use MapAnnotation:ID", ErrRequest, a)
		}
		anns = append(anns, a)
	}
	sort.Strings(anns)
	var actions []string
	for _, a := range anns {
		for i, p := range w.Values[a] {
			switch {
			case p[0] == "":
				return fmt.Errorf("%w: annotation key %d (value %q) is empty", ErrRequest, i, p[1])
			case strings.ContainsRune(p[0], 0) || strings.ContainsRune(p[1], 0):
				return fmt.Errorf("%w: annotation %q holds a NUL byte", ErrRequest, p[0])
			}
			actions = append(actions, fmt.Sprintf("map-set %s mapValue %s %s", a, quote(oneBatchLine(p[0])), quote(oneBatchLine(p[1]))))
		}
	}
	images := make([]int64, 0, len(w.Renames))
	for id, name := range w.Renames {
		if id <= 0 {
			return fmt.Errorf("%w: image id %d", ErrRequest, id)
		}
		if strings.TrimSpace(name) == "" || strings.ContainsRune(name, 0) {
			return fmt.Errorf("%w: image name %q: must be non-empty, without NUL", ErrRequest, name)
		}
		images = append(images, id)
	}
	sort.Slice(images, func(i, j int) bool { return images[i] < images[j] })
	for _, id := range images {
		actions = append(actions, fmt.Sprintf("update Image:%d %s", id, quote("name="+oneBatchLine(w.Renames[id]))))
	}
	if len(actions) == 0 {
		return nil
	}
	_, _, err := c.batch(ctx, s, "write annotations and names", "batch-finish", actions, nil, true)
	if err == nil {
		c.log.WithFields(logrus.Fields{"annotations": len(anns), "renames": len(images)}).Debug("annotations and names written")
	}
	return err
}
