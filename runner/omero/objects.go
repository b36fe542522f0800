package omero

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	targetRE = regexp.MustCompile(`^(Image|Plate):[1-9][0-9]*$`)
	annRE    = regexp.MustCompile(`^MapAnnotation:[1-9][0-9]*$`)
)

// obj runs `omero obj ARGS… -s -p -k` (stdin, when set, is a batch read with --file -).
func (c *Client) obj(ctx context.Context, s *Session, what string, stdin string, args ...string) (callResult, error) {
	if s == nil || s.Key == "" {
		return callResult{}, fmt.Errorf("%w: %s without a session", ErrRequest, what)
	}
	cl := call{args: append(append([]string{"obj"}, args...), c.conn(s)...), env: []string{"OMERO_SESSIONDIR=" + s.Dir}, timeout: c.cfg.CallTimeout}
	if stdin != "" {
		cl.stdin = strings.NewReader(stdin)
	}
	res, err := c.run(ctx, cl)
	if err != nil {
		return res, fmt.Errorf("%s: %w", what, err)
	}
	switch res.code {
	case 0:
		return res, nil
	case exitBadKey:
		return res, fmt.Errorf("%s: %w: the session key was rejected (the session expired or was closed)%s", what, ErrLogin, detail(res.stderr))
	case exitRefused, exitUnknownHost:
		return res, fmt.Errorf("%s: %w at %s:%d%s", what, ErrConnection, c.cfg.Host, c.cfg.Port, detail(res.stderr))
	default:
		return res, fmt.Errorf("%s: %w (exit %d)%s", what, ErrCall, res.code, detail(res.stderr))
	}
}

// TemplatePrefixes returns the templatePrefix (relative to the ManagedRepository, ending in "/")
// of each fileset, in one `omero obj --file -` batch of `get Fileset:N templatePrefix` lines.
func (c *Client) TemplatePrefixes(ctx context.Context, s *Session, filesetIDs []int64) (map[int64]string, error) {
	ids := append([]int64(nil), filesetIDs...)
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var uniq []int64
	for i, id := range ids {
		if id <= 0 {
			return nil, fmt.Errorf("%w: fileset id %d", ErrRequest, id)
		}
		if i == 0 || id != ids[i-1] {
			uniq = append(uniq, id)
		}
	}
	out := map[int64]string{}
	if len(uniq) == 0 {
		return out, nil
	}
	var batch strings.Builder
	for _, id := range uniq {
		fmt.Fprintf(&batch, "get Fileset:%d templatePrefix\n", id)
	}
	res, err := c.obj(ctx, s, "read fileset templatePrefix", batch.String(), "--file", "-")
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimRight(string(res.stdout), "\n"), "\n")
	if len(lines) != len(uniq) {
		return nil, fmt.Errorf("read fileset templatePrefix: %w: expected %d lines, got %d: %q", ErrCall, len(uniq), len(lines), firstLine(string(res.stdout)))
	}
	for i, id := range uniq {
		p := strings.TrimSpace(lines[i])
		if p == "" || strings.HasPrefix(p, "/") || !strings.HasSuffix(p, "/") || path.Clean(p)+"/" != p || strings.HasPrefix(p, "../") {
			return nil, fmt.Errorf("read fileset templatePrefix: %w: Fileset:%d has prefix %q, expected a relative folder like user_5/2024-01/15/10-30-00.123/", ErrCall, id, p)
		}
		out[id] = p
	}
	return out, nil
}

// quote makes a value one word for the CLI's batch parser (Python shlex.split): single quotes,
// with each ' written as '"'"'.
func quote(v string) string {
	return "'" + strings.ReplaceAll(v, "'", `'"'"'`) + "'"
}

// batchSafe reports whether v fits on one batch line (the CLI reads the batch line by line, with
// \n, \r and \r\n all ending a line).
func batchSafe(v string) bool { return !strings.ContainsAny(v, "\n\r") }

// Annotate attaches one MapAnnotation in namespace ns with the pairs kv (in order) to each target
// ("Image:101", "Plate:4"): one `obj new MapAnnotation` call, then one `obj --file -` batch with
// every map-set and link. A key or value with a line break cannot go in a batch line and gets its
// own `obj map-set` call. Keys should be unique: map-set replaces the value of a repeated key.
func (c *Client) Annotate(ctx context.Context, s *Session, ns string, kv [][2]string, targets []string) error {
	if ns == "" || !batchSafe(ns) || strings.ContainsRune(ns, 0) {
		return fmt.Errorf("%w: annotation namespace %q: must be one non-empty line", ErrRequest, ns)
	}
	for i, p := range kv {
		if p[0] == "" {
			return fmt.Errorf("%w: annotation key %d (value %q) is empty", ErrRequest, i, p[1])
		}
		if strings.ContainsRune(p[0], 0) || strings.ContainsRune(p[1], 0) {
			return fmt.Errorf("%w: annotation %q holds a NUL byte", ErrRequest, p[0])
		}
	}
	for _, t := range targets {
		if !targetRE.MatchString(t) {
			return fmt.Errorf("%w: annotation target %q: use Image:ID or Plate:ID", ErrRequest, t)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	res, err := c.obj(ctx, s, "create annotation", "", "new", "MapAnnotation", "ns="+ns)
	if err != nil {
		return err
	}
	ann := ""
	for _, line := range strings.Split(string(res.stdout), "\n") {
		if line = strings.TrimSpace(line); annRE.MatchString(line) {
			ann = line
		}
	}
	if ann == "" {
		return fmt.Errorf("create annotation: %w: no MapAnnotation id in the output %q", ErrCall, firstLine(string(res.stdout)))
	}
	var batch strings.Builder
	actions := 0
	flush := func() error {
		if actions == 0 {
			return nil
		}
		res, err := c.obj(ctx, s, "write annotation "+ann, batch.String(), "--file", "-")
		if err != nil {
			return err
		}
		if n := strings.Count(string(res.stdout), "\n"); n < actions {
			return fmt.Errorf("write annotation %s: %w: %d of %d actions reported%s", ann, ErrCall, n, actions, detail(res.stderr))
		}
		batch.Reset()
		actions = 0
		return nil
	}
	for _, p := range kv {
		if batchSafe(p[0]) && batchSafe(p[1]) {
			fmt.Fprintf(&batch, "map-set %s mapValue %s %s\n", ann, quote(p[0]), quote(p[1]))
			actions++
			continue
		}
		// keep the order of the pairs: what is batched so far goes first
		if err := flush(); err != nil {
			return err
		}
		if _, err := c.obj(ctx, s, "write annotation "+ann, "", "map-set", ann, "mapValue", p[0], p[1]); err != nil {
			return err
		}
	}
	for _, t := range targets {
		kind, _, _ := strings.Cut(t, ":")
		fmt.Fprintf(&batch, "new %sAnnotationLink parent=%s child=%s\n", kind, t, ann)
		actions++
	}
	return flush()
}

// RenameImage sets an image's name (`obj update Image:N name=NAME`).
func (c *Client) RenameImage(ctx context.Context, s *Session, imageID int64, name string) error {
	if imageID <= 0 {
		return fmt.Errorf("%w: image id %d", ErrRequest, imageID)
	}
	if name == "" || strings.ContainsAny(name, "\x00\n\r") {
		return fmt.Errorf("%w: image name %q: must be one non-empty line", ErrRequest, name)
	}
	_, err := c.obj(ctx, s, "rename Image:"+strconv.FormatInt(imageID, 10), "", "update", "Image:"+strconv.FormatInt(imageID, 10), "name="+name)
	return err
}
