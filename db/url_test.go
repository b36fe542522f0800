package db_test

import (
	"strings"
	"testing"

	"github.com/omero-adi/omero-adi/db"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name, raw string
		driver    string
		dsnHas    []string
		errHas    []string // error must contain all of these
		errHasNot []string // and none of these (passwords)
	}{
		{name: "postgresql", raw: "postgresql://adi:secret@db:5432/adi", driver: "postgres",
			dsnHas: []string{"postgres://adi:secret@db:5432/adi"}},
		{name: "postgres", raw: "postgres://adi@db/adi?sslmode=disable", driver: "postgres",
			dsnHas: []string{"postgres://adi@db/adi", "sslmode=disable"}},
		{name: "sqlalchemy driver", raw: "postgresql+psycopg2://adi:pw@db/biomero", driver: "postgres",
			dsnHas: []string{"postgres://adi:pw@db/biomero"}},
		{name: "socket host param", raw: "postgres://adi@/adi?host=/run/postgresql", driver: "postgres",
			dsnHas: []string{"host=/run/postgresql"}},
		{name: "sqlite relative", raw: "sqlite:///var/adi.db", driver: "sqlite",
			dsnHas: []string{"file:var/adi.db?", "journal_mode(WAL)", "busy_timeout", "_txlock=immediate"}},
		{name: "sqlite absolute", raw: "sqlite:////var/lib/omero-adi/adi.db", driver: "sqlite",
			dsnHas: []string{"file:/var/lib/omero-adi/adi.db?"}},
		{name: "empty", raw: "", errHas: []string{`""`, "empty"}},
		{name: "no scheme", raw: "db/adi", errHas: []string{`"db/adi"`, "no scheme"}},
		{name: "unknown scheme", raw: "mysql://u:hunter2@db/adi", errHas: []string{"mysql://u:***@db/adi", "unsupported scheme"},
			errHasNot: []string{"hunter2"}},
		{name: "postgres without database", raw: "postgresql://adi:hunter2@db", errHas: []string{"postgresql://adi:***@db", "no database name"},
			errHasNot: []string{"hunter2"}},
		{name: "postgres bad url", raw: "postgres://adi:hunter2@db:port/adi", errHas: []string{"postgres://adi:***@db:port/adi"},
			errHasNot: []string{"hunter2"}},
		{name: "sqlite two slashes", raw: "sqlite://adi.db", errHas: []string{`"sqlite://adi.db"`, "sqlite:///relative.db"}},
		{name: "sqlite no file", raw: "sqlite:///", errHas: []string{"no database file"}},
		{name: "sqlite memory", raw: "sqlite:///:memory:", errHas: []string{"in-memory"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			driver, dsn, err := db.ParseURL(tc.raw)
			if len(tc.errHas) > 0 {
				if err == nil {
					t.Fatalf("ParseURL(%q) = %q, %q, want an error", tc.raw, driver, dsn)
				}
				for _, s := range tc.errHas {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				for _, s := range tc.errHasNot {
					if strings.Contains(err.Error(), s) {
						t.Errorf("error %q leaks %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseURL(%q): %v", tc.raw, err)
			}
			if driver != tc.driver {
				t.Errorf("driver = %q, want %q", driver, tc.driver)
			}
			for _, s := range tc.dsnHas {
				if !strings.Contains(dsn, s) {
					t.Errorf("dsn %q does not contain %q", dsn, s)
				}
			}
		})
	}
}

func TestMaskURL(t *testing.T) {
	tests := []struct{ name, raw, want string }{
		{"password", "postgres://adi:secret@db/adi", "postgres://adi:***@db/adi"},
		{"sqlalchemy", "postgresql+psycopg2://adi:s3cr%40t@db:5432/adi", "postgresql+psycopg2://adi:***@db:5432/adi"},
		{"no password", "postgres://adi@db/adi", "postgres://adi@db/adi"},
		{"port only", "postgres://db:5432/adi", "postgres://db:5432/adi"},
		{"password parameter", "postgres://db/adi?user=adi&password=secret&sslmode=require",
			"postgres://db/adi?user=adi&password=***&sslmode=require"},
		{"sqlite", "sqlite:////var/lib/adi.db", "sqlite:////var/lib/adi.db"},
		{"unparsable", "postgres://adi:p w@db:x/adi", "postgres://adi:***@db:x/adi"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := db.MaskURL(tc.raw); got != tc.want {
				t.Errorf("MaskURL(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}
