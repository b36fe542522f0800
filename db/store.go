// Package db is the orders database of omero-adi: connection by URL (PostgreSQL through
// pgx/v5/stdlib and sqlx, or embedded SQLite through modernc.org/sqlite), embedded migrations, and the
// order store: create, claim, heartbeat, fenced stage changes, recovery, retry, cancel, history,
// watch-item dedupe and notifications of new pending work. The tables and stage strings are a public
// contract shared with the web plugin, dashboards and people with psql (orders-db.md).
package db

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// ErrInvalid is returned (wrapped) when an order or argument is unusable; the message names the
// field and its value.
var ErrInvalid = errors.New("invalid")

// applicationName marks the agent's PostgreSQL sessions, so that the history trigger records only
// stage changes made by others.
const applicationName = "omero-adi"

// notifyChannel is the PostgreSQL NOTIFY channel of new pending work.
const notifyChannel = "omero_adi_pending"

// Options configure a Store. The zero value works.
type Options struct {
	Logger *logrus.Entry // nil: the standard logger
	Worker string        // written as worker of the history rows this Store writes; "" = host name

	// NotifyPoll is how often SQLite checks PRAGMA data_version for Notify (default 20ms).
	NotifyPoll time.Duration
	// NotifyReconnect is how long the PostgreSQL listener waits before reconnecting (default 1s).
	NotifyReconnect time.Duration
	// LegacyPendingMaxAge: at the first migration of a Python-era database, pending orders older
	// than this end Import Failed instead of being imported (default DefaultLegacyPendingMaxAge).
	LegacyPendingMaxAge time.Duration
}

// Store is the orders database. It is safe for concurrent use; Close releases its connections and
// stops the notification listener.
type Store struct {
	driver string
	dsn    string
	db     *sqlx.DB
	log    *logrus.Entry
	opts   Options
	q      queries

	sqlCache sync.Map // engine-neutral query text -> engine's text
	stmts    sync.Map // SQLite: engine's query text -> *sql.Stmt (modernc has no statement cache)

	// wmu and lockFile serialize SQLite write transactions: SQLite has one writer at a time, and
	// waiting on a mutex (this Store) and on flock (other Stores and processes on the host) is fair
	// and cheap, where SQLite's busy handler polls with sleeps and can starve a writer. Unused for
	// PostgreSQL.
	wmu        sync.Mutex
	lockFile   *os.File
	writes     chan *writeReq // SQLite writes for the writer goroutine (see writeTx)
	writerOnce sync.Once

	notifyOnce sync.Once
	notifyCh   chan struct{}
	stop       context.CancelFunc
	stopCtx    context.Context
	wg         sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// Open connects to the database named by url (see ParseURL). It checks the connection but does
// not migrate: call Migrate.
func Open(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	driver, dsn, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = logrus.NewEntry(logrus.StandardLogger())
	}
	if opts.Worker == "" {
		opts.Worker, _ = os.Hostname()
	}
	if opts.NotifyPoll <= 0 {
		opts.NotifyPoll = 20 * time.Millisecond
	}
	if opts.NotifyReconnect <= 0 {
		opts.NotifyReconnect = time.Second
	}
	if opts.LegacyPendingMaxAge <= 0 {
		opts.LegacyPendingMaxAge = DefaultLegacyPendingMaxAge
	}
	s := &Store{driver: driver, opts: opts, log: opts.Logger.WithField("component", "db"),
		notifyCh: make(chan struct{}, 1), writes: make(chan *writeReq)}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	fail := func(err error) (*Store, error) {
		s.stop()
		if s.db != nil {
			_ = s.db.Close()
		}
		if s.lockFile != nil {
			_ = s.lockFile.Close()
		}
		return nil, err
	}
	var sqlDriver string
	switch driver {
	case DriverPostgres:
		sqlDriver = "pgx"
		// Append rather than re-encode: pgx reads "+" in a query value literally.
		if u, _ := url.Parse(dsn); u.Query().Get("application_name") == "" {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + "application_name=" + applicationName
		}
	case DriverSQLite:
		sqlDriver = "sqlite"
		file, _, _ := strings.Cut(strings.TrimPrefix(dsn, "file:"), "?")
		s.lockFile, err = os.OpenFile(file+".lock", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return fail(fmt.Errorf("open database %s: writer lock: %w", MaskURL(rawURL), err))
		}
	}
	s.dsn = dsn
	s.db, err = sqlx.Open(sqlDriver, dsn)
	if err != nil {
		return fail(fmt.Errorf("open database %s: %w", MaskURL(rawURL), err))
	}
	if driver == DriverSQLite {
		s.db.SetMaxOpenConns(4)
		s.db.SetMaxIdleConns(4)
	} else {
		s.db.SetMaxOpenConns(32)
		s.db.SetMaxIdleConns(32)
		s.db.SetConnMaxIdleTime(5 * time.Minute)
	}
	if err := s.db.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("connect to database %s: %w", MaskURL(rawURL), maskErr(err, rawURL)))
	}
	s.q = buildQueries(driver)
	s.log.WithFields(logrus.Fields{"driver": driver, "url": MaskURL(rawURL)}).Debug("database opened")
	return s, nil
}

// maskErr keeps a password that a driver might echo out of an error message.
func maskErr(err error, rawURL string) error {
	u, perr := url.Parse(rawURL)
	if perr != nil || u.User == nil {
		return err
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" || !strings.Contains(err.Error(), pw) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), pw, "***"))
}

// Close stops the notification listener and closes the connections. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		s.stmts.Range(func(_, v any) bool {
			_ = v.(*sql.Stmt).Close()
			return true
		})
		s.closeErr = s.db.Close()
		if s.lockFile != nil {
			_ = s.lockFile.Close()
		}
	})
	return s.closeErr
}

// Driver returns "postgres" or "sqlite".
func (s *Store) Driver() string { return s.driver }

// DB returns the connection pool, for tests and raw SQL.
func (s *Store) DB() *sqlx.DB { return s.db }

// Worker returns the name this Store writes into history rows.
func (s *Store) Worker() string { return s.opts.Worker }

// lockWrite serializes SQLite writers of this Store; the returned func unlocks.
func (s *Store) lockWrite() func() {
	if s.driver != DriverSQLite {
		return func() {}
	}
	s.wmu.Lock()
	for syscall.Flock(int(s.lockFile.Fd()), syscall.LOCK_EX) == syscall.EINTR {
	}
	return func() {
		_ = syscall.Flock(int(s.lockFile.Fd()), syscall.LOCK_UN)
		s.wmu.Unlock()
	}
}

// sqliteTime is the layout of timestamps stored in SQLite (UTC), as strftime('%Y-%m-%d %H:%M:%f').
const sqliteTime = "2006-01-02 15:04:05.000"

var timeLayouts = []string{
	sqliteTime,
	"2006-01-02 15:04:05.999999999-07:00",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05",
	"2006-01-02",
}

// nullTime scans a timestamp from either engine: time.Time from PostgreSQL, text from SQLite.
type nullTime struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (n *nullTime) Scan(v any) error {
	n.Valid = false
	var s string
	switch x := v.(type) {
	case nil:
		return nil
	case time.Time:
		n.Time, n.Valid = x, true
		return nil
	case string:
		s = x
	case []byte:
		s = string(x)
	case int64: // unix seconds
		n.Time, n.Valid = time.Unix(x, 0).UTC(), true
		return nil
	default:
		return fmt.Errorf("scan timestamp: unsupported type %T", v)
	}
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			n.Time, n.Valid = t, true
			return nil
		}
	}
	return fmt.Errorf("scan timestamp: cannot parse %q", s)
}

func (n nullTime) ptr() *time.Time {
	if !n.Valid {
		return nil
	}
	t := n.Time
	return &t
}

var laterRe = regexp.MustCompile(`\{now\+(\$\d+)\}`)

// sqlFor rewrites the engine-neutral spelling of a query: {now} is the database's current time,
// {now+$N} is now plus the duration of parameter N (pass durArg), {text:EXPR} is EXPR as text.
func sqlFor(driver, q string) string {
	if driver == DriverPostgres {
		q = laterRe.ReplaceAllString(q, "(now() + ${1}::bigint * interval '1 microsecond')")
		q = strings.ReplaceAll(q, "{now}", "now()")
		q = strings.ReplaceAll(q, "{timestamp}", "timestamptz")
		return textRe.ReplaceAllString(q, "${1}::text")
	}
	q = laterRe.ReplaceAllString(q, "strftime('%Y-%m-%d %H:%M:%f', 'now', ${1})")
	q = strings.ReplaceAll(q, "{now}", "strftime('%Y-%m-%d %H:%M:%f', 'now')")
	q = strings.ReplaceAll(q, "{timestamp}", "TEXT")
	return textRe.ReplaceAllString(q, "${1}")
}

var textRe = regexp.MustCompile(`\{text:([^}]+)\}`)

// durArg is the query parameter for {now+$N}.
func (s *Store) durArg(d time.Duration) any {
	if s.driver == DriverPostgres {
		return d.Microseconds()
	}
	return fmt.Sprintf("%+.3f seconds", d.Seconds())
}

// stmtQuerier is what the hot paths run statements on: the pool or a transaction.
type stmtQuerier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// prepared returns a statement of the pool for query (SQLite), prepared once per connection;
// nil for PostgreSQL, where pgx caches prepared statements itself.
func (s *Store) prepared(ctx context.Context, query string) *sql.Stmt {
	if s.driver != DriverSQLite {
		return nil
	}
	if v, ok := s.stmts.Load(query); ok {
		return v.(*sql.Stmt)
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil // the caller runs the query unprepared and reports the error
	}
	if v, loaded := s.stmts.LoadOrStore(query, st); loaded {
		_ = st.Close()
		return v.(*sql.Stmt)
	}
	return st
}

// on returns where to run query: a prepared statement (bound to tx when tx is not nil) or q.
func (s *Store) on(ctx context.Context, q stmtQuerier, tx *sql.Tx, query string) stmtRunner {
	st := s.prepared(ctx, query)
	if st == nil {
		return plainRunner{q: q, query: query}
	}
	if tx != nil {
		st = tx.StmtContext(ctx, st)
	}
	return st
}

// stmtRunner runs one statement with arguments.
type stmtRunner interface {
	ExecContext(ctx context.Context, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, args ...any) *sql.Row
}

type plainRunner struct {
	q     stmtQuerier
	query string
}

func (p plainRunner) ExecContext(ctx context.Context, args ...any) (sql.Result, error) {
	return p.q.ExecContext(ctx, p.query, args...)
}

func (p plainRunner) QueryContext(ctx context.Context, args ...any) (*sql.Rows, error) {
	return p.q.QueryContext(ctx, p.query, args...)
}

func (p plainRunner) QueryRowContext(ctx context.Context, args ...any) *sql.Row {
	return p.q.QueryRowContext(ctx, p.query, args...)
}
