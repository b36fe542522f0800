package db

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/postgres/*.sql migrations/sqlite/*.sql
var migrationFS embed.FS

// migrationLock is the pg_advisory_xact_lock key that serializes migrations across processes.
const migrationLock = 4242001

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

// Migrate applies the embedded migrations that the database lacks, in one transaction serialized
// across processes (PostgreSQL: advisory lock; SQLite: BEGIN IMMEDIATE). It is idempotent and safe
// on a database created by the Python service.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations(s.driver)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	defer s.lockWrite()()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if s.driver == DriverPostgres {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("migrate database: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, s.sql(`CREATE TABLE IF NOT EXISTS adi_schema_migrations (
		version integer PRIMARY KEY, applied_at {timestamp} NOT NULL)`)); err != nil {
		return fmt.Errorf("migrate database: create adi_schema_migrations: %w", err)
	}
	applied := map[int]bool{}
	rows, err := tx.QueryContext(ctx, `SELECT version FROM adi_schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("migrate database: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	var done []string
	for _, m := range ms {
		if applied[m.version] {
			continue
		}
		if err := s.apply(ctx, tx, m); err != nil {
			return fmt.Errorf("migrate database: %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, s.sql(`INSERT INTO adi_schema_migrations (version, applied_at)
			VALUES ($1, {now})`), m.version); err != nil {
			return fmt.Errorf("migrate database: record %s: %w", m.name, err)
		}
		done = append(done, m.name)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	if len(done) > 0 {
		s.log.WithField("migrations", done).Info("database migrated")
	}
	return nil
}

// addColumn matches the statements that SQLite cannot run as written.
var addColumn = regexp.MustCompile(`(?im)^\s*ALTER TABLE\s+(\w+)\s+ADD COLUMN IF NOT EXISTS\s+(\w+)\s+([^;]*);\s*$`)

// apply runs one migration. On SQLite, "ALTER TABLE t ADD COLUMN IF NOT EXISTS c …" runs only
// when table_info lacks the column; the rest runs as written.
func (s *Store) apply(ctx context.Context, tx *sql.Tx, m migration) error {
	if s.driver == DriverPostgres {
		_, err := tx.ExecContext(ctx, m.sql)
		return err
	}
	rest := m.sql
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
