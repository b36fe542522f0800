package db

import (
	"context"
	"database/sql"
	"time"
)

// engine is what differs between PostgreSQL (postgres.go) and SQLite (sqlite.go). Open picks one;
// the rest of the package runs the statements built for it and writes through it.
type engine interface {
	// name is DriverPostgres or DriverSQLite.
	name() string
	// dialect is how the engine spells what the statements need differently.
	dialect() dialect
	// write runs fn in a write transaction and commits it when fn succeeds. fn may run more than
	// once (SQLite shares transactions between callers, see sqliteEngine.write) and must reset
	// what it records on each run; an expected outcome (no row changed) is not an error.
	write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error
	// change runs statement st (made by changeSQL, parameters args) and writes a history row with
	// worker and description for every row it changed, atomically; it returns how many it changed.
	change(ctx context.Context, st string, args []any, worker, desc string) (int, error)
	// changeTx is change inside the write transaction tx (for a change that writes more with it).
	changeTx(ctx context.Context, tx *sql.Tx, st string, args []any, worker, desc string) (int, error)
	// claim runs Claim: the orders it moved to Import Started, with their preprocessing.
	claim(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error)
	// watch sends signal whenever new pending work may exist, until ctx is done (see Notify).
	watch(ctx context.Context, signal func())
	// lockMigrations serializes Migrate across processes within tx.
	lockMigrations(ctx context.Context, tx *sql.Tx) error
	// applyMigration runs the text of one migration file in tx.
	applyMigration(ctx context.Context, tx *sql.Tx, text string) error
	// close releases what the engine holds beyond the pool (after the Store stopped its goroutines).
	close()
}

// dialect is how an engine spells the few things the statements need differently.
type dialect struct {
	now       string                                // the database's current time
	later     func(param int) string                // now plus the duration in query parameter $param, passed as dur(d)
	dur       func(time.Duration) any               // a duration as the parameter of later
	changeSQL func(update string, nargs int) string // update (parameters $1..$nargs) for engine.change
	timestamp string                                // the column type of a timestamp
	tableSQL  string                                // count of tables named $1
	columnSQL string                                // count of columns $2 of table $1
}

// statements are the queries of a Store in its engine's SQL, built once at Open.
type statements struct {
	heartbeat, setResult, release, setStage, finish               string
	recoverFind, recoverFail, recoverRetry                        string
	insertWatchItem, insertOrder, insertCreated, addEvent         string
	retry, retryAll, cancelPending, cancelRunning                 string
	schemaTable, recordMigration, findStale, failStale, staleHist string
}

// fence is the condition of every write by the worker holding a lease: $1 uuid, $2 owner,
// $3 attempt, and the order still running.
const fence = `uuid = $1 AND lease_owner = $2 AND attempt = $3 AND stage IN ('Import Started', 'Import Preprocessing')`

// recoverCond fences Recover's change of one candidate on everything it read: $1 id, $2 stage,
// $3 attempt, $4 lease owner; a worker that heartbeated or finished meanwhile wins.
func recoverCond(now string) string {
	return ` WHERE id = $1 AND stage = $2 AND attempt = $3 AND COALESCE(lease_owner, '') = $4
		AND (lease_expires IS NULL OR lease_expires <= ` + now + `)`
}

// retrySQL puts order $1 (its newest row) back to pending when it failed or was cancelled; set
// holds further assignments ("result = NULL, ").
func retrySQL(set, now string) string {
	return `UPDATE imports SET stage = 'Import Pending', lease_owner = NULL, lease_expires = NULL, not_before = NULL,
		cancel_requested = false, description = NULL, ` + set + `timestamp = ` + now + `
		WHERE id = (SELECT max(id) FROM imports WHERE uuid = $1) AND stage IN ('Import Failed', 'Import Cancelled')`
}

func newStatements(d dialect) statements {
	now := d.now
	return statements{
		heartbeat: `UPDATE imports SET lease_expires = ` + d.later(4) + ` WHERE ` + fence + ` RETURNING cancel_requested`,
		setResult: `UPDATE imports SET result = $4 WHERE ` + fence,
		release:   `UPDATE imports SET lease_expires = ` + now + ` WHERE ` + fence,
		setStage: d.changeSQL(`UPDATE imports SET stage = $4, timestamp = `+now+`,
			description = COALESCE(NULLIF($5, ''), description) WHERE `+fence, 5),
		finish: d.changeSQL(`UPDATE imports SET stage = $4, description = NULLIF($5, ''), timestamp = `+now+`,
			lease_owner = NULL, lease_expires = NULL, not_before = NULL, cancel_requested = false WHERE `+fence, 5),
		recoverFind: `SELECT i.id, i.uuid, i.stage, i.attempt, i.lease_owner, CAST(i.result AS TEXT) FROM imports i
			WHERE i.stage IN ('Import Started', 'Import Preprocessing')
			AND (i.lease_expires IS NULL OR i.lease_expires <= ` + now + `) AND ` + newest + ` ORDER BY i.id`,
		recoverFail: d.changeSQL(`UPDATE imports SET stage = 'Import Failed', description = $5, timestamp = `+now+`,
			lease_owner = NULL, lease_expires = NULL, not_before = NULL`+recoverCond(now), 5),
		recoverRetry: d.changeSQL(`UPDATE imports SET stage = 'Import Pending', description = $5, timestamp = `+now+`,
			lease_owner = NULL, lease_expires = NULL, cancel_requested = false, not_before = `+d.later(6)+recoverCond(now), 6),
		insertWatchItem: `INSERT INTO adi_watch_items (rule, path, fingerprint, uuid, created)
			VALUES ($1, $2, $3, $4, ` + now + `) ON CONFLICT DO NOTHING`,
		insertOrder: `INSERT INTO imports (group_name, user_name, destination_id,
			destination_type, stage, uuid, timestamp, files, file_names, description, preprocessing_id, source)
			VALUES ($1, $2, $3, $4, 'Import Pending', $5, ` + now + `, $6, $7, $8, $9, $10) RETURNING id`,
		insertCreated: `INSERT INTO adi_history (uuid, stage, at, worker, description, import_id)
			VALUES ($1, 'Import Pending', ` + now + `, $2, $3, $4)`,
		addEvent: `INSERT INTO adi_history (uuid, stage, at, worker, description)
			SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), ` + now + `, CAST($3 AS TEXT), CAST($4 AS TEXT)
			WHERE EXISTS (SELECT 1 FROM imports WHERE uuid = CAST($1 AS TEXT))`,
		retry:    d.changeSQL(retrySQL("", now), 1),
		retryAll: d.changeSQL(retrySQL("result = NULL, ", now), 1),
		cancelPending: d.changeSQL(`UPDATE imports SET stage = 'Import Cancelled', description = 'cancelled before it started',
			timestamp = `+now+` WHERE id = (SELECT max(id) FROM imports WHERE uuid = $1) AND stage = 'Import Pending'`, 1),
		cancelRunning: `UPDATE imports SET cancel_requested = true
			WHERE id = (SELECT max(id) FROM imports WHERE uuid = $1)
			AND stage IN ('Import Started', 'Import Preprocessing')`,
		schemaTable: `CREATE TABLE IF NOT EXISTS adi_schema_migrations (
			version integer PRIMARY KEY, applied_at ` + d.timestamp + ` NOT NULL)`,
		recordMigration: `INSERT INTO adi_schema_migrations (version, applied_at) VALUES ($1, ` + now + `)`,
		findStale: `SELECT i.id, i.uuid, i.timestamp FROM imports i
			WHERE i.stage = 'Import Pending' AND (i.timestamp IS NULL OR i.timestamp < ` + d.later(1) + `) AND ` + newest + `
			ORDER BY i.id`,
		failStale: `UPDATE imports SET stage = 'Import Failed', description = $2, timestamp = ` + now + ` WHERE id = $1`,
		staleHist: `INSERT INTO adi_history (uuid, stage, at, worker, description)
			VALUES ($1, 'Import Failed', ` + now + `, $2, $3)`,
	}
}
