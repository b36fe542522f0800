package db

import (
	"context"
	"database/sql"
	"time"

	"github.com/jackc/pgx/v5"
)

// Notify returns a channel that receives (coalesced, buffered 1) whenever new pending work may
// exist. PostgreSQL: LISTEN on a dedicated connection, fed by the imports trigger; after a
// (re)connect it signals once, since notifications may have been missed. SQLite: a dedicated
// connection polls PRAGMA data_version (every commit by another connection changes it), and
// signals once when it starts. Both also signal when this Store creates or retries an
// order. The listener starts on the first call and stops with Close; callers still poll now and
// then (a notification is a hint, not a guarantee).
func (s *Store) Notify() <-chan struct{} {
	s.notifyOnce.Do(func() {
		if s.stopCtx.Err() != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.driver == DriverPostgres {
				s.listenPostgres(s.stopCtx)
			} else {
				s.pollSQLite(s.stopCtx)
			}
		}()
	})
	return s.notifyCh
}

// signal wakes a Notify receiver without blocking.
func (s *Store) signal() {
	select {
	case s.notifyCh <- struct{}{}:
	default:
	}
}

// wait sleeps d or until ctx is done; it reports whether ctx is still alive.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (s *Store) listenPostgres(ctx context.Context) {
	log := s.log.WithField("channel", notifyChannel)
	failures := 0
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() {
			if failures > 0 {
				log.Info("listening for new orders again")
			}
			failures = 0
			s.signal() // notifications may have been missed while not listening
		})
		if ctx.Err() != nil {
			return
		}
		failures++
		entry := log.WithError(maskErr(err, s.dsn)).WithField("retry_in", s.opts.NotifyReconnect)
		if failures == 1 {
			entry.Warn("listen for new orders failed; reconnecting")
		} else {
			entry.Debug("listen for new orders failed; reconnecting")
		}
		if !wait(ctx, s.opts.NotifyReconnect) {
			return
		}
	}
}

// listenOnce connects, LISTENs, calls ready, and forwards notifications until an error.
func (s *Store) listenOnce(ctx context.Context, ready func()) error {
	conn, err := pgx.Connect(ctx, s.dsn)
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
		s.signal()
	}
}

func (s *Store) pollSQLite(ctx context.Context) {
	log := s.log.WithField("poll", s.opts.NotifyPoll)
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
				c, err := s.db.Conn(ctx)
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
				s.signal()
				last = v
			}
		}
		if !wait(ctx, s.opts.NotifyPoll) {
			return
		}
	}
}
