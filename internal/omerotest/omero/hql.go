package main

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/internal/omerotest/world"
)

// entryQueryRE is the query of a fileset's files (FilesetEntry.clientPath; runner/omero Entries).
var entryQueryRE = regexp.MustCompile(`(?is)^\s*select\s+fe\.fileset\.id\s*,\s*fe\.clientPath\s+from\s+FilesetEntry\s+(?:as\s+)?fe\s+where\s+fe\.fileset\.id\s+in\s*\(([\d\s,]*)\)(?:\s+order\s+by\s+fe\.fileset\.id\s*,\s*fe\.id)?\s*$`)

// pathQueryRE is the query of the filesets that hold given client paths (HQL string literals,
// ' doubled inside).
var pathQueryRE = regexp.MustCompile(`(?is)^\s*select\s+fe\.fileset\.id\s*,\s*fe\.clientPath\s+from\s+FilesetEntry\s+(?:as\s+)?fe\s+where\s+fe\.clientPath\s+in\s*\((.*)\)\s*$`)

var prefixQueryRE = regexp.MustCompile(`(?is)^\s*select\s+distinct\s+fs\.templatePrefix\s+from\s+Image\s+(?:as\s+)?i\s+join\s+i\.fileset\s+(?:as\s+)?fs\s+where\s+i\.id\s+in\s*\(([\d\s,]*)\)\s*$`)

// filesQuery is the OriginalFile query of package integrity (runner/omero OriginalFiles).
const filesQuery = "select f.size, h.value, f.hash, concat(f.path, f.name) from FilesetEntry e join e.originalFile f left join f.hasher h where e.fileset.id in (…) order by f.id"

// inPlaceQuery is the server-wide query of package integrity (runner/omero InPlaceFiles).
const inPlaceQuery = "select fs.id, f.size, concat(f.path, f.name) from FilesetEntry e join e.originalFile f join e.fileset fs where fs.id in (select l.parent.id from FilesetAnnotationLink l where l.child.ns = 'openmicroscopy.org/omero/import/fileTransfer') order by f.id"

var inPlaceQueryRE = regexp.MustCompile(`(?is)^\s*select\s+fs\.id\s*,\s*f\.size\s*,\s*concat\(\s*f\.path\s*,\s*f\.name\s*\)\s+from\s+FilesetEntry\s+(?:as\s+)?e\s+join\s+e\.originalFile\s+(?:as\s+)?f\s+join\s+e\.fileset\s+(?:as\s+)?fs\s+where\s+fs\.id\s+in\s*\(\s*select\s+l\.parent\.id\s+from\s+FilesetAnnotationLink\s+(?:as\s+)?l\s+where\s+l\.child\.ns\s*=\s*'openmicroscopy\.org/omero/import/fileTransfer'\s*\)\s+order\s+by\s+f\.id\s*$`)

var filesQueryRE = regexp.MustCompile(`(?is)^\s*select\s+f\.size\s*,\s*h\.value\s*,\s*f\.hash\s*,\s*concat\(\s*f\.path\s*,\s*f\.name\s*\)\s+from\s+FilesetEntry\s+(?:as\s+)?e\s+join\s+e\.originalFile\s+(?:as\s+)?f\s+left\s+join\s+f\.hasher\s+(?:as\s+)?h\s+where\s+e\.fileset\.id\s+in\s*\(([\d\s,]*)\)\s+order\s+by\s+f\.id\s*$`)

// cmdHQL answers the query shapes omero-cli.md documents: the templatePrefixes of images, the
// files of filesets (FilesetEntry clientPath: the client's absolute path without its leading
// "/"), the OriginalFiles (size, hasher, hash, path below the ManagedRepository) of filesets, and
// every in-place fileset's files. Rows print as hql.py's plain style does (HqlControl.display,
// omero.util.text PlainStyle): the row index, then each column, written by Python's csv writer
// (quoted where needed, "\r\n" ended) and joined with "\n", so an empty line follows each row; a
// null prints as None; no rows prints one empty line. A query sees the session's group; --all,
// for admins only, every group.
func cmdHQL(statePath string, args []string) error {
	specs := append(append([]optSpec{}, loginSpecs...),
		optSpec{names: []string{"--limit"}, dest: "limit", value: true, isInt: true},
		optSpec{names: []string{"--offset"}, dest: "offset", value: true, isInt: true},
		optSpec{names: []string{"--style"}, dest: "style", value: true, choices: []string{"csv", "plain", "sql", "json"}},
		optSpec{names: []string{"--all"}, dest: "all"},
	)
	p, err := parseArgs("omero hql", specs, args)
	if err != nil {
		return err
	}
	if len(p.pos) != 1 {
		return usageError("omero hql", "give exactly one query")
	}
	if err := readSession(statePath, p, func(st *world.State, _ *world.Session) error {
		if st.Failure.FailHQL {
			return die(52, "Bad query: QueryException: the double was told to reject every query")
		}
		return nil
	}); err != nil {
		return err
	}
	if p.get("style") != "plain" {
		return die(1, "the OMERO double prints only --style plain")
	}
	limit, offset := 25, 0
	if p.get("limit") != "" {
		limit, _ = strconv.Atoi(p.get("limit"))
	}
	if p.get("offset") != "" {
		offset, _ = strconv.Atoi(p.get("offset"))
	}
	if m := entryQueryRE.FindStringSubmatch(p.pos[0]); m != nil {
		ids, err := idSet(m[1])
		if err != nil {
			return err
		}
		return readSession(statePath, p, func(st *world.State, s *world.Session) error {
			all := p.has("all")
			if all && !st.UserByID(s.UserID).Admin {
				return die(53, "SecurityViolation: Current user is not an admin and cannot use '--admin'")
			}
			var rows [][]string
			for _, f := range st.Filesets {
				if !ids[f.ID] || (!all && f.GroupID != s.GroupID) {
					continue
				}
				for _, cp := range f.ClientPaths {
					rows = append(rows, []string{strconv.FormatInt(f.ID, 10), strings.TrimPrefix(cp, "/")})
				}
			}
			return printRows(rows, limit, offset)
		})
	}
	if m := pathQueryRE.FindStringSubmatch(p.pos[0]); m != nil {
		paths, err := parseLiterals(m[1])
		if err != nil {
			return err
		}
		return readSession(statePath, p, func(st *world.State, s *world.Session) error {
			var rows [][]string
			for _, f := range st.Filesets {
				if f.GroupID != s.GroupID {
					continue
				}
				for _, cp := range f.ClientPaths {
					if cp = strings.TrimPrefix(cp, "/"); paths[cp] {
						rows = append(rows, []string{strconv.FormatInt(f.ID, 10), cp})
					}
				}
			}
			return printRows(rows, limit, offset)
		})
	}
	if inPlaceQueryRE.MatchString(p.pos[0]) {
		return readSession(statePath, p, func(st *world.State, s *world.Session) error {
			all := p.has("all")
			if all && !st.UserByID(s.UserID).Admin {
				return die(53, "SecurityViolation: Current user is not an admin and cannot use '--admin'")
			}
			var rows [][]string
			for _, f := range st.Filesets {
				if f.Transfer == "" || (!all && f.GroupID != s.GroupID) {
					continue
				}
				for i, rp := range f.RepoPaths {
					size := "None"
					if i < len(f.Sizes) {
						size = strconv.FormatInt(f.Sizes[i], 10)
					}
					rows = append(rows, []string{strconv.FormatInt(f.ID, 10), size, rp})
				}
			}
			return printRows(rows, limit, offset)
		})
	}
	if m := filesQueryRE.FindStringSubmatch(p.pos[0]); m != nil {
		ids, err := idSet(m[1])
		if err != nil {
			return err
		}
		return readSession(statePath, p, func(st *world.State, s *world.Session) error {
			return printRows(originalFiles(st, s, ids), limit, offset)
		})
	}
	m := prefixQueryRE.FindStringSubmatch(p.pos[0])
	if m == nil {
		return die(1, "the OMERO double answers only: select distinct fs.templatePrefix from Image i join i.fileset fs where i.id in (…), select fe.fileset.id, fe.clientPath from FilesetEntry fe where fe.fileset.id in (…), "+filesQuery+" and "+inPlaceQuery)
	}
	ids, err := idSet(m[1])
	if err != nil {
		return err
	}
	return readSession(statePath, p, func(st *world.State, s *world.Session) error {
		fsIDs := map[int64]bool{}
		for _, img := range st.Images {
			if ids[img.ID] && img.GroupID == s.GroupID {
				fsIDs[img.FilesetID] = true
			}
		}
		seen := map[string]bool{}
		var prefixes []string
		for _, f := range st.Filesets {
			if fsIDs[f.ID] && !seen[f.TemplatePrefix] {
				seen[f.TemplatePrefix] = true
				prefixes = append(prefixes, f.TemplatePrefix)
			}
		}
		sort.Strings(prefixes)
		rows := make([][]string, len(prefixes))
		for i, pr := range prefixes {
			rows[i] = []string{pr}
		}
		return printRows(rows, limit, offset)
	})
}

// idSet parses the id list of an "in (…)" clause.
func idSet(list string) (map[int64]bool, error) {
	ids := map[int64]bool{}
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		id, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, die(52, "Bad query: QueryException: bad id %s", f)
		}
		ids[id] = true
	}
	return ids, nil
}

// originalFiles are the rows of filesQuery: one per file of each fileset in ids that the session's
// group holds, by OriginalFile id (the double's files are numbered in fileset order).
func originalFiles(st *world.State, s *world.Session, ids map[int64]bool) [][]string {
	var rows [][]string
	for _, f := range st.Filesets {
		if !ids[f.ID] || f.GroupID != s.GroupID {
			continue
		}
		for i, rp := range f.RepoPaths {
			size, hasher, hash := "None", "None", "None"
			if i < len(f.Sizes) {
				size = strconv.FormatInt(f.Sizes[i], 10)
			}
			if i < len(f.Hashes) && f.Hashes[i] != "" {
				hasher, hash = "SHA1-160", f.Hashes[i]
			}
			rows = append(rows, []string{size, hasher, hash, rp})
		}
	}
	return rows
}

// printRows prints the page [offset, offset+limit) of rows in plain style (see cmdHQL).
func printRows(rows [][]string, limit, offset int) error {
	if offset > len(rows) {
		offset = len(rows)
	}
	rows = rows[offset:]
	if len(rows) > limit {
		rows = rows[:limit]
	}
	if len(rows) == 0 {
		fmt.Println()
		return nil
	}
	lines := make([]string, len(rows))
	for i, r := range rows {
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		w.UseCRLF = true
		if err := w.Write(append([]string{strconv.Itoa(i)}, r...)); err != nil {
			return err
		}
		w.Flush()
		lines[i] = b.String()
	}
	fmt.Println(strings.Join(lines, "\n"))
	return nil
}

// parseLiterals reads a list of HQL string literals, each in single quotes, a quote inside one
// written twice.
func parseLiterals(list string) (map[string]bool, error) {
	out := map[string]bool{}
	rest := strings.TrimSpace(list)
	for rest != "" {
		if rest[0] != '\'' {
			return nil, die(52, "Bad query: QueryException: expected a string literal at %q", rest)
		}
		var b strings.Builder
		i := 1
		for ; i < len(rest); i++ {
			if rest[i] == '\'' {
				if i+1 < len(rest) && rest[i+1] == '\'' {
					b.WriteByte('\'')
					i++
					continue
				}
				break
			}
			b.WriteByte(rest[i])
		}
		if i >= len(rest) {
			return nil, die(52, "Bad query: QueryException: unterminated string literal")
		}
		out[b.String()] = true
		rest = strings.TrimSpace(rest[i+1:])
		if rest != "" {
			if rest[0] != ',' {
				return nil, die(52, "Bad query: QueryException: expected ',' at %q", rest)
			}
			rest = strings.TrimSpace(rest[1:])
		}
	}
	return out, nil
}
