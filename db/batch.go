package db

import (
	"context"
	"database/sql"
)

// writeReq is one SQLite write waiting for a group commit.
type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan struct{}
}

// writeTx runs fn in a SQLite write transaction. Concurrent callers share transactions (group
// commit): whoever gets the writer lock runs every queued fn in one transaction, so the cost of a
// commit is paid once per batch. fn may run more than once (alone, after a failed batch) and must
// reset what it records on each run. The transaction commits only if every fn of the batch
// succeeds; otherwise each fn runs again in its own transaction, so one failure never spoils
// another caller's write.
func (s *Store) writeTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, r)
	s.qmu.Unlock()
	unlock := s.lockWrite()
	select {
	case <-r.done: // a previous leader ran it
		unlock()
		return r.err
	default:
	}
	// Holding the lock, no leader runs: r is still queued, and this caller leads the batch.
	s.qmu.Lock()
	batch := s.queue
	s.queue = nil
	s.qmu.Unlock()
	s.runBatch(batch)
	unlock()
	<-r.done
	return r.err
}

func (s *Store) runBatch(batch []*writeReq) {
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
		err := s.inTx(context.Background(), func(tx *sql.Tx) error {
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
		r.err = s.inTx(r.ctx, func(tx *sql.Tx) error { return r.fn(r.ctx, tx) })
		close(r.done)
	}
}

// inTx runs fn in a transaction and commits it when fn succeeds.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
