package db

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
)

// errStoreClosed is returned by writes on a closed Store.
var errStoreClosed = errors.New("store closed")

// maxBatch bounds how many SQLite writes share one transaction.
const maxBatch = 64

// writeReq is one SQLite write waiting for a group commit.
type writeReq struct {
	ctx  context.Context
	fn   func(ctx context.Context, tx *sql.Tx) error
	err  error
	done chan struct{}
}

// writeTx runs fn in a SQLite write transaction. Concurrent callers share transactions (group
// commit): one writer goroutine takes every waiting fn and runs them in one transaction, so a
// commit is paid once per batch. fn may run more than once (alone, after a failed batch) and must
// reset what it records on each run. The transaction commits only if every fn of the batch
// succeeds; otherwise each fn runs again in its own transaction, so one failure never spoils
// another caller's write.
func (s *Store) writeTx(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	s.writerOnce.Do(func() {
		if s.stopCtx.Err() != nil {
			return
		}
		s.wg.Add(1)
		go s.writer()
	})
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case s.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopCtx.Done():
		return errStoreClosed
	}
	<-r.done // the writer always finishes what it received
	return r.err
}

// writer runs the queued writes of this Store until Close.
func (s *Store) writer() {
	defer s.wg.Done()
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-s.writes:
			batch = append(batch[:0], r)
		case <-s.stopCtx.Done():
			return
		}
		// Callers served by the previous batch are about to send their next write: yield until no
		// more arrive, so batches stay large instead of alternating between one write and the rest.
		for round := 0; round < 4 && len(batch) < maxBatch; round++ {
			runtime.Gosched()
			n := len(batch)
		more:
			for len(batch) < maxBatch {
				select {
				case r := <-s.writes:
					batch = append(batch, r)
				default:
					break more
				}
			}
			if len(batch) == n {
				break
			}
		}
		unlock := s.lockWrite()
		s.runBatch(batch)
		unlock()
	}
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
