package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
)

// sqliteNow is SQLite's current time in the layout timestamps are stored in (UTC).
const sqliteNow = `strftime('%Y-%m-%d %H:%M:%f', 'now')`

// maxBatch bounds how many SQLite writes share one transaction.
const maxBatch = 64

// errStoreClosed is returned by writes on a closed Store.
var errStoreClosed = errors.New("store closed")

// sqliteEngine runs the store on SQLite, which has one writer at a time. Every write goes
// through one goroutine of the Store (see write), which holds an flock on a file next to the
// database while it writes: waiting on flock is fair and cheap across Stores and processes on the
// host, where SQLite's busy handler polls with sleeps and can starve a writer.
type sqliteEngine struct {
	db       *sqlx.DB
	log      *logrus.Entry
	poll     time.Duration
	lockFile *os.File
	writes   chan *writeReq
	stop     <-chan struct{}
	stmts    sync.Map // query text -> *sql.Stmt of the pool (modernc has no statement cache)

	claimSQL, claimHistorySQL, preprocessingSQL, historySQL string
}

// writeReq is one SQLite write waiting for a group commit.
type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan struct{}
}

// newSQLite opens the writer lock of the database file and starts the writer, which runs until
// ctx is done; wg tracks it.
func newSQLite(ctx context.Context, wg *sync.WaitGroup, db *sqlx.DB, dsn string, log *logrus.Entry,
	poll time.Duration) (*sqliteEngine, error) {
	file, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
	lock, err := os.OpenFile(file+".lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("writer lock: %w", err)
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(4)
	pending := `i.stage = 'Import Pending' AND (i.not_before IS NULL OR i.not_before <= ` + sqliteNow + `) AND ` + newest
	e := &sqliteEngine{db: db, log: log, poll: poll, lockFile: lock, writes: make(chan *writeReq), stop: ctx.Done(),
		claimSQL: `UPDATE imports SET stage = 'Import Started', attempt = attempt + 1,
			lease_owner = $1, lease_expires = strftime('%Y-%m-%d %H:%M:%f', 'now', $3), cancel_requested = false,
			not_before = NULL, timestamp = ` + sqliteNow + `
			WHERE id IN (SELECT i.id FROM imports i WHERE ` + pending + ` ORDER BY i.id LIMIT $2)
			RETURNING ` + importCols("") + noPreprocessingCols,
		claimHistorySQL: `INSERT INTO adi_history (uuid, stage, at, worker, description)
			SELECT uuid, stage, ` + sqliteNow + `, $1, 'claimed, attempt ' || attempt FROM imports
			WHERE id IN (SELECT value FROM json_each($2))`,
		preprocessingSQL: `SELECT id, container, input_file, output_folder, alt_output_folder,
			CAST(extra_params AS TEXT) FROM imports_preprocessing WHERE id = $1`,
		historySQL: `INSERT INTO adi_history (uuid, stage, at, worker, description)
			VALUES ($1, $2, ` + sqliteNow + `, $3, $4)`,
	}
	wg.Add(1)
	go e.writer(wg)
	return e, nil
}

func (e *sqliteEngine) name() string { return DriverSQLite }

func (e *sqliteEngine) dialect() dialect {
	return dialect{
		now:   sqliteNow,
		later: func(n int) string { return fmt.Sprintf("strftime('%%Y-%%m-%%d %%H:%%M:%%f', 'now', $%d)", n) },
		dur:   sqliteDur,
		// The update returns what it changed; change writes the history rows in its transaction.
		changeSQL: func(update string, _ int) string { return update + " RETURNING uuid, stage" },
		timestamp: "TEXT",
		tableSQL:  `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = $1`,
		columnSQL: `SELECT count(*) FROM pragma_table_info($1) WHERE name = $2`,
	}
}

// sqliteDur is a duration as a strftime modifier.
func sqliteDur(d time.Duration) any { return fmt.Sprintf("%+.3f seconds", d.Seconds()) }

// write runs fn in a write transaction of the Store's writer. Concurrent callers share
// transactions (group commit): the writer takes every waiting fn and runs them in one
// transaction, so a commit is paid once per batch. The transaction commits only if every fn of
// the batch succeeds; otherwise each fn runs again in its own transaction, so one failure never
// spoils another caller's write.
func (e *sqliteEngine) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case e.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-e.stop:
		return errStoreClosed
	}
	<-r.done // the writer always finishes what it received
	return r.err
}

// writer runs the queued writes of this Store until the Store closes.
func (e *sqliteEngine) writer(wg *sync.WaitGroup) {
	defer wg.Done()
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-e.writes:
			batch = append(batch[:0], r)
		case <-e.stop:
			return
		}
		// Callers served by the previous batch are about to send their next write: yield until no
		// more arrive, so batches stay large instead of alternating between one write and the rest.
		for round := 0; round < 4 && len(batch) < maxBatch; round++ {
			runtime.Gosched()
			n := len(batch)
		more:
			for len(batch) < maxBatch {
				select {
				case r := <-e.writes:
					batch = append(batch, r)
				default:
					break more
				}
			}
			if len(batch) == n {
				break
			}
		}
		for syscall.Flock(int(e.lockFile.Fd()), syscall.LOCK_EX) == syscall.EINTR {
		}
		e.runBatch(batch)
		_ = syscall.Flock(int(e.lockFile.Fd()), syscall.LOCK_UN)
	}
}

func (e *sqliteEngine) runBatch(batch []*writeReq) {
	live := make([]*writeReq, 0, len(batch))
	for _, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.err = err
			close(r.done)
			continue
		}
		live = append(live, r)
	}
	if len(live) > 1 {
		err := e.inTx(context.Background(), func(tx *sql.Tx) error {
			for _, r := range live {
				if err := r.fn(r.ctx, tx); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			for _, r := range live {
				close(r.done)
			}
			return
		}
	}
	for _, r := range live {
		r.err = e.inTx(r.ctx, func(tx *sql.Tx) error { return r.fn(r.ctx, tx) })
		close(r.done)
	}
}

// inTx runs fn in a transaction (BEGIN IMMEDIATE, see sqlitePragmas) and commits it when fn
// succeeds.
func (e *sqliteEngine) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// stmt returns query prepared once on the pool (modernc has no statement cache), bound to tx:
// the statements of the hot paths, claim and change.
func (e *sqliteEngine) stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	v, ok := e.stmts.Load(query)
	if !ok {
		st, err := e.db.PrepareContext(ctx, query)
		if err != nil {
			return nil, err
		}
		if v, ok = e.stmts.LoadOrStore(query, st); ok {
			_ = st.Close()
		} else {
			v = st
		}
	}
	return tx.StmtContext(ctx, v.(*sql.Stmt)), nil
}

func (e *sqliteEngine) change(ctx context.Context, st string, args []any, worker, desc string) (int, error) {
	var changed int
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		changed, err = e.changeTx(ctx, tx, st, args, worker, desc)
		return err
	})
	return changed, err
}

func (e *sqliteEngine) changeTx(ctx context.Context, tx *sql.Tx, st string, args []any, worker, desc string) (int, error) {
	update, err := e.stmt(ctx, tx, st)
	if err != nil {
		return 0, err
	}
	rows, err := update.QueryContext(ctx, args...)
	if err != nil {
		return 0, err
	}
	type row struct{ uuid, stage string }
	var done []row
	for rows.Next() {
		var c row
		if err := rows.Scan(&c.uuid, &c.stage); err != nil {
			rows.Close()
			return 0, err
		}
		done = append(done, c)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	history, err := e.stmt(ctx, tx, e.historySQL)
	if err != nil {
		return 0, err
	}
	for _, c := range done {
		if _, err := history.ExecContext(ctx, c.uuid, c.stage, worker, desc); err != nil {
			return 0, err
		}
	}
	return len(done), nil
}

func (e *sqliteEngine) claim(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error) {
	var out []Order
	err := e.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		claim, err := e.stmt(ctx, tx, e.claimSQL)
		if err != nil {
			return err
		}
		rows, err := claim.QueryContext(ctx, worker, max, sqliteDur(lease))
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
		history, err := e.stmt(ctx, tx, e.claimHistorySQL)
		if err != nil {
			return err
		}
		if _, err := history.ExecContext(ctx, worker, string(idList)); err != nil {
			return err
		}
		var pre *sql.Stmt
		for i := range claimed {
			if claimed[i].PreprocessingID == nil {
				continue
			}
			if pre == nil {
				if pre, err = e.stmt(ctx, tx, e.preprocessingSQL); err != nil {
					return err
				}
			}
			var (
				id                                   int64
				container, input, output, alt, extra sql.NullString
			)
			err := pre.QueryRowContext(ctx, *claimed[i].PreprocessingID).
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

// lockMigrations: the writer's transaction is BEGIN IMMEDIATE and holds the writer lock.
func (e *sqliteEngine) lockMigrations(context.Context, *sql.Tx) error { return nil }

// addColumn matches the statements that SQLite cannot run as written.
var addColumn = regexp.MustCompile(`(?im)^\s*ALTER TABLE\s+(\w+)\s+ADD COLUMN IF NOT EXISTS\s+(\w+)\s+([^;]*);\s*$`)

// applyMigration runs a migration's text; "ALTER TABLE t ADD COLUMN IF NOT EXISTS c …" runs only
// when table_info lacks the column, the rest as written.
func (e *sqliteEngine) applyMigration(ctx context.Context, tx *sql.Tx, text string) error {
	rest := text
	for {
		loc := addColumn.FindStringSubmatchIndex(rest)
		if loc == nil {
			break
		}
		if before := rest[:loc[0]]; strings.TrimSpace(before) != "" {
			if _, err := tx.ExecContext(ctx, before); err != nil {
				return err
			}
		}
		table, column, def := rest[loc[2]:loc[3]], rest[loc[4]:loc[5]], rest[loc[6]:loc[7]]
		var n int
		err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info($1) WHERE name = $2`, table, column).Scan(&n)
		if err != nil {
			return fmt.Errorf("inspect %s.%s: %w", table, column, err)
		}
		if n == 0 {
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", table, column, def)); err != nil {
				return fmt.Errorf("add column %s.%s: %w", table, column, err)
			}
		}
		rest = rest[loc[1]:]
	}
	if strings.TrimSpace(rest) != "" {
		_, err := tx.ExecContext(ctx, rest)
		return err
	}
	return nil
}

// close closes the prepared statements and the writer lock; the writer has stopped.
func (e *sqliteEngine) close() {
	e.stmts.Range(func(_, v any) bool {
		_ = v.(*sql.Stmt).Close()
		return true
	})
	_ = e.lockFile.Close()
}

// watch polls PRAGMA data_version on a dedicated connection (every commit by another connection
// changes it), and signals once when it starts.
func (e *sqliteEngine) watch(ctx context.Context, signal func()) {
	log := e.log.WithField("poll", e.poll)
	var (
		conn    *sql.Conn
		last    int64
		failing bool
	)
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	for {
		var v int64
		err := func() error {
			if conn == nil {
				c, err := e.db.Conn(ctx)
				if err != nil {
					return err
				}
				conn = c
				last = -1
			}
			return conn.QueryRowContext(ctx, "PRAGMA data_version").Scan(&v)
		}()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				log.WithError(err).Warn("poll for new orders failed; retrying")
			}
			failing = true
			if conn != nil {
				_ = conn.Close()
				conn = nil
			}
		default:
			failing = false
			if v != last {
				// The first reading also signals: changes before it may have been missed.
				signal()
				last = v
			}
		}
		if !wait(ctx, e.poll) {
			return
		}
	}
}
