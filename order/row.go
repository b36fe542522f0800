package order

import (
	"encoding/json"
	"errors"
	"strings"
)

// Row is an order as a row of the imports table holds it (a row written by hand in SQL included),
// with the imports_preprocessing row its preprocessing_id names.
type Row struct {
	UUID, Group, User              string
	DestinationType, DestinationID string
	Files                          string // the files column: a JSON list of paths
	ImportOptions                  string // the import_options column; "" when NULL
	PreprocessingID                *int64
	Preprocessing                  *Preprocessing // nil when PreprocessingID names no row
}

// ParseRow checks a row before anything runs, in this order: where to, the import options, the
// preprocessing row, the files, who, and returns the row as a Draft. It does not look at the
// files themselves (Roots.Check does). Errors are *FieldError; problems of the preprocessing row
// name imports_preprocessing and the row id.
func ParseRow(r Row) (Draft, error) {
	t, err := ParseTarget(r.DestinationType, r.DestinationID)
	if err != nil {
		return Draft{}, err
	}
	if err := CheckImportOptions(r.ImportOptions); err != nil {
		return Draft{}, err
	}
	if r.PreprocessingID != nil && r.Preprocessing == nil {
		return Draft{}, invalid("preprocessing_id", "%d names no row of imports_preprocessing", *r.PreprocessingID)
	}
	files, err := ParseFiles(r.Files)
	if err != nil {
		return Draft{}, err
	}
	d := Draft{UUID: r.UUID, Group: r.Group, User: r.User, Target: t, Files: files, Preprocessing: r.Preprocessing}
	if err := d.Validate(); err != nil {
		var fe *FieldError
		if errors.As(err, &fe) && r.Preprocessing != nil && strings.HasPrefix(fe.Field, "preprocessing.") {
			// A row of imports_preprocessing: name the table and the row.
			return Draft{}, invalid("imports_preprocessing."+strings.TrimPrefix(fe.Field, "preprocessing."), "%s (row %d)", fe.Msg, r.Preprocessing.ID)
		}
		return Draft{}, err
	}
	return d, nil
}

// CheckImportOptions checks the import_options column (BIOMERO.importer 1.4, its
// biomero_schema.imports ImportOptionsEnvelope): NULL, {} and schema 1 (registration options)
// import as always, so does schema 2 ({"schema":2,"registration":{…},"operations":[…]}) without
// operations. An operation (biomero.shallow-zarr is the only one) changes what must be imported,
// and this agent performs none: such an order fails instead of silently importing everything.
func CheckImportOptions(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return nil
	}
	var opts map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &opts); err != nil {
		return invalid("import_options", "is not a JSON object (%v): %s; write {} or NULL for a plain import", err, quoteClip(raw))
	}
	schema := 1
	if v, ok := opts["schema"]; ok && string(v) != "null" {
		if err := json.Unmarshal(v, &schema); err != nil || (schema != 1 && schema != 2) {
			return invalid("import_options", "schema %s is not supported (omero-adi reads schema 1 and 2): %s", v, quoteClip(raw))
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
			return invalid("import_options", "operations is not a list of operations (%v): %s", err, quoteClip(raw))
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
