package db

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Link is one ManagedRepository symlink an in-place order made (or redirected), as recorded when
// the order finished importing: where it points and what its target was then (table adi_links).
type Link struct {
	FilesetID int64
	Path      string    // the symlink, absolute, below the ManagedRepository
	Target    string    // where it points, absolute and clean
	Dir       bool      // the target is a folder (Size and ModTime are then the folder's own)
	Size      int64     // the target's size in bytes
	ModTime   time.Time // the target's modification time
	Dev, Ino  uint64    // the target's device and inode (0 when unknown)
}

// LinkRef is a recorded link and the order it belongs to.
type LinkRef struct {
	UUID string
	Link
}

// LinkedOrder is a completed order that has recorded links.
type LinkedOrder struct {
	UUID      string
	Group     string
	User      string
	Timestamp time.Time
	Images    []int64
	Links     int
}

// Damage is one thing an integrity check found wrong with a link of an order.
type Damage struct {
	Link   string `json:"link"`
	Target string `json:"target"`
	Kind   string `json:"kind"`             // moved, deleted, truncated, replaced, repointed, unreadable
	Detail string `json:"detail,omitempty"` // for people: what changed, what to do
	// MovedTo is where a moved target was found (same name and size, same root); "" when unknown.
	MovedTo string `json:"moved_to,omitempty"`
}

// Integrity is the outcome of the last check of one order (table adi_integrity).
type Integrity struct {
	UUID      string    `json:"-"`
	CheckedAt time.Time `json:"checked_at"`
	Links     int       `json:"links"`
	Broken    bool      `json:"broken"`
	Damage    []Damage  `json:"damage"`
}

// Move is one retention move (table adi_retention_moves): a file or folder taken out of a drop
// folder into the holding folder, and why.
type Move struct {
	At          time.Time
	Worker      string
	Rule        string
	UUID        string // the order it belonged to, "" for an ignored drop
	Source      string
	Destination string
	Reason      string
}

const linkCols = `fileset_id, link, target, is_dir, size, mtime_ns, dev, ino`

func scanLink(r rowScanner, extra ...any) (Link, error) {
	var (
		l              Link
		ns, dev, inode int64
	)
	err := r.Scan(append(extra, &l.FilesetID, &l.Path, &l.Target, &l.Dir, &l.Size, &ns, &dev, &inode)...)
	l.ModTime, l.Dev, l.Ino = time.Unix(0, ns).UTC(), uint64(dev), uint64(inode)
	return l, err
}

// SetLinks replaces the recorded links of the order holding lease l with links, fenced by l.
func (s *Store) SetLinks(ctx context.Context, l Lease, links []Link) error {
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM imports WHERE `+fence, fenceArgs(l)...).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrLeaseLost
		}
		if err != nil {
			return err
		}
		return replaceLinks(ctx, tx, l.UUID, links)
	})
	if err != nil {
		return fmt.Errorf("record links of order %s: %w", l.UUID, err)
	}
	return nil
}

func replaceLinks(ctx context.Context, tx *sql.Tx, uuid string, links []Link) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM adi_links WHERE uuid = $1`, uuid); err != nil {
		return err
	}
	st, err := tx.PrepareContext(ctx, `INSERT INTO adi_links (uuid, `+linkCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, k := range links {
		if !filepath.IsAbs(k.Path) || !filepath.IsAbs(k.Target) {
			return fmt.Errorf("%w link %q -> %q: both must be absolute", ErrInvalid, k.Path, k.Target)
		}
		if _, err := st.ExecContext(ctx, uuid, k.FilesetID, k.Path, filepath.Clean(k.Target), k.Dir, k.Size, k.ModTime.UnixNano(), int64(k.Dev), int64(k.Ino)); err != nil {
			return err
		}
	}
	return nil
}

// RepointLink records that the link path of order uuid now points at l.Target (a repair).
func (s *Store) RepointLink(ctx context.Context, uuid string, l Link) error {
	n, err := s.exec(ctx, `UPDATE adi_links SET target = $3, is_dir = $4, size = $5, mtime_ns = $6, dev = $7, ino = $8
		WHERE uuid = $1 AND link = $2`, uuid, l.Path, filepath.Clean(l.Target), l.Dir, l.Size, l.ModTime.UnixNano(), int64(l.Dev), int64(l.Ino))
	if err != nil {
		return fmt.Errorf("record repaired link %s of order %s: %w", l.Path, uuid, err)
	}
	if n == 0 {
		return fmt.Errorf("record repaired link %s of order %s: %w", l.Path, uuid, ErrNotFound)
	}
	return nil
}

// Links returns the recorded links of order uuid, by link path.
func (s *Store) Links(ctx context.Context, uuid string) ([]Link, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+linkCols+` FROM adi_links WHERE uuid = $1 ORDER BY link`, uuid)
	if err != nil {
		return nil, fmt.Errorf("read links of order %s: %w", uuid, err)
	}
	defer rows.Close()
	var out []Link
	for rows.Next() {
		l, err := scanLink(rows)
		if err != nil {
			return nil, fmt.Errorf("read links of order %s: %w", uuid, err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read links of order %s: %w", uuid, err)
	}
	return out, nil
}

// LinkedFilter pages LinkedOrders: orders whose uuid sorts after After, finished at or after Since
// (zero: any time), at most Limit (0: no limit).
type LinkedFilter struct {
	Since time.Time
	After string
	Limit int
}

// LinkedOrders lists the completed orders with recorded links, by uuid.
func (s *Store) LinkedOrders(ctx context.Context, f LinkedFilter) ([]LinkedOrder, error) {
	q := `SELECT i.uuid, CAST(i.group_name AS TEXT), CAST(i.user_name AS TEXT), i.timestamp, CAST(i.result AS TEXT),
		(SELECT count(*) FROM adi_links k WHERE k.uuid = i.uuid)
		FROM imports i WHERE i.stage = 'Import Completed' AND ` + newest + ` AND i.uuid > $1
		AND EXISTS (SELECT 1 FROM adi_links k WHERE k.uuid = i.uuid)`
	args := []any{f.After}
	if !f.Since.IsZero() {
		q += ` AND i.timestamp >= $2`
		args = append(args, s.timeArg(f.Since))
	}
	q += ` ORDER BY i.uuid`
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list linked orders: %w", err)
	}
	defer rows.Close()
	var out []LinkedOrder
	for rows.Next() {
		var (
			o           LinkedOrder
			group, user sql.NullString
			result      sql.NullString
			ts          nullTime
		)
		if err := rows.Scan(&o.UUID, &group, &user, &ts, &result, &o.Links); err != nil {
			return nil, fmt.Errorf("list linked orders: %w", err)
		}
		o.Group, o.User, o.Timestamp = group.String, user.String, ts.Time
		var r Result
		if result.Valid && json.Unmarshal([]byte(result.String), &r) == nil {
			o.Images = r.Images
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list linked orders: %w", err)
	}
	return out, nil
}

// timeArg is t as a query parameter compared with a timestamp column of this engine.
func (s *Store) timeArg(t time.Time) any {
	if s.eng.name() == DriverSQLite {
		return t.UTC().Format(sqliteTime)
	}
	return t
}

// LinksTo lists the recorded links (of any order) whose target is path, lies below path, or is a
// folder that holds path: every link that moving path would break. path should be resolved.
func (s *Store) LinksTo(ctx context.Context, path string) ([]LinkRef, error) {
	path = filepath.Clean(path)
	anc := []any{path, path + "/", path + "0"} // '0' follows '/': [path/, path0) is everything below
	in := []string{"$1"}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		anc = append(anc, d)
		in = append(in, fmt.Sprintf("$%d", len(anc)))
		if d == "/" || d == "." {
			break
		}
	}
	byteOrder := "" // SQLite compares text bytewise
	if s.eng.name() == DriverPostgres {
		byteOrder = ` COLLATE "C"`
	}
	rows, err := s.db.QueryContext(ctx, `SELECT uuid, `+linkCols+` FROM adi_links
		WHERE target IN (`+strings.Join(in, ", ")+`) OR (target`+byteOrder+` >= $2 AND target`+byteOrder+` < $3)
		ORDER BY uuid, link`, anc...)
	if err != nil {
		return nil, fmt.Errorf("find links to %s: %w", path, err)
	}
	defer rows.Close()
	var out []LinkRef
	for rows.Next() {
		var r LinkRef
		if r.Link, err = scanLink(rows, &r.UUID); err != nil {
			return nil, fmt.Errorf("find links to %s: %w", path, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find links to %s: %w", path, err)
	}
	return out, nil
}

// SetIntegrity stores the outcome of a check of one order, replacing the previous one.
func (s *Store) SetIntegrity(ctx context.Context, in Integrity) error {
	return s.SetIntegrities(ctx, []Integrity{in}, nil)
}

// SetIntegrities stores the outcomes of a check of several orders and the notices that report
// them (each with its UUID set; a key written before is ignored) in one transaction: a report is
// written exactly when the outcome it reports is.
func (s *Store) SetIntegrities(ctx context.Context, ins []Integrity, notices []Notice) error {
	if len(ins) == 0 && len(notices) == 0 {
		return nil
	}
	damage := make([]string, len(ins))
	for i, in := range ins {
		d := in.Damage
		if d == nil {
			d = []Damage{}
		}
		b, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("record integrity of order %s: %w", in.UUID, err)
		}
		damage[i] = string(b)
	}
	err := s.eng.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO adi_integrity (uuid, checked_at, links, broken, damage) VALUES ($1, `+s.d.now+`, $2, $3, $4)
			ON CONFLICT (uuid) DO UPDATE SET checked_at = excluded.checked_at, links = excluded.links,
			broken = excluded.broken, damage = excluded.damage`)
		if err != nil {
			return err
		}
		defer st.Close()
		for i, in := range ins {
			if _, err := st.ExecContext(ctx, in.UUID, in.Links, in.Broken, damage[i]); err != nil {
				return err
			}
		}
		return writeNotices(ctx, tx, "", notices)
	})
	if err != nil {
		return fmt.Errorf("record integrity of %d order(s): %w", len(ins), err)
	}
	if len(notices) > 0 {
		s.outboxWritten()
	}
	return nil
}

// Integrities returns the last check of each of the orders that was checked before, by uuid.
func (s *Store) Integrities(ctx context.Context, uuids []string) (map[string]Integrity, error) {
	out := map[string]Integrity{}
	if len(uuids) == 0 {
		return out, nil
	}
	ph := make([]string, len(uuids))
	args := make([]any, len(uuids))
	for i, u := range uuids {
		ph[i], args[i] = fmt.Sprintf("$%d", i+1), u
	}
	rows, err := s.db.QueryContext(ctx, `SELECT uuid, checked_at, links, broken, damage FROM adi_integrity WHERE uuid IN (`+strings.Join(ph, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("read integrity: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			in     Integrity
			at     nullTime
			damage string
		)
		if err := rows.Scan(&in.UUID, &at, &in.Links, &in.Broken, &damage); err != nil {
			return nil, fmt.Errorf("read integrity: %w", err)
		}
		if err := json.Unmarshal([]byte(damage), &in.Damage); err != nil {
			return nil, fmt.Errorf("read integrity of order %s: %w", in.UUID, err)
		}
		in.CheckedAt = at.Time
		out[in.UUID] = in
	}
	return out, rows.Err()
}

// GetIntegrity returns the last check of order uuid, or nil when it was never checked.
func (s *Store) GetIntegrity(ctx context.Context, uuid string) (*Integrity, error) {
	m, err := s.Integrities(ctx, []string{uuid})
	if err != nil {
		return nil, err
	}
	in, ok := m[uuid]
	if !ok {
		return nil, nil
	}
	return &in, nil
}

// BrokenOrders counts the orders whose last check found damage.
func (s *Store) BrokenOrders(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM adi_integrity WHERE broken`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count broken orders: %w", err)
	}
	return n, nil
}

// JournalMove records a retention move (written before the move is made, so that a crash between
// the two leaves a journal line pointing at the file, never a file without one).
func (s *Store) JournalMove(ctx context.Context, m Move) error {
	_, err := s.exec(ctx, `INSERT INTO adi_retention_moves (at, worker, rule, uuid, source, destination, reason)
		VALUES (`+s.d.now+`, $1, $2, $3, $4, $5, $6)`, s.opts.Worker, m.Rule, m.UUID, m.Source, m.Destination, m.Reason)
	if err != nil {
		return fmt.Errorf("journal move of %s: %w", m.Source, err)
	}
	return nil
}

// Moves returns the retention journal, oldest first.
func (s *Store) Moves(ctx context.Context) ([]Move, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT at, worker, rule, uuid, source, destination, reason FROM adi_retention_moves ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read retention journal: %w", err)
	}
	defer rows.Close()
	var out []Move
	for rows.Next() {
		var (
			m  Move
			at nullTime
		)
		if err := rows.Scan(&at, &m.Worker, &m.Rule, &m.UUID, &m.Source, &m.Destination, &m.Reason); err != nil {
			return nil, fmt.Errorf("read retention journal: %w", err)
		}
		m.At = at.Time
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read retention journal: %w", err)
	}
	return out, nil
}

// CountLinks counts the recorded links of all orders.
func (s *Store) CountLinks(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM adi_links`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count links: %w", err)
	}
	return n, nil
}

// ActiveOrdersNaming lists the orders not yet ended (pending, started, preprocessing) whose files
// column holds path as text, or one of the given folders as a whole JSON string (a folder order
// that holds path): orders that still need the file where it is.
func (s *Store) ActiveOrdersNaming(ctx context.Context, path string, folders []string) ([]string, error) {
	conds := []string{`CAST(i.files AS TEXT) LIKE $1 ESCAPE '\'`}
	args := []any{"%" + likeEscaper.Replace(path) + "%"}
	for _, f := range folders {
		args = append(args, `%"`+likeEscaper.Replace(f)+`"%`)
		conds = append(conds, fmt.Sprintf(`CAST(i.files AS TEXT) LIKE $%d ESCAPE '\'`, len(args)))
	}
	rows, err := s.db.QueryContext(ctx, `SELECT i.uuid FROM imports i WHERE `+newest+`
		AND i.stage IN ('Import Pending', 'Import Started', 'Import Preprocessing') AND (`+strings.Join(conds, " OR ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("find orders naming %s: %w", path, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("find orders naming %s: %w", path, err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
