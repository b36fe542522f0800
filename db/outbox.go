package db

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Channels of a notice (adi_outbox.channel).
const (
	ChannelMail    = "mail"    // the requester's mail; Recipient is their address ("" when unknown)
	ChannelAdmin   = "admin"   // the admin copy of a failure; Recipient is the admin_to list
	ChannelWebhook = "webhook" // the webhook POST; Recipient is the hook's name
)

// Notice is one message an order's final stage sends: a row of the outbox (adi_outbox). Finish
// writes it with the stage, in one transaction; a sender claims it with a lease (ClaimNotices),
// sends it and marks it sent (NoticesSent), or backs off (NoticesFailed). Package notify owns
// Payload and what a channel means beyond these names.
type Notice struct {
	ID        int64
	Key       string // unique idempotency key, e.g. "UUID.ATTEMPT.mail": a second write of it is ignored
	UUID      string // the order
	User      string // the order's user
	Channel   string // ChannelMail, ChannelAdmin or ChannelWebhook
	Recipient string // who gets it; notices of one channel and recipient are sent together (digest)
	Payload   string // JSON, owned by package notify
	Created   time.Time
	Attempts  int    // claims so far, this one included
	Batch     string // the message that carries it: set when it was first claimed, kept by later claims
}

// OutboxNotify returns a channel that receives (coalesced, buffered 1) when this Store wrote
// notices: a sender in the same process sends them at once instead of at its next poll.
func (s *Store) OutboxNotify() <-chan struct{} { return s.outboxCh }

const insertNoticeSQL = `INSERT INTO adi_outbox (notice_key, uuid, user_name, channel, recipient, payload)
	VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (notice_key) DO NOTHING`

// finishWithNotices runs Finish's stage change and writes the notices in the same transaction;
// they are written only when the fenced change changed the order.
func (s *Store) finishWithNotices(ctx context.Context, l Lease, stage, description string, notices []Notice) (int, error) {
	var n int
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var err error
		n, err = s.eng.changeTx(ctx, tx, s.st.finish, append(fenceArgs(l), stage, description), l.Owner, description)
		if err != nil || n == 0 {
			return err
		}
		return writeNotices(ctx, tx, l.UUID, notices)
	})
	if err == nil && n > 0 && len(notices) > 0 {
		s.outboxWritten()
	}
	return n, err
}

// writeNotices writes notices in tx; a notice without a UUID is of order uuid. A notice whose key
// was written before is ignored.
func writeNotices(ctx context.Context, tx *sql.Tx, uuid string, notices []Notice) error {
	for _, nt := range notices {
		if nt.UUID == "" {
			nt.UUID = uuid
		}
		if nt.Key == "" || nt.Channel == "" || nt.UUID == "" {
			return fmt.Errorf("%w notice of order %q: key %q, channel %q: all three must be set", ErrInvalid, nt.UUID, nt.Key, nt.Channel)
		}
		if _, err := tx.ExecContext(ctx, insertNoticeSQL, nt.Key, nt.UUID, nt.User, nt.Channel, nt.Recipient, nt.Payload); err != nil {
			return fmt.Errorf("write notice %s: %w", nt.Key, err)
		}
	}
	return nil
}

// outboxWritten wakes an OutboxNotify receiver without blocking.
func (s *Store) outboxWritten() {
	select {
	case s.outboxCh <- struct{}{}:
	default:
	}
}

// ClaimNotices leases, for lease, every unsent notice of up to maxGroups groups (one channel and
// recipient) whose oldest unsent notice is at least window old, skipping notices still leased or
// backing off. owner must be unique per call (it fences NoticesSent and NoticesFailed): several
// senders may claim at once, and each notice goes to one of them. A notice claimed for the first
// time joins batch "OWNER/N" (N: its group's place in this claim), or with window 0 gets a batch of
// its own ("OWNER/N/ID": one message per notice); a notice claimed again keeps its batch, so a
// retry sends the same message. Notices come ordered by group, then id.
func (s *Store) ClaimNotices(ctx context.Context, owner string, maxGroups int, lease, window time.Duration) ([]Notice, error) {
	if owner == "" || maxGroups <= 0 || lease <= 0 || window < 0 {
		return nil, fmt.Errorf("%w claim notices: owner %q, max %d, lease %s, window %s", ErrInvalid, owner, maxGroups, lease, window)
	}
	now := s.d.now
	free := `sent_at IS NULL AND (not_before IS NULL OR not_before <= ` + now + `)
		AND (lease_expires IS NULL OR lease_expires <= ` + now + `)`
	groups := `SELECT channel, recipient FROM adi_outbox WHERE sent_at IS NULL GROUP BY channel, recipient
		HAVING min(created) <= ` + s.d.later(1) + ` AND max(CASE WHEN ` + free + ` THEN 1 ELSE 0 END) = 1
		ORDER BY min(id) LIMIT $2`
	claim := `UPDATE adi_outbox SET lease_owner = $1, lease_expires = ` + s.d.later(2) + `, attempts = attempts + 1,
		batch = COALESCE(batch, CAST($5 AS TEXT) || CASE WHEN $6 = 1 THEN '/' || CAST(id AS TEXT) ELSE '' END)
		WHERE channel = $3 AND recipient = $4 AND ` + free + `
		RETURNING id, notice_key, uuid, user_name, channel, recipient, payload, created, attempts, COALESCE(batch, '')`
	var out []Notice
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = nil
		rows, err := tx.QueryContext(ctx, groups, s.d.dur(-window), maxGroups)
		if err != nil {
			return err
		}
		var keys [][2]string
		for rows.Next() {
			var k [2]string
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				rows.Close()
				return err
			}
			keys = append(keys, k)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i, k := range keys {
			own := 0
			if window == 0 {
				own = 1
			}
			rows, err := tx.QueryContext(ctx, claim, owner, s.d.dur(lease), k[0], k[1], fmt.Sprintf("%s/%d", owner, i), own)
			if err != nil {
				return err
			}
			var group []Notice
			for rows.Next() {
				var (
					n       Notice
					created nullTime
				)
				if err := rows.Scan(&n.ID, &n.Key, &n.UUID, &n.User, &n.Channel, &n.Recipient, &n.Payload,
					&created, &n.Attempts, &n.Batch); err != nil {
					rows.Close()
					return err
				}
				n.Created = created.Time
				group = append(group, n)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			slices.SortFunc(group, func(a, b Notice) int { return cmp.Compare(a.ID, b.ID) })
			out = append(out, group...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim notices: %w", err)
	}
	return out, nil
}

// eachNotice runs stmt (parameters: $1 owner, $2 id, then extra) for every id in one write
// transaction and returns how many notices it changed.
func (s *Store) eachNotice(ctx context.Context, stmt, owner string, ids []int64, extra ...any) (int, error) {
	var n int
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		n = 0
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, stmt, append([]any{owner, id}, extra...)...)
			if err != nil {
				return err
			}
			c, err := res.RowsAffected()
			if err != nil {
				return err
			}
			n += int(c)
		}
		return nil
	})
	return n, err
}

// ErrNoticeLost is returned when none of the notices is leased by owner any more (the lease expired
// and another sender claimed them, or they were sent).
var ErrNoticeLost = errors.New("notice lease lost")

// NoticesSent marks the notices ids (leased by owner) sent, with note (why nothing was sent, e.g.
// no address; "" when the server accepted them). It returns ErrNoticeLost when none was still
// owner's.
func (s *Store) NoticesSent(ctx context.Context, owner string, ids []int64, note string) error {
	var noteArg any
	if note != "" {
		noteArg = note
	}
	n, err := s.eachNotice(ctx, `UPDATE adi_outbox SET sent_at = `+s.d.now+`, lease_owner = NULL, lease_expires = NULL,
		not_before = NULL, last_error = $3 WHERE lease_owner = $1 AND id = $2 AND sent_at IS NULL`, owner, ids, noteArg)
	if err != nil {
		return fmt.Errorf("mark notices sent: %w", err)
	}
	if n == 0 && len(ids) > 0 {
		return fmt.Errorf("mark notices sent: %w", ErrNoticeLost)
	}
	return nil
}

// NoticesFailed releases the notices ids (leased by owner) after a failed send: they are claimed
// again after backoff; reason is kept as last_error.
func (s *Store) NoticesFailed(ctx context.Context, owner string, ids []int64, backoff time.Duration, reason string) error {
	_, err := s.eachNotice(ctx, `UPDATE adi_outbox SET lease_owner = NULL, lease_expires = NULL,
		not_before = `+s.d.later(3)+`, last_error = $4 WHERE lease_owner = $1 AND id = $2 AND sent_at IS NULL`,
		owner, ids, s.d.dur(backoff), reason)
	if err != nil {
		return fmt.Errorf("release failed notices: %w", err)
	}
	return nil
}

// QueuedNotices counts the notices not sent yet.
func (s *Store) QueuedNotices(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM adi_outbox WHERE sent_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count queued notices: %w", err)
	}
	return n, nil
}

// KnownRecipient returns the newest address (holding '@') a mail notice of user was written with
// ("" when none): the address of a user whose order ended before it reached an OMERO session.
func (s *Store) KnownRecipient(ctx context.Context, user string) (string, error) {
	var to string
	err := s.db.QueryRowContext(ctx, `SELECT recipient FROM adi_outbox WHERE channel = 'mail' AND recipient <> ''
		AND user_name = $1 AND recipient LIKE '%@%' ORDER BY id DESC LIMIT 1`, user).Scan(&to)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read known address of %s: %w", user, err)
	}
	return to, nil
}
