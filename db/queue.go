package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

// queries holds the statements whose text depends on the engine, built once per Store.
type queries struct {
	claim         string // PostgreSQL: the whole claim; SQLite: the UPDATE … RETURNING
	claimHistory  string // SQLite only
	preprocessing string
}

func buildQueries(driver string) queries {
	var q queries
	if driver == DriverPostgres {
		// adi_claim (migration 0001) runs the claim with the right plan; see its comment.
		q.claim = sqlFor(driver, `SELECT `+orderCols+` FROM adi_claim($1, $2, $3) i
			LEFT JOIN imports_preprocessing p ON p.id = i.preprocessing_id ORDER BY i.id`)
	} else {
		pending := `i.stage = 'Import Pending' AND (i.not_before IS NULL OR i.not_before <= {now}) AND ` + newest
		q.claim = sqlFor(driver, `UPDATE imports SET stage = 'Import Started', attempt = attempt + 1,
			lease_owner = $1, lease_expires = {now+$3}, cancel_requested = false, not_before = NULL, timestamp = {now}
			WHERE id IN (SELECT i.id FROM imports i WHERE `+pending+` ORDER BY i.id LIMIT $2)
			RETURNING `+importCols("")+noPreprocessingCols)
		q.claimHistory = sqlFor(driver, `INSERT INTO adi_history (uuid, stage, at, worker, description)
			SELECT uuid, stage, {now}, $1, 'claimed, attempt ' || attempt FROM imports
			WHERE id IN (SELECT value FROM json_each($2))`)
	}
	q.preprocessing = sqlFor(driver, `SELECT id, container, input_file, output_folder, alt_output_folder,
		{text:extra_params} FROM imports_preprocessing WHERE id = $1`)
	return q
}

// sql returns the engine's spelling of an engine-neutral query (see sqlFor), cached.
func (s *Store) sql(q string) string {
	if v, ok := s.sqlCache.Load(q); ok {
		return v.(string)
	}
	out := sqlFor(s.driver, q)
	s.sqlCache.Store(q, out)
	return out
}

// fence is the condition of every write by the worker holding a lease: $1 uuid, $2 owner,
// $3 attempt, and the order still running.
const fence = `uuid = $1 AND lease_owner = $2 AND attempt = $3 AND stage IN ('Import Started', 'Import Preprocessing')`

func fenceArgs(l Lease) []any { return []any{l.UUID, l.Owner, l.Attempt} }

// change runs an UPDATE of imports (engine-neutral, parameters $1..$n are args, no RETURNING) and
// writes a history row with worker and description for every row it changed, atomically. It
// returns the number of rows changed.
func (s *Store) change(ctx context.Context, update string, args []any, worker, desc string) (int, error) {
	n := len(args)
	all := append(append(make([]any, 0, n+2), args...), worker, desc)
	if s.driver == DriverPostgres {
		q := fmt.Sprintf(`WITH u AS (%s RETURNING uuid, stage)
			INSERT INTO adi_history (uuid, stage, at, worker, description)
			SELECT uuid, stage, now(), $%d, $%d FROM u`, update, n+1, n+2)
		res, err := s.db.ExecContext(ctx, s.sql(q), all...)
		if err != nil {
			return 0, err
		}
		c, err := res.RowsAffected()
		return int(c), err
	}
	var changed int
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		changed = 0
		rows, err := s.on(ctx, tx, tx, s.sql(update+" RETURNING uuid, stage")).QueryContext(ctx, args...)
		if err != nil {
			return err
		}
		type row struct{ uuid, stage string }
		var done []row
		for rows.Next() {
			var c row
			if err := rows.Scan(&c.uuid, &c.stage); err != nil {
				rows.Close()
				return err
			}
			done = append(done, c)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for _, c := range done {
			_, err := s.on(ctx, tx, tx, s.sql(`INSERT INTO adi_history (uuid, stage, at, worker, description)
				VALUES ($1, $2, {now}, $3, $4)`)).ExecContext(ctx, c.uuid, c.stage, worker, desc)
			if err != nil {
				return err
			}
		}
		changed = len(done)
		return nil
	})
	return changed, err
}

// Claim moves up to max pending orders whose backoff has passed (oldest first, only the newest
// row of a uuid) to Import Started under a lease of worker, attempt+1, and returns them with their
// preprocessing. Several agents may claim at once: each order goes to exactly one of them.
func (s *Store) Claim(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error) {
	if worker == "" || max <= 0 || lease <= 0 {
		return nil, fmt.Errorf("%w claim: worker %q, max %d, lease %s: need a worker, max > 0 and lease > 0",
			ErrInvalid, worker, max, lease)
	}
	var (
		out []Order
		err error
	)
	if s.driver == DriverPostgres {
		out, err = s.queryOrders(ctx, s.db, s.q.claim, worker, max, s.durArg(lease))
	} else {
		out, err = s.claimSQLite(ctx, worker, max, lease)
	}
	if err != nil {
		return nil, fmt.Errorf("claim orders: %w", err)
	}
	if len(out) > 0 && s.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"worker": worker, "count": len(out)}).Debug("orders claimed")
	}
	return out, nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func (s *Store) queryOrders(ctx context.Context, q querier, query string, args ...any) ([]Order, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return scanOrders(rows)
}

func scanOrders(rows *sql.Rows) ([]Order, error) {
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

func (s *Store) claimSQLite(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error) {
	var out []Order
	err := s.writeTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		rows, err := s.on(ctx, tx, tx, s.q.claim).QueryContext(ctx, worker, max, s.durArg(lease))
		if err != nil {
			return err
		}
		claimed, err := scanOrders(rows)
		if err != nil || len(claimed) == 0 {
			return err
		}
		sort.Slice(claimed, func(i, j int) bool { return claimed[i].ID < claimed[j].ID })
		ids := make([]int64, len(claimed))
		for i, o := range claimed {
			ids[i] = o.ID
		}
		idList, _ := json.Marshal(ids)
		if _, err := s.on(ctx, tx, tx, s.q.claimHistory).ExecContext(ctx, worker, string(idList)); err != nil {
			return err
		}
		for i := range claimed {
			if claimed[i].PreprocessingID == nil {
				continue
			}
			var (
				id                                   int64
				container, input, output, alt, extra sql.NullString
			)
			err := s.on(ctx, tx, tx, s.q.preprocessing).QueryRowContext(ctx, *claimed[i].PreprocessingID).
				Scan(&id, &container, &input, &output, &alt, &extra)
			if errors.Is(err, sql.ErrNoRows) {
				continue // the runner fails the order: preprocessing row missing
			}
			if err != nil {
				return err
			}
			claimed[i].Preprocessing = newPreprocessing(id, container, input, output, alt, extra)
		}
		out = claimed
		return nil
	})
	return out, err
}

// Heartbeat renews the lease l for another lease duration and reports whether cancellation was
// requested. ErrLeaseLost means the order is no longer this worker's: stop working on it.
func (s *Store) Heartbeat(ctx context.Context, l Lease, lease time.Duration) (cancelRequested bool, err error) {
	unlock := s.lockWrite()
	err = s.on(ctx, s.db, nil, s.sql(`UPDATE imports SET lease_expires = {now+$4} WHERE `+fence+`
		RETURNING cancel_requested`)).QueryRowContext(ctx, l.UUID, l.Owner, l.Attempt, s.durArg(lease)).Scan(&cancelRequested)
	unlock()
	if errors.Is(err, sql.ErrNoRows) {
		return false, fmt.Errorf("heartbeat order %s: %w", l.UUID, ErrLeaseLost)
	}
	if err != nil {
		return false, fmt.Errorf("heartbeat order %s: %w", l.UUID, err)
	}
	return cancelRequested, nil
}

// SetStage moves a running order to another running stage (Import Started or Import
// Preprocessing), fenced by l; a non-empty description also replaces the order's description.
func (s *Store) SetStage(ctx context.Context, l Lease, stage, description string) error {
	if stage != StageStarted && stage != StagePreprocessing {
		return fmt.Errorf("%w stage %q for a running order (want %q or %q)", ErrInvalid, stage, StageStarted, StagePreprocessing)
	}
	n, err := s.change(ctx, `UPDATE imports SET stage = $4, timestamp = {now},
		description = COALESCE(NULLIF($5, ''), description) WHERE `+fence,
		append(fenceArgs(l), stage, description), l.Owner, description)
	if err != nil {
		return fmt.Errorf("set stage of order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("set stage of order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// SetResult stores the OMERO ids an import created (column result, JSON), fenced by l.
func (s *Store) SetResult(ctx context.Context, l Lease, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("set result of order %s: %w", l.UUID, err)
	}
	unlock := s.lockWrite()
	res, err := s.db.ExecContext(ctx, s.sql(`UPDATE imports SET result = $4 WHERE `+fence),
		l.UUID, l.Owner, l.Attempt, string(b))
	unlock()
	if err != nil {
		return fmt.Errorf("set result of order %s: %w", l.UUID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("set result of order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// Finish ends a running order with Import Completed, Import Failed or Import Cancelled and the
// description (empty clears it), fenced by l, and drops the lease.
func (s *Store) Finish(ctx context.Context, l Lease, stage, description string) error {
	if stage != StageCompleted && stage != StageFailed && stage != StageCancelled {
		return fmt.Errorf("%w final stage %q (want %q, %q or %q)", ErrInvalid, stage, StageCompleted, StageFailed, StageCancelled)
	}
	n, err := s.change(ctx, `UPDATE imports SET stage = $4, description = NULLIF($5, ''), timestamp = {now},
		lease_owner = NULL, lease_expires = NULL, not_before = NULL, cancel_requested = false WHERE `+fence,
		append(fenceArgs(l), stage, description), l.Owner, description)
	if err != nil {
		return fmt.Errorf("finish order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("finish order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// Release expires lease l now (at shutdown), so that recovery applies its policy to the order.
func (s *Store) Release(ctx context.Context, l Lease) error {
	unlock := s.lockWrite()
	res, err := s.db.ExecContext(ctx, s.sql(`UPDATE imports SET lease_expires = {now} WHERE `+fence), fenceArgs(l)...)
	unlock()
	if err != nil {
		return fmt.Errorf("release order %s: %w", l.UUID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("release order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// Recover handles running orders (Import Started, Import Preprocessing) whose lease expired, or
// that have no lease (left by the Python service): it fails them as interrupted, or with p.Retry
// queues them again after a backoff until p.MaxAttempts (0: no limit). An order whose import had
// reached OMERO (its result holds filesets) is never queued again: it fails, naming the filesets.
// The leases in held (the caller's running orders) are left alone even when expired. It returns
// how many it changed and never touches other stages or older rows of a uuid. Several agents may
// recover at once: each order is changed by one of them.
func (s *Store) Recover(ctx context.Context, p RecoverPolicy, held ...Lease) (int, error) {
	type candidate struct {
		id, attempt   int64
		uuid, stage   string
		owner, result sql.NullString
	}
	rows, err := s.db.QueryContext(ctx, s.sql(`SELECT i.id, i.uuid, i.stage, i.attempt, i.lease_owner, {text:i.result} FROM imports i
		WHERE i.stage IN ('Import Started', 'Import Preprocessing')
		AND (i.lease_expires IS NULL OR i.lease_expires <= {now}) AND `+newest+` ORDER BY i.id`))
	if err != nil {
		return 0, fmt.Errorf("recover orders: %w", err)
	}
	var cands []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.uuid, &c.stage, &c.attempt, &c.owner, &c.result); err != nil {
			rows.Close()
			return 0, fmt.Errorf("recover orders: %w", err)
		}
		if !isHeld(held, c.uuid, c.owner.String, c.attempt) {
			cands = append(cands, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("recover orders: %w", err)
	}
	total := 0
	for _, c := range cands {
		// Fenced on everything read above: a worker that heartbeated or finished meanwhile wins.
		cond := ` WHERE id = $1 AND stage = $2 AND attempt = $3 AND COALESCE(lease_owner, '') = $4
			AND (lease_expires IS NULL OR lease_expires <= {now})`
		args := []any{c.id, c.stage, c.attempt, c.owner.String}
		retry := fmt.Sprintf("UPDATE imports SET stage = 'Import Pending' WHERE uuid = '%s';", c.uuid)
		var (
			n    int
			desc string
		)
		imported, tempDir := storedResult(c.result.String)
		kept := ""
		if tempDir != "" {
			kept = fmt.Sprintf("; its converted files may still be in the local temp folder %s on the agent's host, "+
				"which OMERO's links can point to: remove it only once no image links into it", tempDir)
		}
		switch {
		case imported != "":
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s) after it reached OMERO as %s: "+
				"the images are in OMERO; check them there — a retry would import every file again%s", c.stage, imported, kept)
			n, err = s.change(ctx, `UPDATE imports SET stage = 'Import Failed', description = $5, timestamp = {now},
				lease_owner = NULL, lease_expires = NULL, not_before = NULL`+cond,
				append(args, desc), s.opts.Worker, desc)
		case p.Retry && (p.MaxAttempts <= 0 || int(c.attempt) < p.MaxAttempts):
			wait := p.Backoff * time.Duration(c.attempt)
			of := ""
			if p.MaxAttempts > 0 {
				of = fmt.Sprintf(" of %d", p.MaxAttempts)
			}
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s); queued again "+
				"after %s (attempt %d%s); the import may be partial in OMERO%s", c.stage, wait, c.attempt, of, kept)
			n, err = s.change(ctx, `UPDATE imports SET stage = 'Import Pending', description = $5, timestamp = {now},
				lease_owner = NULL, lease_expires = NULL, cancel_requested = false, not_before = {now+$6}`+cond,
				append(args, desc, s.durArg(wait)), s.opts.Worker, desc)
		default:
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s); the import may be "+
				"partial in OMERO — check, then retry with: %s%s", c.stage, retry, kept)
			if p.Retry {
				desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s) and gave up after "+
					"%d attempts (max_attempts %d); the import may be partial in OMERO — check, then retry with: %s%s",
					c.stage, c.attempt, p.MaxAttempts, retry, kept)
			}
			n, err = s.change(ctx, `UPDATE imports SET stage = 'Import Failed', description = $5, timestamp = {now},
				lease_owner = NULL, lease_expires = NULL, not_before = NULL`+cond,
				append(args, desc), s.opts.Worker, desc)
		}
		if err != nil {
			return total, fmt.Errorf("recover order %s: %w", c.uuid, err)
		}
		if n > 0 {
			s.log.WithFields(logrus.Fields{"order": c.uuid, "stage": c.stage, "attempt": c.attempt,
				"lease_owner": c.owner.String}).Warn("interrupted order recovered")
		}
		total += n
	}
	return total, nil
}

func isHeld(held []Lease, uuid, owner string, attempt int64) bool {
	for _, l := range held {
		if l.UUID == uuid && l.Owner == owner && int64(l.Attempt) == attempt {
			return true
		}
	}
	return false
}

// storedResult reads a stored result: its filesets named ("Fileset 12", "Filesets 12, 13"; "" when
// none) and its temp folder.
func storedResult(raw string) (filesets, tempDir string) {
	var r Result
	if raw == "" || json.Unmarshal([]byte(raw), &r) != nil {
		return "", ""
	}
	if len(r.Filesets) == 0 {
		return "", r.TempDir
	}
	ids := make([]string, len(r.Filesets))
	for i, id := range r.Filesets {
		ids[i] = strconv.FormatInt(id, 10)
	}
	if len(ids) == 1 {
		return "Fileset " + ids[0], r.TempDir
	}
	return "Filesets " + strings.Join(ids, ", "), r.TempDir
}
