// Package order owns what an import order is, whoever writes it: where its images go (Target),
// its preprocessing step, the draft of a new order and its validation, where its files may lie
// (Roots), and which of its paths are OME-Zarr with what to do about them (ZarrRoot, PlanZarrs).
// A watch rule, `omero-adi orders create`, a row written by hand in SQL and the runner all use
// these parsers, so that one destination gets one verdict everywhere. It also holds the path
// tests every part shares (Within, Below) and the one way a long value is cut for people (Clip).
// It imports nothing of this module.
package order

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrInvalid is matched (errors.Is) by every *FieldError.
var ErrInvalid = errors.New("invalid order")

// FieldError is a problem with one field of an order that a person must fix: Field is the column
// or key ("destination_id", "files[2]", "preprocessing.container"), Msg names the value and says
// what to do.
type FieldError struct{ Field, Msg string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Kinds of destination (the imports.destination_type column).
const (
	Dataset = "Dataset"
	Screen  = "Screen"
)

// Target is where an order's images go: a Dataset or a Screen, by id or by name. A name target
// imports into the container of that name the user can see, created when there is none (OMERO's
// `omero import -T Dataset:name:NAME` / `-T Screen:name:NAME`).
type Target struct {
	Kind string // Dataset or Screen
	ID   int64  // > 0, or 0 when Name is set
	Name string // the container's name; "" when ID is set
}

// ParseTarget parses the destination_type and destination_id columns: a kind of Dataset or Screen
// (any case), and a positive numeric id or name:NAME. Errors are *FieldError naming the column.
func ParseTarget(kind, id string) (Target, error) {
	var t Target
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case "dataset":
		t.Kind = Dataset
	case "screen":
		t.Kind = Screen
	default:
		return t, invalid("destination_type", "%q is neither Dataset nor Screen", kind)
	}
	v := strings.TrimSpace(id)
	if name, ok := strings.CutPrefix(v, "name:"); ok {
		if strings.TrimSpace(name) == "" {
			return t, invalid("destination_id", "%q names no %s; write name:NAME", id, t.Kind)
		}
		if hasControl(name) {
			return t, invalid("destination_id", "%s: the %s name contains a line break or another control character", quoteClip(id), t.Kind)
		}
		t.Name = name
		return t, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || strings.TrimLeft(v, "0123456789") != "" {
		return t, invalid("destination_id", "%s is neither a positive %s id nor name:NAME", quoteClip(id), t.Kind)
	}
	t.ID = n
	return t, nil
}

// ParseDestination parses the one-string form of a rule's destination: Dataset:ID, Screen:ID,
// Dataset:name:NAME or Screen:name:NAME. Errors are *FieldError with Field "destination".
func ParseDestination(s string) (Target, error) {
	const forms = "Dataset:ID, Screen:ID, Dataset:name:NAME or Screen:name:NAME"
	if strings.TrimSpace(s) == "" {
		return Target{}, invalid("destination", "required (%s)", forms)
	}
	kind, id, ok := strings.Cut(s, ":")
	if !ok {
		return Target{}, invalid("destination", "%q is not one of %s", s, forms)
	}
	t, err := ParseTarget(kind, id)
	if err != nil {
		var fe *FieldError
		errors.As(err, &fe)
		return t, invalid("destination", "%q: %s", s, fe.Msg)
	}
	return t, nil
}

// TypeColumn is the destination_type column of t.
func (t Target) TypeColumn() string { return t.Kind }

// IDColumn is the destination_id column of t: "151" or "name:NAME".
func (t Target) IDColumn() string {
	if t.ID == 0 && t.Name != "" {
		return "name:" + t.Name
	}
	return strconv.FormatInt(t.ID, 10)
}

// String is the form used in descriptions: `Dataset 151`, `Dataset named "x"`.
func (t Target) String() string {
	if t.ID == 0 && t.Name != "" {
		return fmt.Sprintf("%s named %q", t.Kind, t.Name)
	}
	return fmt.Sprintf("%s %d", t.Kind, t.ID)
}

// Draft is a new order before it is stored: what a rule makes of a settled unit, what `orders
// create` makes of its flags.
type Draft struct {
	UUID          string // generated when empty
	Group         string
	User          string
	Target        Target
	Files         []string // absolute paths
	FileNames     []string // optional
	Description   string
	Source        string         // the rule name, "cli" or "sql"
	Preprocessing *Preprocessing // nil without preprocessing
}

// Validate checks what can be checked without the filesystem; errors are *FieldError.
func (d Draft) Validate() error {
	if err := checkWho(d.User, d.Group); err != nil {
		return err
	}
	if _, err := ParseTarget(d.Target.Kind, d.Target.IDColumn()); err != nil {
		return err
	}
	if len(d.Files) == 0 {
		return invalid("files", "lists no file")
	}
	for i, f := range d.Files {
		if err := checkPath(fmt.Sprintf("files[%d]", i), f); err != nil {
			return err
		}
	}
	if d.UUID != "" && (len(d.UUID) > 36 || strings.TrimSpace(d.UUID) != d.UUID || hasControl(d.UUID)) {
		return invalid("uuid", "%q: want at most 36 characters without spaces", d.UUID)
	}
	if d.Preprocessing != nil {
		return d.Preprocessing.Check()
	}
	return nil
}

// checkWho checks the user_name and group_name columns.
func checkWho(user, group string) error {
	switch {
	case strings.TrimSpace(user) == "":
		return invalid("user_name", "is empty; set the OMERO user the import runs as")
	case hasControl(user):
		return invalid("user_name", "%q contains control characters", user)
	case strings.TrimSpace(group) == "":
		return invalid("group_name", "is empty; set the OMERO group to import into")
	case hasControl(group):
		return invalid("group_name", "%q contains control characters", group)
	}
	return nil
}

// maxPath is the longest path Linux takes (PATH_MAX).
const maxPath = 4096

// checkPath checks the form of one file of an order (not its existence).
func checkPath(field, f string) error {
	switch {
	case f == "":
		return invalid(field, "is empty")
	case len(f) > maxPath:
		return invalid(field, "is a path of %d bytes, longer than any path can be (%d): %s; fix the row", len(f), maxPath, quoteClip(f))
	case !utf8.ValidString(f):
		return invalid(field, "%s is not valid UTF-8: OMERO takes UTF-8 file names only; rename the file", quoteClip(f))
	case hasControl(f):
		return invalid(field, "%s contains a line break or another control character, which OMERO's importer cannot take; rename the file", quoteClip(f))
	case !filepath.IsAbs(f):
		return invalid(field, "%s is not an absolute path; give the full path below the data root", quoteClip(f))
	case hasDotDot(f):
		return invalid(field, "%s contains \"..\"; give the path without it", quoteClip(f))
	}
	return nil
}

func hasDotDot(p string) bool {
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return true
		}
	}
	return false
}

func hasControl(s string) bool { return strings.IndexFunc(s, unicode.IsControl) >= 0 }

// Clip is s cut to at most n bytes, at a character boundary, with "…" appended when it was cut:
// how a long value (a path, a column, a program's output) appears in a text for people.
func Clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for i := 1; i < utf8.UTFMax && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return s[:n] + "…"
}

// quoteClip quotes a value of an order for its description, cut to 200 bytes.
func quoteClip(s string) string { return strconv.Quote(Clip(s, 200)) }
