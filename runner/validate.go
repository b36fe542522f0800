package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/omero-adi/omero-adi/db"
	"github.com/omero-adi/omero-adi/order"
)

// checked is an order that passed validation: its target parsed and its files resolved.
type checked struct {
	db.Order
	Target order.Target
	Files  []order.File
}

// ErrInvalidOrder is matched by every problem with an order's row that a person must fix (an
// *order.FieldError: it names the field and the value and says what to do).
var ErrInvalidOrder = order.ErrInvalid

func invalid(field, format string, args ...any) error {
	return &order.FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// validate checks an order row before anything runs, with the rules of package order: who, where
// to, the import options, the preprocessing row, and that every file resolves inside the allowed
// roots, exists and is readable. It reads the files' metadata and never changes them.
func validate(roots order.Roots, o db.Order) (checked, error) {
	c := checked{Order: o}
	t, err := order.ParseTarget(o.DestinationType, o.DestinationID)
	if err != nil {
		return c, err
	}
	c.Target = t
	if err := checkImportOptions(o.ImportOptions); err != nil {
		return c, err
	}
	if o.PreprocessingID != nil && o.Preprocessing == nil {
		return c, invalid("preprocessing_id", "%d names no row of imports_preprocessing", *o.PreprocessingID)
	}
	files, err := order.ParseFiles(o.Files)
	if err != nil {
		return c, err
	}
	d := order.Draft{UUID: o.UUID, Group: o.Group, User: o.User, Target: t, Files: files, Preprocessing: o.Preprocessing}
	if err := d.Validate(); err != nil {
		var fe *order.FieldError
		if errors.As(err, &fe) && o.Preprocessing != nil && strings.HasPrefix(fe.Field, "preprocessing.") {
			// A row of imports_preprocessing: name the table and the row.
			return c, invalid("imports_preprocessing."+strings.TrimPrefix(fe.Field, "preprocessing."), "%s (row %d)", fe.Msg, o.Preprocessing.ID)
		}
		return c, err
	}
	c.Files, err = roots.Check(o.Group, files)
	return c, err
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

func quoteShort(s string) string {
	const max = 200
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
