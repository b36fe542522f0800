package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
)

func fenceArgs(l Lease) []any { return []any{l.UUID, l.Owner, l.Attempt} }

// Claim moves up to max pending orders whose backoff has passed (oldest first, only the newest
// row of a uuid) to Import Started under a lease of worker, attempt+1, and returns them with their
// preprocessing. Several agents may claim at once: each order goes to exactly one of them.
func (s *Store) Claim(ctx context.Context, worker string, max int, lease time.Duration) ([]Order, error) {
	if worker == "" || max <= 0 || lease <= 0 {
		return nil, fmt.Errorf("%w claim: worker %q, max %d, lease %s: need a worker, max > 0 and lease > 0",
			ErrInvalid, worker, max, lease)
	}
	out, err := s.eng.claim(ctx, worker, max, lease)
	if err != nil {
		return nil, fmt.Errorf("claim orders: %w", err)
	}
	if len(out) > 0 && s.log.Logger.IsLevelEnabled(logrus.DebugLevel) {
		s.log.WithFields(logrus.Fields{"worker": worker, "count": len(out)}).Debug("orders claimed")
	}
	return out, nil
}

func scanOrders(rows *sql.Rows) ([]Order, error) {
	defer rows.Close()
	var out []Order
	for rows.Next() {
		o, err := scanOrder(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// Heartbeat renews the lease l for another lease duration and reports whether cancellation was
// requested. ErrLeaseLost means the order is no longer this worker's: stop working on it.
func (s *Store) Heartbeat(ctx context.Context, l Lease, lease time.Duration) (cancelRequested bool, err error) {
	lost := false
	err = s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, s.st.heartbeat, l.UUID, l.Owner, l.Attempt, s.d.dur(lease)).Scan(&cancelRequested)
		lost = errors.Is(err, sql.ErrNoRows)
		if lost {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("heartbeat order %s: %w", l.UUID, err)
	}
	if lost {
		return false, fmt.Errorf("heartbeat order %s: %w", l.UUID, ErrLeaseLost)
	}
	return cancelRequested, nil
}

// SetStage moves a running order to another running stage (Import Started or Import
// Preprocessing), fenced by l; a non-empty description also replaces the order's description.
func (s *Store) SetStage(ctx context.Context, l Lease, stage, description string) error {
	if stage != StageStarted && stage != StagePreprocessing {
		return fmt.Errorf("%w stage %q for a running order (want %q or %q)", ErrInvalid, stage, StageStarted, StagePreprocessing)
	}
	n, err := s.eng.change(ctx, s.st.setStage, append(fenceArgs(l), stage, description), l.Owner, description)
	if err != nil {
		return fmt.Errorf("set stage of order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("set stage of order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// SetResult stores the OMERO ids an import created (column result, JSON), fenced by l.
func (s *Store) SetResult(ctx context.Context, l Lease, r Result) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("set result of order %s: %w", l.UUID, err)
	}
	n, err := s.exec(ctx, s.st.setResult, l.UUID, l.Owner, l.Attempt, string(b))
	if err != nil {
		return fmt.Errorf("set result of order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("set result of order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// Finish ends a running order with Import Completed, Import Failed or Import Cancelled and the
// description (empty clears it), fenced by l, and drops the lease. The notices are written to the
// outbox in the same transaction (see Notice): they exist exactly when the stage was written.
func (s *Store) Finish(ctx context.Context, l Lease, stage, description string, notices ...Notice) error {
	if stage != StageCompleted && stage != StageFailed && stage != StageCancelled {
		return fmt.Errorf("%w final stage %q (want %q, %q or %q)", ErrInvalid, stage, StageCompleted, StageFailed, StageCancelled)
	}
	var (
		n   int
		err error
	)
	if len(notices) == 0 {
		n, err = s.eng.change(ctx, s.st.finish, append(fenceArgs(l), stage, description), l.Owner, description)
	} else {
		n, err = s.finishWithNotices(ctx, l, stage, description, notices)
	}
	if err != nil {
		return fmt.Errorf("finish order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("finish order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// exec runs one write statement and returns how many rows it changed.
func (s *Store) exec(ctx context.Context, query string, args ...any) (int64, error) {
	var n int64
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, err
}

// Release expires lease l now (at shutdown), so that recovery applies its policy to the order.
func (s *Store) Release(ctx context.Context, l Lease) error {
	n, err := s.exec(ctx, s.st.release, fenceArgs(l)...)
	if err != nil {
		return fmt.Errorf("release order %s: %w", l.UUID, err)
	}
	if n == 0 {
		return fmt.Errorf("release order %s: %w", l.UUID, ErrLeaseLost)
	}
	return nil
}

// Recover handles running orders (Import Started, Import Preprocessing) whose lease expired, or
// that have no lease (left by the Python service): it fails them as interrupted, or with p.Retry
// queues them again after a backoff until p.MaxAttempts (0: no limit). An order whose import had
// reached OMERO (its result holds filesets) is never queued again: it fails, naming the filesets.
// The leases in held (the caller's running orders) are left alone even when expired. It returns
// how many it changed and never touches other stages or older rows of a uuid. Several agents may
// recover at once: each order is changed by one of them.
func (s *Store) Recover(ctx context.Context, p RecoverPolicy, held ...Lease) (int, error) {
	type candidate struct {
		id, attempt   int64
		uuid, stage   string
		owner, result sql.NullString
	}
	rows, err := s.db.QueryContext(ctx, s.st.recoverFind)
	if err != nil {
		return 0, fmt.Errorf("recover orders: %w", err)
	}
	var cands []candidate
	for rows.Next() {
		var c candidate
		if err := rows.Scan(&c.id, &c.uuid, &c.stage, &c.attempt, &c.owner, &c.result); err != nil {
			rows.Close()
			return 0, fmt.Errorf("recover orders: %w", err)
		}
		if !isHeld(held, c.uuid, c.owner.String, c.attempt) {
			cands = append(cands, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("recover orders: %w", err)
	}
	total := 0
	for _, c := range cands {
		args := []any{c.id, c.stage, c.attempt, c.owner.String}
		retry := fmt.Sprintf("UPDATE imports SET stage = 'Import Pending' WHERE uuid = '%s';", c.uuid)
		var (
			n    int
			desc string
		)
		imported, tempDir, verified := storedResult(c.result.String)
		kept := ""
		if tempDir != "" {
			kept = fmt.Sprintf("; its converted files may still be in the local temp folder %s on the agent's host, "+
				"which OMERO's links can point to: remove it only once no image links into it", tempDir)
		}
		switch {
		case imported != "":
			again := "a retry would import every file again (orders retry --all)"
			if verified {
				again = "a retry imports only the files that are not in OMERO yet: " + retry
			}
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s) after it reached OMERO as %s: "+
				"the images are in OMERO; check them there — %s%s", c.stage, imported, again, kept)
			n, err = s.eng.change(ctx, s.st.recoverFail, append(args, desc), s.opts.Worker, desc)
		case p.Retry && (p.MaxAttempts <= 0 || int(c.attempt) < p.MaxAttempts):
			wait := p.Backoff * time.Duration(c.attempt)
			of := ""
			if p.MaxAttempts > 0 {
				of = fmt.Sprintf(" of %d", p.MaxAttempts)
			}
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s); queued again "+
				"after %s (attempt %d%s); the import may be partial in OMERO%s", c.stage, wait, c.attempt, of, kept)
			n, err = s.eng.change(ctx, s.st.recoverRetry, append(args, desc, s.d.dur(wait)), s.opts.Worker, desc)
		default:
			desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s); the import may be "+
				"partial in OMERO — check, then retry with: %s%s", c.stage, retry, kept)
			if p.Retry {
				desc = fmt.Sprintf("import interrupted (agent stopped or lost its lease during %s) and gave up after "+
					"%d attempts (max_attempts %d); the import may be partial in OMERO — check, then retry with: %s%s",
					c.stage, c.attempt, p.MaxAttempts, retry, kept)
			}
			n, err = s.eng.change(ctx, s.st.recoverFail, append(args, desc), s.opts.Worker, desc)
		}
		if err != nil {
			return total, fmt.Errorf("recover order %s: %w", c.uuid, err)
		}
		if n > 0 {
			s.log.WithFields(logrus.Fields{"order": c.uuid, "stage": c.stage, "attempt": c.attempt,
				"lease_owner": c.owner.String}).Warn("interrupted order recovered")
		}
		total += n
	}
	return total, nil
}

func isHeld(held []Lease, uuid, owner string, attempt int64) bool {
	for _, l := range held {
		if l.UUID == uuid && l.Owner == owner && int64(l.Attempt) == attempt {
			return true
		}
	}
	return false
}

// storedResult reads a stored result: its filesets named ("Fileset 12", "Filesets 12, 13"), or
// without filesets its images ("Images 7, 8": a registered Zarr), "" when none; its temp folder;
// and whether it says which file is in OMERO.
func storedResult(raw string) (filesets, tempDir string, verified bool) {
	var r Result
	if raw == "" || json.Unmarshal([]byte(raw), &r) != nil {
		return "", "", false
	}
	verified = len(r.Files) > 0
	for _, f := range r.Files {
		verified = verified && f.State != FileUnknown
	}
	kind, list := "Fileset", r.Filesets
	if len(list) == 0 {
		// A registered OME-Zarr creates images without a fileset.
		kind, list = "Image", r.Images
	}
	return named(kind, list), r.TempDir, verified
}
