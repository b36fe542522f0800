package db

import (
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
)

// Engine names returned by ParseURL and Store.Driver.
const (
	DriverPostgres = "postgres"
	DriverSQLite   = "sqlite"
)

// sqlitePragmas configure every SQLite connection: WAL so readers never block the writer, a busy
// timeout so a second process waits instead of failing, NORMAL sync (safe in WAL mode), foreign keys,
// and IMMEDIATE write transactions so a transaction never fails while upgrading a read lock.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)" +
	"&_pragma=foreign_keys(1)&_txlock=immediate"

var passwordInText = regexp.MustCompile(`(://[^:/@\s]*:)[^@/]*@`)
var passwordParam = regexp.MustCompile(`(?i)((?:^|[?&\s])password=)[^&\s]*`)

// ParseURL turns a database URL of the settings (PostgreSQL or the SQLAlchemy spellings of both
// engines) into a driver name ("postgres" or "sqlite") and the DSN that driver understands.
// Errors name the URL with its password masked.
func ParseURL(raw string) (driver, dsn string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("parse database URL %q: %s", MaskURL(raw), why)
	}
	s := strings.TrimSpace(raw)
	if s == "" {
		return bad("empty; expected postgresql://user@host/db or sqlite:////path/adi.db")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad("no scheme; expected postgresql://user@host/db or sqlite:////path/adi.db")
	}
	base, _, _ := strings.Cut(strings.ToLower(scheme), "+") // postgresql+psycopg2 -> postgresql
	switch base {
	case "postgresql", "postgres":
		u, err := url.Parse("postgres://" + rest)
		if err != nil {
			return bad("not a valid URL")
		}
		if u.Host == "" && u.Query().Get("host") == "" {
			return bad("no host")
		}
		if strings.Trim(u.Path, "/") == "" {
			return bad("no database name")
		}
		return DriverPostgres, u.String(), nil
	case "sqlite":
		// SQLAlchemy: sqlite:///relative.db (three slashes) and sqlite:////abs.db (four).
		if !strings.HasPrefix(rest, "/") {
			return bad("expected sqlite:///relative.db or sqlite:////absolute.db")
		}
		p, query, _ := strings.Cut(rest[1:], "?")
		if p == "" || strings.HasSuffix(p, "/") {
			return bad("no database file")
		}
		if p == ":memory:" {
			return bad("in-memory databases are not supported (every connection would see its own database)")
		}
		p = filepath.Clean(p)
		dsn = "file:" + p + "?" + sqlitePragmas
		if query != "" {
			dsn += "&" + query
		}
		return DriverSQLite, dsn, nil
	default:
		return bad(fmt.Sprintf("unsupported scheme %q; expected postgresql, postgres or sqlite", scheme))
	}
}

// MaskURL returns raw with any password replaced by "***", for logs and messages:
// postgres://adi:secret@db/adi becomes postgres://adi:***@db/adi.
func MaskURL(raw string) string {
	s := passwordInText.ReplaceAllString(raw, "${1}***@")
	return passwordParam.ReplaceAllString(s, "${1}***")
}
