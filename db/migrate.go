package db

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFS embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func migrations(driver string) ([]migration, error) {
	dir := "migrations/" + driver
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		v, _, ok := strings.Cut(e.Name(), "_")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration file %s: name must start with a number and _", e.Name())
		}
		b, err := fs.ReadFile(migrationFS, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: n, name: e.Name(), sql: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// AlembicHead is the newest revision of the Python service's migrations (BIOMERO.importer 1.4,
// 92e8f9e637a1_add_import_options_to_imports.py) that this schema includes. Migrate stamps it into
// alembic_version_omeroadi, so the service starts on a database omero-adi created (rollback).
const AlembicHead = "92e8f9e637a1"

// DefaultLegacyPendingMaxAge is how old the newest row of a legacy pending order may be at the
// first migration and still be imported: the old service's dangling-order window (10 days).
const DefaultLegacyPendingMaxAge = 240 * time.Hour

// MigrateReport says what Migrate did.
type MigrateReport struct {
	Applied []string // migration files applied by this call
	// LegacyFailed are the Python-era orders that had been pending for longer than
	// Options.LegacyPendingMaxAge at the first migration: they were set to Import Failed.
	LegacyFailed []LegacyOrder
}

// LegacyOrder is a Python-era pending order that the first migration did not queue.
type LegacyOrder struct {
	UUID  string
	Since time.Time // stage time of its newest row (zero when it had none)
}

// Migrate applies the embedded migrations that the database lacks, in one transaction serialized
// across processes (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE), and keeps the Python
// service's alembic stamp true. It is idempotent and safe on a database created by the Python
// service; at the first migration of such a database, orders pending for longer than
// Options.LegacyPendingMaxAge end Import Failed instead of being imported (see MigrateReport).
func (s *Store) Migrate(ctx context.Context) (MigrateReport, error) {
	var rep MigrateReport
	fail := func(err error) (MigrateReport, error) {
		return MigrateReport{}, fmt.Errorf("migrate database: %w", err)
	}
	ms, err := migrations(s.eng.name())
	if err != nil {
		return fail(err)
	}
	err = s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		rep, err = s.migrate(ctx, tx, ms)
		return err
	})
	if err != nil {
		return fail(err)
	}
	if len(rep.Applied) > 0 {
		s.log.WithField("migrations", rep.Applied).Info("database migrated")
	}
	if n := len(rep.LegacyFailed); n > 0 {
		ids := make([]string, n)
		for i, o := range rep.LegacyFailed {
			ids[i] = o.UUID
		}
		s.log.WithFields(logrus.Fields{"count": n, "orders": ids, "legacy_pending_max_age": s.opts.LegacyPendingMaxAge}).
			Warn("legacy pending orders older than legacy_pending_max_age set to Import Failed")
	}
	return rep, nil
}

// migrate applies the migrations ms that the database lacks, in tx (see Migrate).
func (s *Store) migrate(ctx context.Context, tx *sql.Tx, ms []migration) (MigrateReport, error) {
	var rep MigrateReport
	if err := s.eng.lockMigrations(ctx, tx); err != nil {
		return MigrateReport{}, err
	}
	legacy, err := s.tableExists(ctx, tx, "imports")
	if err != nil {
		return MigrateReport{}, err
	}
	hadOptions := false
	if legacy {
		if hadOptions, err = s.columnExists(ctx, tx, "imports", "import_options"); err != nil {
			return MigrateReport{}, err
		}
	}
	if _, err := tx.ExecContext(ctx, s.st.schemaTable); err != nil {
		return MigrateReport{}, fmt.Errorf("create adi_schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM adi_schema_migrations`)
	if err != nil {
		return MigrateReport{}, err
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return MigrateReport{}, err
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return MigrateReport{}, err
	}
	first := len(applied) == 0
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if err := s.eng.applyMigration(ctx, tx, m.sql); err != nil {
			return MigrateReport{}, fmt.Errorf("%s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.st.recordMigration, m.version); err != nil {
			return MigrateReport{}, fmt.Errorf("record %s: %w", m.name, err)
		}
		rep.Applied = append(rep.Applied, m.name)
	}
	if err := s.stampAlembic(ctx, tx, !hadOptions); err != nil {
		return MigrateReport{}, err
	}
	if first && legacy {
		if rep.LegacyFailed, err = s.failStaleLegacy(ctx, tx); err != nil {
			return MigrateReport{}, err
		}
	}
	return rep, nil
}

func (s *Store) tableExists(ctx context.Context, tx *sql.Tx, table string) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, s.d.tableSQL, table).Scan(&n); err != nil {
		return false, fmt.Errorf("inspect table %s: %w", table, err)
	}
	return n > 0, nil
}

func (s *Store) columnExists(ctx context.Context, tx *sql.Tx, table, column string) (bool, error) {
	var n int
	if err := tx.QueryRowContext(ctx, s.d.columnSQL, table, column).Scan(&n); err != nil {
		return false, fmt.Errorf("inspect %s.%s: %w", table, column, err)
	}
	return n > 0, nil
}

// stampAlembic keeps alembic_version_omeroadi (the Python service's version table) true: created
// and stamped AlembicHead when missing or empty (an empty table is what a failed alembic run
// leaves on SQLite); raised to AlembicHead when this call brought the schema to it (imports lacked
// import_options before, so the stamp was older); else a stamp is left as it is (it may name a
// newer revision).
func (s *Store) stampAlembic(ctx context.Context, tx *sql.Tx, raised bool) error {
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS alembic_version_omeroadi (
		version_num varchar(32) NOT NULL, CONSTRAINT alembic_version_omeroadi_pkc PRIMARY KEY (version_num))`); err != nil {
		return fmt.Errorf("create alembic_version_omeroadi: %w", err)
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM alembic_version_omeroadi`).Scan(&n); err != nil {
		return fmt.Errorf("read alembic_version_omeroadi: %w", err)
	}
	var err error
	switch {
	case n == 0:
		_, err = tx.ExecContext(ctx, `INSERT INTO alembic_version_omeroadi (version_num) VALUES ($1)`, AlembicHead)
	case raised:
		if _, err = tx.ExecContext(ctx, `DELETE FROM alembic_version_omeroadi`); err == nil {
			_, err = tx.ExecContext(ctx, `INSERT INTO alembic_version_omeroadi (version_num) VALUES ($1)`, AlembicHead)
		}
	}
	if err != nil {
		return fmt.Errorf("stamp alembic_version_omeroadi %s: %w", AlembicHead, err)
	}
	return nil
}

// failStaleLegacy ends the Python-era orders whose newest row has been Import Pending for longer
// than LegacyPendingMaxAge (or has no stage time): the old service would never have run them.
func (s *Store) failStaleLegacy(ctx context.Context, tx *sql.Tx) ([]LegacyOrder, error) {
	maxAge := s.opts.LegacyPendingMaxAge
	rows, err := tx.QueryContext(ctx, s.st.findStale, s.d.dur(-maxAge))
	if err != nil {
		return nil, fmt.Errorf("find stale legacy orders: %w", err)
	}
	type stale struct {
		id int64
		LegacyOrder
	}
	var found []stale
	for rows.Next() {
		var (
			o  stale
			ts nullTime
		)
		if err := rows.Scan(&o.id, &o.UUID, &ts); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find stale legacy orders: %w", err)
		}
		o.Since = ts.Time
		found = append(found, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find stale legacy orders: %w", err)
	}
	out := make([]LegacyOrder, 0, len(found))
	for _, o := range found {
		since := "an unknown time (no stage time)"
		if !o.Since.IsZero() {
			since = o.Since.UTC().Format("2006-01-02 15:04:05") + " UTC"
		}
		desc := fmt.Sprintf("not imported at the cut-over to omero-adi: this order had been Import Pending since %s, "+
			"longer than legacy_pending_max_age (%s), and the old service would not have run it; to import it now, "+
			"run: UPDATE imports SET stage = 'Import Pending' WHERE uuid = '%s';", since, maxAge, o.UUID)
		if _, err := tx.ExecContext(ctx, s.st.failStale, o.id, desc); err != nil {
			return nil, fmt.Errorf("fail stale legacy order %s: %w", o.UUID, err)
		}
		if _, err := tx.ExecContext(ctx, s.st.staleHist, o.UUID, s.opts.Worker, desc); err != nil {
			return nil, fmt.Errorf("fail stale legacy order %s: %w", o.UUID, err)
		}
		out = append(out, o.LegacyOrder)
	}
	return out, nil
}
