package db

import (
	"context"
	"time"
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
			s.eng.watch(s.stopCtx, s.signal)
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
