package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/internal/fspath"
)

// Paths says where the files of an order may lie: inside the data root, and inside the group's roots
// when those are configured. Roots are compared after resolving symlinks on both sides.
type Paths struct {
	BaseDir    string
	GroupRoots map[string][]string
}

// Target is where an order's images go: a Dataset or a Screen by id, or a Dataset by name.
type Target struct {
	Kind string // "Dataset" or "Screen"
	ID   int64  // 0 when Name is set
	Name string // Dataset found or created by name (destination_id "name:NAME")
}

// String is the form of the destination used in descriptions: "Dataset 151", "Dataset named \"x\"".
func (t Target) String() string {
	if t.Name != "" {
		return fmt.Sprintf("%s named %q", t.Kind, t.Name)
	}
	return fmt.Sprintf("%s %d", t.Kind, t.ID)
}

// Checked is an order that passed validation: its files resolved and its target parsed.
type Checked struct {
	Order db.Order
	Files []string // as given, cleaned, absolute
	Real  []string // Files after resolving symlinks (what the import reads)
	Dirs  []bool   // Files[i] is a directory
	Target
}

// ValidationError is a problem with an order's row that a person must fix; the message names the
// field and the value and says what to do.
type ValidationError struct{ Field, Msg string }

func (e *ValidationError) Error() string { return e.Field + ": " + e.Msg }

// ErrInvalidOrder is matched by every ValidationError.
var ErrInvalidOrder = errors.New("invalid order")

func (e *ValidationError) Is(target error) bool { return target == ErrInvalidOrder }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

var numericID = regexp.MustCompile(`^[0-9]+$`)

// Validate checks an order row before anything runs: who, where to, and that every file resolves
// inside the allowed roots, exists and is readable. It reads the files' metadata and never changes them.
func (p Paths) Validate(o db.Order) (Checked, error) {
	c := Checked{Order: o}
	if strings.TrimSpace(o.User) == "" {
		return c, invalid("user_name", "is empty; set the OMERO user the import runs as")
	}
	if hasControl(o.User) {
		return c, invalid("user_name", "%q contains control characters", o.User)
	}
	if strings.TrimSpace(o.Group) == "" {
		return c, invalid("group_name", "is empty; set the OMERO group to import into")
	}
	if hasControl(o.Group) {
		return c, invalid("group_name", "%q contains control characters", o.Group)
	}
	t, err := parseTarget(o.DestinationType, o.DestinationID)
	if err != nil {
		return c, err
	}
	c.Target = t
	if err := checkImportOptions(o.ImportOptions); err != nil {
		return c, err
	}
	if o.PreprocessingID != nil {
		if o.Preprocessing == nil {
			return c, invalid("preprocessing_id", "%d names no row of imports_preprocessing", *o.PreprocessingID)
		}
		if strings.TrimSpace(o.Preprocessing.Container) == "" {
			return c, invalid("imports_preprocessing.container", "is empty in row %d; name the container image", *o.PreprocessingID)
		}
	}
	if i := invalidUTF8(o.Files); i >= 0 {
		return c, invalid("files", "is not valid UTF-8 text (byte %#x at offset %d): OMERO takes UTF-8 file names only; rename the file and fix the row", o.Files[i], i)
	}
	var files []string
	if err := json.Unmarshal([]byte(o.Files), &files); err != nil {
		return c, invalid("files", "is not a JSON list of paths (%v): %s", err, quoteShort(o.Files))
	}
	if len(files) == 0 {
		return c, invalid("files", "lists no file")
	}
	roots, err := p.roots(o.Group)
	if err != nil {
		return c, err
	}
	for i, f := range files {
		field := fmt.Sprintf("files[%d]", i)
		real, dir, err := checkFile(field, f, roots)
		if err != nil {
			return c, err
		}
		c.Files = append(c.Files, filepath.Clean(f))
		c.Real = append(c.Real, real)
		c.Dirs = append(c.Dirs, dir)
	}
	return c, nil
}

// checkImportOptions checks imports.import_options (BIOMERO.importer 1.4, its
// biomero_schema.imports ImportOptionsEnvelope): NULL, {} and schema 1 (registration options)
// import as always, so does schema 2 ({"schema":2,"registration":{…},"operations":[…]}) without
// operations. An operation (biomero.shallow-zarr is the only one) changes what must be imported,
// and this agent performs none: such an order fails instead of silently importing everything.
func checkImportOptions(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &opts); err != nil {
		return invalid("import_options", "is not a JSON object (%v): %s; write {} or NULL for a plain import", err, quoteShort(raw))
	}
	schema := 1
	if v, ok := opts["schema"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &schema); err != nil || (schema != 1 && schema != 2) {
			return invalid("import_options", "schema %s is not supported (omero-adi reads schema 1 and 2): %s", v, quoteShort(raw))
		}
	}
	if schema == 1 {
		return nil
	}
	var ops []struct {
		Kind string `json:"kind"`
	}
	if v, ok := opts["operations"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &ops); err != nil {
			return invalid("import_options", "operations is not a list of operations (%v): %s", err, quoteShort(raw))
		}
	}
	if len(ops) > 0 {
		kinds := make([]string, len(ops))
		for i, op := range ops {
			kinds[i] = op.Kind
			if op.Kind == "" {
				kinds[i] = "(no kind)"
			}
		}
		return invalid("import_options", "asks for operation %s, which omero-adi does not perform (it imports the files as they are); "+
			"remove the operations from import_options for a plain import, or run the order with BIOMERO.importer", strings.Join(kinds, ", "))
	}
	return nil
}

// ParseTarget parses destination_type and destination_id as the table contract allows them.
func ParseTarget(destType, destID string) (Target, error) { return parseTarget(destType, destID) }

func parseTarget(destType, destID string) (Target, error) {
	var t Target
	switch strings.ToLower(strings.TrimSpace(destType)) {
	case "dataset":
		t.Kind = "Dataset"
	case "screen":
		t.Kind = "Screen"
	default:
		return t, invalid("destination_type", "%q is neither Dataset nor Screen", destType)
	}
	id := strings.TrimSpace(destID)
	switch {
	case numericID.MatchString(id):
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n <= 0 {
			return t, invalid("destination_id", "%q is not a valid %s id", destID, t.Kind)
		}
		t.ID = n
	case strings.HasPrefix(id, "name:"):
		t.Name = strings.TrimPrefix(id, "name:")
		if strings.TrimSpace(t.Name) == "" || hasControl(t.Name) {
			return t, invalid("destination_id", "%q names no usable %s name", destID, t.Kind)
		}
		if t.Kind != "Dataset" {
			return t, invalid("destination_id", "%q: only Datasets can be chosen by name; give the Screen's numeric id", destID)
		}
	default:
		return t, invalid("destination_id", "%q is neither a numeric %s id nor name:NAME", destID, t.Kind)
	}
	return t, nil
}

// roots returns the resolved directories an order of this group may read from.
func (p Paths) roots(group string) ([]string, error) {
	base, err := filepath.EvalSymlinks(p.BaseDir)
	if err != nil {
		return nil, fmt.Errorf("resolve base_dir %q: %w", p.BaseDir, err)
	}
	gr := p.GroupRoots[group]
	if len(gr) == 0 {
		return []string{base}, nil
	}
	var out []string
	for _, r := range gr {
		rr, err := filepath.EvalSymlinks(r)
		if err != nil {
			continue // a root that does not exist holds no file
		}
		if fspath.Within(base, rr) {
			out = append(out, rr)
		}
	}
	if len(out) == 0 {
		return nil, invalid("group_name", "group %q has no existing root inside base_dir %q (settings groups.%s.roots)", group, p.BaseDir, group)
	}
	return out, nil
}

func checkFile(field, f string, roots []string) (real string, dir bool, err error) {
	if f == "" {
		return "", false, invalid(field, "is empty")
	}
	if len(f) > maxPath {
		return "", false, invalid(field, "is a path of %d bytes, longer than any path can be (%d): %s; fix the row", len(f), maxPath, quoteShort(f))
	}
	if hasControl(f) {
		return "", false, invalid(field, "%s contains a line break or another control character, which OMERO's importer cannot take; rename the file", quoteShort(f))
	}
	if !filepath.IsAbs(f) {
		return "", false, invalid(field, "%s is not an absolute path; give the full path below the data root", quoteShort(f))
	}
	if hasDotDot(f) {
		return "", false, invalid(field, "%s contains \"..\"; give the path without it", quoteShort(f))
	}
	real, err = filepath.EvalSymlinks(f)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", false, invalid(field, "%s does not exist (moved or deleted?); fix the path and retry", quoteShort(f))
		}
		return "", false, invalid(field, "%s cannot be resolved: %v", quoteShort(f), err)
	}
	inside := false
	for _, r := range roots {
		if fspath.Within(r, real) {
			inside = true
			break
		}
	}
	if !inside {
		if real != filepath.Clean(f) {
			return "", false, invalid(field, "%s resolves to %s, outside the allowed roots %s; only files below them can be imported", quoteShort(f), quoteShort(real), strings.Join(roots, ", "))
		}
		return "", false, invalid(field, "%s is outside the allowed roots %s; only files below them can be imported", quoteShort(f), strings.Join(roots, ", "))
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", false, invalid(field, "%s cannot be read: %v", quoteShort(f), err)
	}
	if fi.IsDir() {
		d, err := os.Open(real)
		if err == nil {
			_, err = d.Readdirnames(1)
			d.Close()
		}
		if err != nil && err != io.EOF {
			return "", false, invalid(field, "folder %s cannot be listed: %v; check its permissions", quoteShort(f), err)
		}
		return real, true, nil
	}
	if !fi.Mode().IsRegular() {
		return "", false, invalid(field, "%s is not a regular file or folder", quoteShort(f))
	}
	fh, err := os.Open(real)
	if err != nil {
		return "", false, invalid(field, "%s cannot be read: %v; check its permissions", quoteShort(f), err)
	}
	fh.Close()
	return real, false, nil
}

// maxPath is the longest path Linux takes (PATH_MAX).
const maxPath = 4096

// invalidUTF8 returns the offset of the first byte of s that is not UTF-8, or -1.
func invalidUTF8(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return i
			}
		}
	}
	return -1
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

func quoteShort(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
