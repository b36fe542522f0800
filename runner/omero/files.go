package omero

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
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
		rows, err := c.hql(ctx, s, query, len(out), filesPage, false)
		if err != nil {
			return out, starts, fmt.Errorf("read original files: %w", err)
		}
		page, err := parseFiles(rows)
		if err != nil {
			return out, starts, fmt.Errorf("read original files: %w: %v", ErrCall, err)
		}
		out = append(out, page...)
		if len(page) < filesPage {
			return out, starts, nil
		}
	}
}

// hql runs one query in one `omero load` run (`login -k KEY …`, then `hql -q --style plain
// --limit N --offset M [--all] QUERY`; the key travels on stdin) and returns its output.
func (c *Client) hql(ctx context.Context, s *Session, query string, offset, limit int, all bool) (string, error) {
	hql := []string{"hql", "-q", "--style", "plain", "--limit", strconv.Itoa(limit), "--offset", strconv.Itoa(offset)}
	if all {
		hql = append(hql, "--all")
	}
	script := cliLine(append([]string{"login", "-k", s.Key}, c.server()...)) + "\n" + cliLine(append(hql, query)) + "\n"
	res, attempts, outage, err := c.joined(ctx, c.log.WithField("query", "hql"), func() (call, error) {
		return call{args: []string{"load"}, env: []string{"OMERO_SESSIONDIR=" + s.Dir}, stdin: strings.NewReader(script), timeout: c.cfg.CallTimeout, secret: s.Key}, nil
	})
	switch {
	case err != nil:
		return "", err
	case outage:
		return "", c.unreachable(attempts, res)
	case res.code != 0:
		return "", fmt.Errorf("%w (exit %d)%s", ErrCall, res.code, detail(res))
	}
	return string(res.stdout), nil
}

// ServerFile is one file of an in-place fileset on the server, whoever imported it.
type ServerFile struct {
	Fileset int64
	Path    string // below the ManagedRepository
	Size    int64  // -1 when null
}

// FileTransferNS is the namespace of the CommentAnnotation with which the importer marks a
// fileset imported with a special transfer, ln_s among them (ome/omero-blitz
// ImportContainer.fillData: NSFILETRANSFER, text the transfer class).
const FileTransferNS = "openmicroscopy.org/omero/import/fileTransfer"

// InPlaceFiles reads one page (rows offset to offset+limit, by OriginalFile id) of the files of
// every fileset of the server that carries the file-transfer annotation, across all groups
// (`hql --all`: s must be an admin's session). It costs one CLI start.
func (c *Client) InPlaceFiles(ctx context.Context, s *Session, offset, limit int) ([]ServerFile, error) {
	if s == nil || s.Key == "" {
		return nil, fmt.Errorf("%w: read in-place files without a session", ErrRequest)
	}
	query := "select fs.id, f.size, concat(f.path, f.name) from FilesetEntry e join e.originalFile f join e.fileset fs " +
		"where fs.id in (select l.parent.id from FilesetAnnotationLink l where l.child.ns = '" + FileTransferNS + "') order by f.id"
	out, err := c.hql(ctx, s, query, offset, limit, true)
	if err != nil {
		return nil, fmt.Errorf("read in-place files: %w", err)
	}
	rows, err := plainRows(out, 4)
	if err != nil {
		return nil, fmt.Errorf("read in-place files: %w", err)
	}
	files := make([]ServerFile, 0, len(rows))
	for _, f := range rows {
		id, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return files, fmt.Errorf("read in-place files: %w: unexpected hql row %q", ErrCall, strings.Join(f, ","))
		}
		sf := ServerFile{Fileset: id, Path: f[3], Size: -1}
		if f[2] != "None" {
			if sf.Size, err = strconv.ParseInt(f[2], 10, 64); err != nil {
				return files, fmt.Errorf("read in-place files: %w: unexpected hql row %q", ErrCall, strings.Join(f, ","))
			}
		}
		files = append(files, sf)
	}
	return files, nil
}

// parseFiles reads "index,size,hasher,hash,path" rows (plainRows).
func parseFiles(stdout string) ([]OriginalFile, error) {
	rows, err := plainRows(stdout, 5)
	if err != nil {
		return nil, err
	}
	out := make([]OriginalFile, 0, len(rows))
	for _, f := range rows {
		of := OriginalFile{Path: f[4], Size: -1}
		if f[1] != "None" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("unexpected size in hql row %q", strings.Join(f, ","))
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

// plainRows reads the rows `hql --style plain` prints: omero-py's PlainStyle writes each row with
// Python's csv writer (a value with a comma or a quote is quoted; the row ends "\r\n") and the
// rows are joined with "\n", so an empty line follows each; no rows is one empty line. Each row
// must have n fields, the row index first.
func plainRows(out string, n int) ([][]string, error) {
	r := csv.NewReader(strings.NewReader(out)) // drops the "\r" and skips the empty lines
	r.FieldsPerRecord = -1
	var rows [][]string
	for {
		rec, err := r.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return rows, fmt.Errorf("%w: unreadable hql output: %v", ErrCall, err)
		}
		if len(rec) != n {
			return rows, fmt.Errorf("%w: unexpected hql row %q: want %d fields", ErrCall, strings.Join(rec, ","), n)
		}
		if _, err := strconv.Atoi(rec[0]); err != nil {
			return rows, fmt.Errorf("%w: unexpected hql row %q: no row index first", ErrCall, strings.Join(rec, ","))
		}
		rows = append(rows, rec)
	}
}
