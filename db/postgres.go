package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
)

// notifyChannel is the PostgreSQL NOTIFY channel of new pending work.
const notifyChannel = "omero_adi_pending"

// migrationLock is the pg_advisory_xact_lock key that serializes migrations across processes.
const migrationLock = 4242001

// postgresEngine runs the store on PostgreSQL: every statement commits by itself or in a
// transaction of the pool; pgx caches prepared statements per connection.
type postgresEngine struct {
	db        *sqlx.DB
	dsn       string
	log       *logrus.Entry
	reconnect time.Duration
	claimSQL  string
}

func newPostgres(db *sqlx.DB, dsn string, log *logrus.Entry, reconnect time.Duration) *postgresEngine {
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	return &postgresEngine{db: db, dsn: dsn, log: log, reconnect: reconnect,
		// adi_claim (migration 0001) runs the claim with the right plan; see its comment.
		claimSQL: `SELECT ` + orderCols + ` FROM adi_claim($1, $2, $3) i
			LEFT JOIN imports_preprocessing p ON p.id = i.preprocessing_id ORDER BY i.id`}
}

func (e *postgresEngine) name() string { return DriverPostgres }

func (e *postgresEngine) dialect() dialect {
	return dialect{
		now:   "now()",
		later: func(n int) string { return fmt.Sprintf("(now() + $%d::bigint * interval '1 microsecond')", n) },
		dur:   func(d time.Duration) any { return d.Microseconds() },
		// One statement: the update and the history rows of what it changed.
		changeSQL: func(update string, n int) string {
			return fmt.Sprintf(`WITH u AS (%s RETURNING uuid, stage)
				INSERT INTO adi_history (uuid, stage, at, worker, description)
				SELECT uuid, stage, now(), $%d, $%d FROM u`, update, n+1, n+2)
		},
		timestamp: "timestamptz",
		tableSQL:  `SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1`,
		columnSQL: `SELECT count(*) FROM information_schema.columns
			WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2`,
	}
}

func (e *postgresEngine) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(ctx, tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (e *postgresEngine) change(ctx context.Context, st string, args []any, worker, desc string) (int, error) {
	return e.changeIn(ctx, e.db, st, args, worker, desc)
}

func (e *postgresEngine) changeTx(ctx context.Context, tx *sql.Tx, st string, args []any, worker, desc string) (int, error) {
	return e.changeIn(ctx, tx, st, args, worker, desc)
}

func (e *postgresEngine) changeIn(ctx context.Context, x interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, st string, args []any, worker, desc string) (int, error) {
	all := append(append(make([]any, 0, len(args)+2), args...), worker, desc)
	res, err := x.ExecContext(ctx, st, all...)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

func (e *postgresEngine) claim(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error) {
	rows, err := e.db.QueryContext(ctx, e.claimSQL, worker, max, lease.Microseconds())
	if err != nil {
		return nil, err
	}
	claimed, err := scanOrders(rows)
	if err != nil {
		return nil, err
	}
	// The join sees the claim statement's first snapshot, while adi_claim's UPDATE takes a newer
	// one: an order inserted right after its imports_preprocessing row (as the web plugin and
	// orders-db.md do it, in two statements) can be claimed with the join missing that row. A
	// new statement sees it, since it was committed before the order.
	for i := range claimed {
		o := &claimed[i]
		if o.PreprocessingID == nil || o.Preprocessing != nil {
			continue
		}
		var (
			id                                   int64
			container, input, output, alt, extra sql.NullString
		)
		err := e.db.QueryRowContext(ctx, `SELECT id, container, input_file, output_folder, alt_output_folder,
			CAST(extra_params AS TEXT) FROM imports_preprocessing WHERE id = $1`, *o.PreprocessingID).
			Scan(&id, &container, &input, &output, &alt, &extra)
		switch {
		case errors.Is(err, sql.ErrNoRows): // the runner fails the order: preprocessing row missing
		case err != nil:
			return claimed, fmt.Errorf("read preprocessing row %d: %w", *o.PreprocessingID, err)
		default:
			o.Preprocessing = newPreprocessing(id, container, input, output, alt, extra)
		}
	}
	return claimed, nil
}

func (e *postgresEngine) lockMigrations(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	return nil
}

func (e *postgresEngine) applyMigration(ctx context.Context, tx *sql.Tx, text string) error {
	_, err := tx.ExecContext(ctx, text)
	return err
}

func (e *postgresEngine) close() {}

// watch LISTENs on a dedicated connection, fed by the imports trigger; after a (re)connect it
// signals once, since notifications may have been missed.
func (e *postgresEngine) watch(ctx context.Context, signal func()) {
	log := e.log.WithField("channel", notifyChannel)
	failures := 0
	for ctx.Err() == nil {
		err := e.listenOnce(ctx, signal, func() {
			if failures > 0 {
				log.Info("listening for new orders again")
			}
			failures = 0
			signal() // notifications may have been missed while not listening
		})
		if ctx.Err() != nil {
			return
		}
		failures++
		entry := log.WithError(maskErr(err, e.dsn)).WithField("retry_in", e.reconnect)
		if failures == 1 {
			entry.Warn("listen for new orders failed; reconnecting")
		} else {
			entry.Debug("listen for new orders failed; reconnecting")
		}
		if !wait(ctx, e.reconnect) {
			return
		}
	}
}

// listenOnce connects, LISTENs, calls ready, and forwards notifications until an error.
func (e *postgresEngine) listenOnce(ctx context.Context, signal, ready func()) error {
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	ready()
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		signal()
	}
}
