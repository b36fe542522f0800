package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"

	"github.com/omero-adi/omero-adi/order"
)

// newest restricts imports i to the newest row of each uuid (old databases hold one row per stage).
const newest = `i.id = (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = i.uuid)`

// importCols are the imports columns an Order is scanned from, with table prefix p ("i." or "").
// Columns a Python-era database may type differently are read as text.
func importCols(p string) string {
	c := []string{"id", "uuid", "~group_name", "~user_name", "~destination_id", "~destination_type", "stage",
		"timestamp", "~files", "~file_names", "description", "preprocessing_id", "source", "attempt",
		"lease_owner", "lease_expires", "not_before", "cancel_requested", "result", "import_options"}
	for i, x := range c {
		if col, ok := strings.CutPrefix(x, "~"); ok {
			c[i] = "CAST(" + p + col + " AS TEXT)"
		} else {
			c[i] = p + x
		}
	}
	return strings.Join(c, ", ")
}

// orderCols is importCols of i plus the preprocessing row p (LEFT JOIN).
var orderCols = importCols("i.") + `, p.id, p.container, p.input_file, p.output_folder,
	p.alt_output_folder, CAST(p.extra_params AS TEXT)`

// noPreprocessingCols stands in for the preprocessing columns where the join is not possible.
const noPreprocessingCols = `, NULL, NULL, NULL, NULL, NULL, NULL`

// watchItemSQL reads the uuid of the order of a watch key: $1 rule, $2 path, $3 fingerprint.
const watchItemSQL = `SELECT uuid FROM adi_watch_items WHERE rule = $1 AND path = $2 AND fingerprint = $3`

const orderFrom = ` FROM imports i LEFT JOIN imports_preprocessing p ON p.id = i.preprocessing_id `

type rowScanner interface{ Scan(dest ...any) error }

func scanOrder(r rowScanner) (Order, error) {
	var (
		o                                           Order
		group, user, destID, destType, stage, files sql.NullString
		fileNames, desc, source, owner, result      sql.NullString
		importOptions                               sql.NullString
		ts, expires, notBefore                      nullTime
		ppID, pID, attempt                          sql.NullInt64
		cancel                                      sql.NullBool
		container, input, output, alt, extra        sql.NullString
	)
	err := r.Scan(&o.ID, &o.UUID, &group, &user, &destID, &destType, &stage, &ts, &files, &fileNames,
		&desc, &ppID, &source, &attempt, &owner, &expires, &notBefore, &cancel, &result,
		&importOptions, &pID, &container, &input, &output, &alt, &extra)
	if err != nil {
		return Order{}, err
	}
	o.Group, o.User, o.DestinationID, o.DestinationType = group.String, user.String, destID.String, destType.String
	o.Stage, o.Files, o.FileNames, o.Description = stage.String, files.String, fileNames.String, desc.String
	o.Timestamp = ts.Time
	o.ImportOptions, o.HasImportOptions = importOptions.String, importOptions.Valid
	o.Source = source.String
	if !source.Valid {
		o.Source = SourceSQL
	}
	o.Attempt = int(attempt.Int64)
	o.LeaseOwner = owner.String
	o.LeaseExpires = expires.ptr()
	o.NotBefore = notBefore.ptr()
	o.CancelRequested = cancel.Bool
	if ppID.Valid {
		id := ppID.Int64
		o.PreprocessingID = &id
	}
	if result.Valid && result.String != "" {
		var res Result
		if err := json.Unmarshal([]byte(result.String), &res); err == nil {
			o.Result = &res
		}
	}
	if pID.Valid {
		o.Preprocessing = newPreprocessing(pID.Int64, container, input, output, alt, extra)
	}
	return o, nil
}

func newPreprocessing(id int64, container, input, output, alt, extra sql.NullString) *order.Preprocessing {
	p := &order.Preprocessing{ID: id, Container: container.String, InputFile: input.String,
		OutputFolder: output.String, AltOutputFolder: alt.String, ExtraParamsRaw: extra.String}
	if extra.Valid && strings.TrimSpace(extra.String) != "" {
		p.ExtraParams, _ = decodeExtraParams(extra.String)
	}
	return p
}

// decodeExtraParams decodes the extra_params JSON object; values that are not strings are written
// as their JSON text (numbers, booleans) so that the container gets what a person typed.
func decodeExtraParams(raw string) (map[string]string, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		var s string
		if err := json.Unmarshal(v, &s); err == nil {
			out[k] = s
			continue
		}
		out[k] = string(v)
	}
	return out, nil
}

// validate checks an order before it is written, with the rules of package order.
func (n NewOrder) validate() error {
	if err := n.Draft.Validate(); err != nil {
		return fmt.Errorf("%w order: %w", ErrInvalid, err)
	}
	if k := n.WatchKey; k != nil && (k.Rule == "" || k.Path == "" || k.Fingerprint == "") {
		return fmt.Errorf("%w order: watch key %q: rule, path and fingerprint must be set", ErrInvalid, fmt.Sprintf("%s|%s|%s", k.Rule, k.Path, k.Fingerprint))
	}
	return nil
}

// CreateOrder validates n and writes it as a pending order (with its preprocessing row and watch
// key, in one transaction). When n.WatchKey already has an order, nothing is written and that
// order is returned with created=false. Invalid input returns an error wrapping ErrInvalid.
func (s *Store) CreateOrder(ctx context.Context, n NewOrder) (o Order, created bool, err error) {
	if err := n.validate(); err != nil {
		return Order{}, false, err
	}
	if n.UUID == "" {
		n.UUID = uuid.NewString()
	}
	if n.Source == "" {
		n.Source = SourceCLI
	}
	files, _ := json.Marshal(n.Files)
	var fileNames any
	if n.FileNames != nil {
		b, _ := json.Marshal(n.FileNames)
		fileNames = string(b)
	}
	var existing string
	err = s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		existing, err = s.insertOrder(ctx, tx, n, string(files), fileNames)
		return err
	})
	if err != nil {
		return Order{}, false, fmt.Errorf("create order: %w", err)
	}
	if existing != "" {
		o, err := s.Get(ctx, existing)
		if err != nil {
			return Order{}, false, fmt.Errorf("create order: watch item %s %s has order %s: %w",
				n.WatchKey.Rule, n.WatchKey.Path, existing, err)
		}
		return o, false, nil
	}
	s.signal()
	o, err = s.Get(ctx, n.UUID)
	if err != nil {
		return Order{}, false, fmt.Errorf("create order: %w", err)
	}
	s.log.WithFields(map[string]any{"order": o.UUID, "source": o.Source}).Debug("order created")
	return o, true, nil
}

// insertOrder writes the order in tx, or returns the uuid of the existing order of n.WatchKey.
func (s *Store) insertOrder(ctx context.Context, tx *sql.Tx, n NewOrder, files string, fileNames any) (string, error) {
	if k := n.WatchKey; k != nil {
		res, err := tx.ExecContext(ctx, s.st.insertWatchItem, k.Rule, k.Path, k.Fingerprint, n.UUID)
		if err != nil {
			return "", fmt.Errorf("insert watch item: %w", err)
		}
		if c, _ := res.RowsAffected(); c == 0 {
			var existing string
			err := tx.QueryRowContext(ctx, watchItemSQL, k.Rule, k.Path, k.Fingerprint).Scan(&existing)
			if err != nil {
				return "", fmt.Errorf("read watch item: %w", err)
			}
			return existing, nil
		}
	}
	var ppID any
	if p := n.Preprocessing; p != nil {
		var extra any
		switch {
		case p.ExtraParams != nil:
			b, _ := json.Marshal(p.ExtraParams)
			extra = string(b)
		case p.ExtraParamsRaw != "":
			extra = p.ExtraParamsRaw
		}
		var alt any
		if p.AltOutputFolder != "" {
			alt = p.AltOutputFolder
		}
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO imports_preprocessing
			(container, input_file, output_folder, alt_output_folder, extra_params)
			VALUES ($1, $2, $3, $4, $5) RETURNING id`, p.Container, p.InputFile, p.OutputFolder, alt, extra).Scan(&id)
		if err != nil {
			return "", fmt.Errorf("insert preprocessing: %w", err)
		}
		ppID = id
	}
	var desc any
	if n.Description != "" {
		desc = n.Description
	}
	var rowID int64
	err := tx.QueryRowContext(ctx, s.st.insertOrder,
		n.Group, n.User, n.Target.IDColumn(), n.Target.Kind, n.UUID, files, fileNames, desc, ppID, n.Source).Scan(&rowID)
	if err != nil {
		return "", fmt.Errorf("insert order: %w", err)
	}
	_, err = tx.ExecContext(ctx, s.st.insertCreated, n.UUID, s.opts.Worker, "created by "+n.Source, rowID)
	if err != nil {
		return "", fmt.Errorf("insert history: %w", err)
	}
	return "", nil
}

// Get returns the order uuid (its newest row), or an error wrapping ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Order, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+orderCols+orderFrom+`WHERE i.uuid = $1 ORDER BY i.id DESC LIMIT 1`, id)
	o, err := scanOrder(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, fmt.Errorf("get order %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, nil
}

// List returns the newest row of each order that matches f, newest order first.
func (s *Store) List(ctx context.Context, f Filter) ([]Order, error) {
	q := `SELECT ` + orderCols + orderFrom + `WHERE ` + newest
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s = $%d", cond, len(args))
	}
	if f.Stage != "" {
		add("i.stage", f.Stage)
	}
	if f.Group != "" {
		add("i.group_name", f.Group)
	}
	if f.User != "" {
		add("i.user_name", f.User)
	}
	q += " ORDER BY i.id DESC"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, fmt.Errorf("list orders: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// History returns the events of order uuid, oldest first: the older rows of a multi-row order
// written by the Python service before the history began (worker "legacy"), then the history
// table, where a row appended later by another writer is recorded once (its import_id).
func (s *Store) History(ctx context.Context, id string) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `
		SELECT 0 AS src, i.id, i.stage, i.timestamp, 'legacy', COALESCE(i.description, '') FROM imports i
		WHERE i.uuid = $1 AND i.id < (SELECT max(i2.id) FROM imports i2 WHERE i2.uuid = $1)
		AND NOT EXISTS (SELECT 1 FROM adi_history h WHERE h.import_id = i.id)
		UNION ALL
		SELECT 1 AS src, h.id, h.stage, h.at, h.worker, h.description FROM adi_history h WHERE h.uuid = $1
		ORDER BY 1, 2`, id)
	if err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var (
			src, rowID int64
			e          Event
			at         nullTime
		)
		if err := rows.Scan(&src, &rowID, &e.Stage, &at, &e.Worker, &e.Description); err != nil {
			return nil, fmt.Errorf("read history of %s: %w", id, err)
		}
		e.UUID, e.At = id, at.Time
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history of %s: %w", id, err)
	}
	return out, nil
}

// AddEvent appends a history row for order uuid (e.g. "annotation failed: …"); stage is the
// order's current stage. It returns an error wrapping ErrNotFound for an unknown uuid.
func (s *Store) AddEvent(ctx context.Context, id, stage, description string) error {
	n, err := s.exec(ctx, s.st.addEvent, id, stage, s.opts.Worker, description)
	if err != nil {
		return fmt.Errorf("add event to %s: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("add event to %s: %w", id, ErrNotFound)
	}
	return nil
}

// stageError explains why order id cannot do what was asked: ErrNotFound, or ErrStage naming the
// current stage.
func (s *Store) stageError(ctx context.Context, op, id string) error {
	o, err := s.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("%s order %s: %w", op, id, err)
	}
	return fmt.Errorf("%s order %s in stage %q: %w", op, id, o.Stage, ErrStage)
}

// Retry puts a failed or cancelled order back to pending, dropping lease, backoff and cancel
// flag. Its result stays: the runner imports only the files that are not in OMERO yet. Other
// stages return ErrStage.
func (s *Store) Retry(ctx context.Context, id string) (Order, error) {
	return s.retry(ctx, id, s.st.retry, "retry requested")
}

// RetryAll is Retry of every file of the order: it also clears the order's result, so the runner
// imports every file again, also those already in OMERO (the history keeps what the result held).
func (s *Store) RetryAll(ctx context.Context, id string) (Order, error) {
	desc := "retry of every file requested (--all)"
	if o, err := s.Get(ctx, id); err == nil && o.Result != nil && len(o.Result.Filesets)+len(o.Result.Images)+len(o.Result.Plates) > 0 {
		desc += "; the earlier attempts' objects stay in OMERO: " + objects(o.Result.Filesets, o.Result.Images, o.Result.Plates)
	}
	return s.retry(ctx, id, s.st.retryAll, desc)
}

func (s *Store) retry(ctx context.Context, id, st, desc string) (Order, error) {
	n, err := s.eng.change(ctx, st, []any{id}, s.opts.Worker, desc)
	if err != nil {
		return Order{}, fmt.Errorf("retry order %s: %w", id, err)
	}
	if n == 0 {
		return Order{}, s.stageError(ctx, "retry", id)
	}
	s.signal()
	return s.Get(ctx, id)
}

// Cancel cancels a pending order at once, and asks the worker of a running order to stop (its
// next heartbeat reports it). Other stages return ErrStage.
func (s *Store) Cancel(ctx context.Context, id string) (Order, error) {
	n, err := s.eng.change(ctx, s.st.cancelPending, []any{id}, s.opts.Worker, "cancelled before it started")
	if err != nil {
		return Order{}, fmt.Errorf("cancel order %s: %w", id, err)
	}
	if n == 0 {
		c, err := s.exec(ctx, s.st.cancelRunning, id)
		if err != nil {
			return Order{}, fmt.Errorf("cancel order %s: %w", id, err)
		}
		if c == 0 {
			return Order{}, s.stageError(ctx, "cancel", id)
		}
		o, err := s.Get(ctx, id)
		if err != nil {
			return Order{}, err
		}
		if err := s.AddEvent(ctx, id, o.Stage, "cancel requested"); err != nil {
			return Order{}, err
		}
		return o, nil
	}
	return s.Get(ctx, id)
}

// WatchItems returns the watch items of rule with the given fingerprint (the watcher's rename
// detection: same content under another path).
func (s *Store) WatchItems(ctx context.Context, rule, fingerprint string) ([]WatchItem, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT rule, path, fingerprint, uuid, created FROM adi_watch_items
		WHERE rule = $1 AND fingerprint = $2 ORDER BY created, path`, rule, fingerprint)
	if err != nil {
		return nil, fmt.Errorf("read watch items of rule %s: %w", rule, err)
	}
	defer rows.Close()
	var out []WatchItem
	for rows.Next() {
		var (
			w       WatchItem
			created nullTime
		)
		if err := rows.Scan(&w.Rule, &w.Path, &w.Fingerprint, &w.UUID, &created); err != nil {
			return nil, fmt.Errorf("read watch items of rule %s: %w", rule, err)
		}
		w.Created = created.Time
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read watch items of rule %s: %w", rule, err)
	}
	return out, nil
}

// HasWatchItemSignature reports whether rule has an order for path whose fingerprint begins with
// signature (a file's "size:mtime:", which the watcher knows without reading the file). The
// unique index on (rule, path, fingerprint) narrows the lookup to the path's few items.
func (s *Store) HasWatchItemSignature(ctx context.Context, rule, path, signature string) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM adi_watch_items
		WHERE rule = $1 AND path = $2 AND fingerprint LIKE $3 ESCAPE '\' LIMIT 1`, rule, path, likePrefix(signature)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read watch item %s %s: %w", rule, path, err)
	}
	return true, nil
}

// likePrefix is a LIKE pattern (escape character backslash) matching the strings that begin
// with prefix.
func likePrefix(prefix string) string { return likeEscaper.Replace(prefix) + "%" }

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

// HasWatchItem returns the uuid of the order created for k, if any.
func (s *Store) HasWatchItem(ctx context.Context, k WatchKey) (string, bool, error) {
	var id string
	err := s.db.QueryRowContext(ctx, watchItemSQL, k.Rule, k.Path, k.Fingerprint).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read watch item %s %s: %w", k.Rule, k.Path, err)
	}
	return id, true, nil
}

// DryRunPrefix starts the description of every order a dry run ended.
const DryRunPrefix = "dry run:"

// NotDryRun counts the orders a dry run did not make, and names the newest of them (its uuid and
// stage; empty when n is 0). A dry run's orders are those it ended (description DryRunPrefix …)
// and pending orders of its own kinds, `orders create` and watch rules (source other than
// SourceSQL); everything else counts: orders of the web plugin or hand-written SQL, orders
// running or ended otherwise.
func (s *Store) NotDryRun(ctx context.Context) (n int, newestUUID, newestStage string, err error) {
	foreign := ` FROM imports WHERE COALESCE(description, '') NOT LIKE '` + DryRunPrefix + `%'` +
		` AND NOT (stage = '` + StagePending + `' AND COALESCE(source, '` + SourceSQL + `') <> '` + SourceSQL + `')`
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(DISTINCT uuid)`+foreign).Scan(&n); err != nil {
		return 0, "", "", fmt.Errorf("count orders no dry run made: %w", err)
	}
	if n == 0 {
		return 0, "", "", nil
	}
	err = s.db.QueryRowContext(ctx, `SELECT uuid, stage`+foreign+` ORDER BY id DESC LIMIT 1`).Scan(&newestUUID, &newestStage)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, "", "", fmt.Errorf("read the newest order no dry run made: %w", err)
	}
	return n, newestUUID, newestStage, nil
}
