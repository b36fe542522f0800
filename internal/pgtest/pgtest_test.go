package pgtest_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/omero-adi/omero-adi/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestURLGivesFreshDatabases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, b := pgtest.URL(t), pgtest.URL(t)
	if a == b {
		t.Fatalf("two calls gave the same database %s", a)
	}
	for _, u := range []string{a, b} {
		conn, err := sql.Open("pgx", u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		var tables int
		if err := conn.QueryRowContext(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
			t.Fatalf("query %s: %v", u, err)
		}
		if tables != 0 {
			t.Fatalf("database %s is not empty: %d tables", u, tables)
		}
		if _, err := conn.ExecContext(ctx, `CREATE TABLE t (x int)`); err != nil {
			t.Fatalf("create table in %s: %v", u, err)
		}
	}
}

func TestSQLiteURL(t *testing.T) {
	u := pgtest.SQLiteURL(t)
	if !strings.HasPrefix(u, "sqlite:////") || !strings.HasSuffix(u, "/adi.db") {
		t.Fatalf("SQLiteURL = %q, want sqlite:////<tempdir>/adi.db", u)
	}
}
