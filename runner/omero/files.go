package omero

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// OriginalFile is one file of a fileset as OMERO recorded it at import (OriginalFile size, hasher,
// hash, and path + name: its path below the ManagedRepository).
type OriginalFile struct {
	Path   string
	Size   int64  // -1 when null
	Hasher string // "SHA1-160", "File-Size-64"…; "" when null
	Hash   string // "" when null
}

// filesPage is how many rows one hql call asks for (a variable for tests).
var filesPage = 1000

// OriginalFiles reads the OriginalFiles of the filesets with hql in session s (the filesets'
// group), a page of filesPage rows per `omero load` run (`login -k KEY …` then `hql -q --style
// plain --limit N --offset M QUERY`; the key travels on stdin). It returns the files and the
// number of CLI starts it made. The query joins FilesetEntry to its OriginalFile (ome/omero-blitz
// ImportContainer.fillData makes one FilesetEntry per used file) and prints, as hql.py's plain
// style does, "index,size,hasher,hash,path+name" rows, None for nulls; the path comes last since
// it may hold commas.
func (c *Client) OriginalFiles(ctx context.Context, s *Session, filesetIDs []int64) ([]OriginalFile, int, error) {
	if s == nil || s.Key == "" {
		return nil, 0, fmt.Errorf("%w: read original files without a session", ErrRequest)
	}
	if len(filesetIDs) == 0 {
		return nil, 0, nil
	}
	ids := make([]string, len(filesetIDs))
	for i, id := range filesetIDs {
		if id <= 0 {
			return nil, 0, fmt.Errorf("%w: fileset id %d", ErrRequest, id)
		}
		ids[i] = strconv.FormatInt(id, 10)
	}
	query := "select f.size, h.value, f.hash, concat(f.path, f.name) from FilesetEntry e join e.originalFile f " +
		"left join f.hasher h where e.fileset.id in (" + strings.Join(ids, ",") + ") order by f.id"
	var out []OriginalFile
	for starts := 1; ; starts++ {
		hql := []string{"hql", "-q", "--style", "plain", "--limit", strconv.Itoa(filesPage), "--offset", strconv.Itoa(len(out)), query}
		script := cliLine(append([]string{"login", "-k", s.Key}, c.server()...)) + "\n" + cliLine(hql) + "\n"
		res, attempts, outage, err := c.joined(ctx, c.log.WithField("query", "original files"), func() (call, error) {
			return call{args: []string{"load"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout, secret: s.Key}, nil
		})
		switch {
		case err != nil:
			return out, starts, fmt.Errorf("read original files: %w", err)
		case outage:
			return out, starts, fmt.Errorf("read original files: %w", c.unreachable(attempts, res))
		case res.code != 0:
			return out, starts, fmt.Errorf("read original files: %w (exit %d)%s", ErrCall, res.code, detail(res))
		}
		page, err := parseFiles(string(res.stdout))
		if err != nil {
			return out, starts, fmt.Errorf("read original files: %w: %v", ErrCall, err)
		}
		out = append(out, page...)
		if len(page) < filesPage {
			return out, starts, nil
		}
	}
}

// parseFiles reads "index,size,hasher,hash,path" rows; an empty line is no row.
func parseFiles(stdout string) ([]OriginalFile, error) {
	var out []OriginalFile
	for _, line := range strings.Split(stdout, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.SplitN(line, ",", 5)
		if len(f) != 5 {
			return nil, fmt.Errorf("unexpected hql row %q", line)
		}
		of := OriginalFile{Path: f[4], Size: -1}
		if f[1] != "None" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("unexpected size in hql row %q", line)
			}
			of.Size = n
		}
		if f[2] != "None" {
			of.Hasher = f[2]
		}
		if f[3] != "None" {
			of.Hash = f[3]
		}
		out = append(out, of)
	}
	return out, nil
}
