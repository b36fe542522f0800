// Package db is the orders database of omero-adi: connection by URL (PostgreSQL through
// pgx/v5/stdlib and sqlx, or embedded SQLite through modernc.org/sqlite), embedded migrations, and the
// order store: create, claim, heartbeat, fenced stage changes, recovery, retry, cancel, history,
// watch-item dedupe and notifications of new pending work. The tables and stage strings are a public
// contract shared with the web plugin, dashboards and people with psql (orders-db.md).
package db

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
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
	eng  engine
	st   statements
	d    dialect
	db   *sqlx.DB
	log  *logrus.Entry
	opts Options

	notifyOnce sync.Once
	notifyCh   chan struct{}
	outboxCh   chan struct{} // notices written (OutboxNotify)
	stop       context.CancelFunc
	stopCtx    context.Context
	wg         sync.WaitGroup // the engine's writer and the notification listener

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
	s := &Store{opts: opts, log: opts.Logger.WithField("component", "db"), notifyCh: make(chan struct{}, 1),
		outboxCh: make(chan struct{}, 1)}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	fail := func(err error) (*Store, error) {
		s.stop()
		s.wg.Wait()
		if s.eng != nil {
			s.eng.close()
		}
		if s.db != nil {
			_ = s.db.Close()
		}
		return nil, err
	}
	sqlDriver := "sqlite"
	if driver == DriverPostgres {
		sqlDriver = "pgx"
		// Append rather than re-encode: pgx reads "+" in a query value literally.
		if u, _ := url.Parse(dsn); u.Query().Get("application_name") == "" {
			sep := "?"
			if strings.Contains(dsn, "?") {
				sep = "&"
			}
			dsn += sep + "application_name=" + applicationName
		}
	}
	s.db, err = sqlx.Open(sqlDriver, dsn)
	if err != nil {
		return fail(fmt.Errorf("open database %s: %w", MaskURL(rawURL), err))
	}
	if driver == DriverPostgres {
		s.eng = newPostgres(s.db, dsn, s.log, opts.NotifyReconnect)
	} else {
		e, err := newSQLite(s.stopCtx, &s.wg, s.db, dsn, s.log, opts.NotifyPoll)
		if err != nil {
			return fail(fmt.Errorf("open database %s: %w", MaskURL(rawURL), err))
		}
		s.eng = e
	}
	if err := s.db.PingContext(ctx); err != nil {
		return fail(fmt.Errorf("connect to database %s: %w", MaskURL(rawURL), maskErr(err, rawURL)))
	}
	s.d = s.eng.dialect()
	s.st = newStatements(s.d)
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

// Close stops the notification listener and the writer and closes the connections. It is
// idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.stop()
		s.wg.Wait()
		s.eng.close()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// Driver returns "postgres" or "sqlite".
func (s *Store) Driver() string { return s.eng.name() }

// DB returns the connection pool, for tests and raw SQL.
func (s *Store) DB() *sqlx.DB { return s.db }

// Worker returns the name this Store writes into history rows.
func (s *Store) Worker() string { return s.opts.Worker }

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
