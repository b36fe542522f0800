package omero

import (
	"context"
	"encoding/csv"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
)

// entriesPerQuery bounds the fileset ids of one hql line; entryLimit is its --limit, above any
// fileset's number of files. A query that fills its limit is reported, never read as complete.
const (
	entriesPerQuery = 500
	entryLimit      = 100000
)

// entryQueries are the hql lines that list the files of filesets ids: one row per FilesetEntry,
// `INDEX,FILESET_ID,CLIENT_PATH` with --style plain (omero-py plugins/hql.py display, util/text.py
// PlainStyle: csv rows, the row index first). all adds --all, an admin's query over every group;
// without it a query sees the session's group. The client path is what the importer recorded:
// the file's absolute path without its leading "/" (omero-blitz ImportContainer.fillData,
// ClientFilePathTransformer, FsFile).
func entryQueries(ids []int64, all bool) [][]string {
	var out [][]string
	for start := 0; start < len(ids); start += entriesPerQuery {
		chunk := ids[start:min(start+entriesPerQuery, len(ids))]
		s := make([]string, len(chunk))
		for i, id := range chunk {
			s[i] = strconv.FormatInt(id, 10)
		}
		q := []string{"hql", "-q", "--style", "plain", "--limit", strconv.Itoa(entryLimit)}
		if all {
			q = append(q, "--all")
		}
		out = append(out, append(q, "select fe.fileset.id, fe.clientPath from FilesetEntry fe where fe.fileset.id in ("+
			strings.Join(s, ",")+") order by fe.fileset.id, fe.id"))
	}
	return out
}

// isRow reports whether line is a row `hql --style plain` printed: it starts "INDEX,".
func isRow(line string) bool {
	i := strings.IndexByte(line, ',')
	if i <= 0 {
		return false
	}
	_, err := strconv.Atoi(line[:i])
	return err == nil
}

// parseEntries reads the rows the queries printed (an empty line for a query without rows): fileset
// id -> absolute client paths, sorted.
func parseEntries(rows []string) (map[int64][]string, error) {
	out := map[int64][]string{}
	for _, row := range rows {
		if strings.TrimSpace(row) == "" {
			continue
		}
		r := csv.NewReader(strings.NewReader(row))
		rec, err := r.Read()
		if err != nil || len(rec) != 3 {
			return nil, fmt.Errorf("%w: unexpected hql row %q (want INDEX,FILESET,CLIENT_PATH)", ErrCall, row)
		}
		idx, err1 := strconv.Atoi(rec[0])
		fs, err2 := strconv.ParseInt(rec[1], 10, 64)
		if err1 != nil || err2 != nil || fs <= 0 || rec[2] == "" {
			return nil, fmt.Errorf("%w: unexpected hql row %q (want INDEX,FILESET,CLIENT_PATH)", ErrCall, row)
		}
		if idx >= entryLimit-1 {
			return nil, fmt.Errorf("%w: a fileset query reached its limit of %d files", ErrCall, entryLimit)
		}
		out[fs] = append(out[fs], filepath.Clean("/"+rec[2]))
	}
	for _, paths := range out {
		sort.Strings(paths)
	}
	return out, nil
}

// Entries reads, as the admin, the files of each fileset now: fileset id -> absolute client paths
// (a fileset missing from the map no longer exists). It starts the CLI once for any number of
// filesets (`omero load`: login as the admin, an hql line per 500 filesets, logout) in a session
// folder of its own below SessionRoot. It is how finished orders are checked against OMERO.
func (c *Client) Entries(ctx context.Context, filesetIDs []int64) (map[int64][]string, error) {
	uniq, err := filesetSet(filesetIDs)
	if err != nil {
		return nil, err
	}
	if len(uniq) == 0 {
		return map[int64][]string{}, nil
	}
	dir := filepath.Join(c.cfg.SessionRoot, fmt.Sprintf("verify-%d", uniq[0]))
	if err := freshDir(dir); err != nil {
		return nil, fmt.Errorf("create session folder: %w", err)
	}
	defer removeDir(dir)
	queries := entryQueries(uniq, true)
	script := c.loginLine(c.cfg.AdminUser) + "\n"
	for _, q := range queries {
		script += cliLine(q) + "\n"
	}
	script += "logout\n"
	env := []string{"OMERO_SESSIONDIR=" + dir, "OMERO_PASSWORD=" + c.cfg.AdminPassword}
	res, err := c.run(ctx, call{args: []string{"load"}, env: env, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout})
	if err != nil {
		return nil, fmt.Errorf("read fileset entries: %w", err)
	}
	if res.code != 0 {
		if res.code == exitRefused || res.code == exitUnknownHost {
			return nil, fmt.Errorf("read fileset entries: %w", c.unreachable(1, res))
		}
		return nil, fmt.Errorf("read fileset entries: %w (exit %d)%s", ErrCall, res.code, detail(res))
	}
	var rows []string
	for _, l := range strings.Split(string(res.stdout), "\n") {
		// login may print other text on stdout; rows start with their index.
		if isRow(l) {
			rows = append(rows, l)
		}
	}
	out, err := parseEntries(rows)
	if err != nil {
		return nil, fmt.Errorf("read fileset entries: %w", err)
	}
	c.log.WithFields(logrus.Fields{"filesets": len(uniq), "found": len(out)}).Debug("fileset entries read")
	return out, nil
}

// filesetSet is ids sorted, each once; an id that is not positive is an error.
func filesetSet(ids []int64) ([]int64, error) {
	sorted := append([]int64(nil), ids...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	var out []int64
	for i, id := range sorted {
		if id <= 0 {
			return nil, fmt.Errorf("%w: fileset id %d", ErrRequest, id)
		}
		if i == 0 || id != sorted[i-1] {
			out = append(out, id)
		}
	}
	return out, nil
}
