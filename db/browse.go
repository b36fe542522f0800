package db

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"
)

// newestOnly is newest as an anti-join: no later row of the same uuid. The planner estimates it
// as keeping nearly every row (it does, outside Python-era databases), so a page of a person's
// orders is an ordered scan of (user_name, id) that stops after the page, where newest's
// correlated max() looks selective and makes it read and sort all of the person's orders.
const newestOnly = `NOT EXISTS (SELECT 1 FROM imports i2 WHERE i2.uuid = i.uuid AND i2.id > i.id)`

// Scope is whose orders a reader may see: every order (All), or the orders whose user_name is
// User and those of the Groups (the groups the reader owns).
type Scope struct {
	All    bool
	User   string
	Groups []string
}

// Page asks Browse for one page of orders in a Scope, newest first.
type Page struct {
	Scope Scope
	Stage string    // "" every stage
	Group string    // "" every group
	Text  string    // "" no text filter; else a case-insensitive substring of files, description or uuid
	Since time.Time // zero: no lower bound on the stage time
	Until time.Time // zero: no upper bound
	// Before is the row id the page starts below (0: the newest orders): the last Order.ID of the
	// previous page.
	Before int64
	Limit  int // at least 1
}

// Listed is an order as a listing shows it: the order and when it was created (its first history
// row; the stage time for orders that have none).
type Listed struct {
	Order
	Created time.Time
}

// extraScan scans an order row followed by more columns.
type extraScan struct {
	r     rowScanner
	extra []any
}

func (e extraScan) Scan(dest ...any) error { return e.r.Scan(append(dest, e.extra...)...) }

// Browse returns one page of the orders p asks for (the newest row of each), newest first. Each
// condition narrows an index scan (migration 0007: user, group and stage with the row id), so a
// page costs about Limit index entries whatever the table's size.
func (s *Store) Browse(ctx context.Context, p Page) ([]Listed, error) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var where []string
	if !p.Scope.All {
		who := []string{"i.user_name = " + arg(p.Scope.User)}
		for _, g := range p.Scope.Groups {
			who = append(who, "i.group_name = "+arg(g))
		}
		where = append(where, "("+strings.Join(who, " OR ")+")")
	}
	if p.Stage != "" {
		where = append(where, "i.stage = "+arg(p.Stage))
	}
	if p.Group != "" {
		where = append(where, "i.group_name = "+arg(p.Group))
	}
	if p.Text != "" {
		where = append(where, `LOWER(COALESCE(CAST(i.files AS TEXT), '') || ' ' || COALESCE(i.description, '') || ' ' || i.uuid) LIKE `+
			arg("%"+likeEscaper.Replace(strings.ToLower(p.Text))+"%")+` ESCAPE '\'`)
	}
	if !p.Since.IsZero() {
		where = append(where, "i.timestamp >= "+arg(s.timeArg(p.Since)))
	}
	if !p.Until.IsZero() {
		where = append(where, "i.timestamp < "+arg(s.timeArg(p.Until)))
	}
	if p.Before > 0 {
		where = append(where, "i.id < "+arg(p.Before))
	}
	where = append(where, newestOnly)
	limit := max(p.Limit, 1)
	q := `SELECT ` + orderCols + `, (SELECT min(h.at) FROM adi_history h WHERE h.uuid = i.uuid)` + orderFrom +
		`WHERE ` + strings.Join(where, " AND ") + fmt.Sprintf(" ORDER BY i.id DESC LIMIT %d", limit)
	rows, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("browse orders: %w", err)
	}
	defer rows.Close()
	var out []Listed
	for rows.Next() {
		var created nullTime
		o, err := scanOrder(extraScan{rows, []any{&created}})
		if err != nil {
			return nil, fmt.Errorf("browse orders: %w", err)
		}
		l := Listed{Order: o, Created: created.Time}
		if l.Created.IsZero() {
			l.Created = o.Timestamp
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("browse orders: %w", err)
	}
	return out, nil
}

// ExplainBrowse returns the database's plan of Browse's query for p (EXPLAIN; PostgreSQL also
// runs it, ANALYZE), one line per row: benchmarks print it to show the indexes at work.
func (s *Store) ExplainBrowse(ctx context.Context, p Page) (string, error) {
	return s.explain(ctx, func(ctx context.Context) error { _, err := s.Browse(ctx, p); return err })
}

// ExplainQueue is ExplainBrowse for Queue's queries.
func (s *Store) ExplainQueue(ctx context.Context, scope Scope) (string, error) {
	return s.explain(ctx, func(ctx context.Context) error { _, err := s.Queue(ctx, scope); return err })
}

// explainKey marks a context whose queries are explained instead of run (see explain).
type explainKey struct{}

// explainLog collects the plans of the queries run under an explainKey context.
type explainLog struct{ lines []string }

// explain runs fn with a context that makes query (below) print each plan into the result.
func (s *Store) explain(ctx context.Context, fn func(ctx context.Context) error) (string, error) {
	l := &explainLog{}
	if err := fn(context.WithValue(ctx, explainKey{}, l)); err != nil {
		return "", err
	}
	return strings.Join(l.lines, "\n"), nil
}

// queryer is a pool or a transaction.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// query runs q, after recording its plan when ctx asks for it (explain).
func (s *Store) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.queryOn(ctx, s.db, q, args...)
}

// queryOn is query on qr.
func (s *Store) queryOn(ctx context.Context, qr queryer, q string, args ...any) (*sql.Rows, error) {
	if l, ok := ctx.Value(explainKey{}).(*explainLog); ok {
		prefix := "EXPLAIN QUERY PLAN "
		if s.eng.name() == DriverPostgres {
			prefix = "EXPLAIN (ANALYZE, BUFFERS OFF) "
		}
		rows, err := qr.QueryContext(ctx, prefix+q, args...)
		if err != nil {
			return nil, fmt.Errorf("explain: %w", err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return nil, err
			}
			l.lines = append(l.lines, fmt.Sprint(vals[len(vals)-1]))
		}
		rows.Close()
		l.lines = append(l.lines, "")
	}
	return qr.QueryContext(ctx, q, args...)
}

// QueueStats is the queue at a glance (Queue).
type QueueStats struct {
	Groups  []GroupCount // per group: pending, running, failed now
	Agents  []AgentCount // per agent: running now, completed and failed in the last day
	Running []Order      // the running orders, longest running first
}

// GroupCount counts a group's orders by stage.
type GroupCount struct {
	Group                    string
	Pending, Running, Failed int
}

// AgentCount is what one agent (worker name) holds and finished.
type AgentCount struct {
	Agent                      string
	Running, Completed, Failed int // completed and failed: in the last 24 hours
}

// Queue counts the open and failed orders of scope per group, and per agent what runs now and
// what ended in the last day; it lists the running orders. The counts read the index of stage,
// group and uuid (countGroups) and the history's time index (migration 0007).
func (s *Store) Queue(ctx context.Context, scope Scope) (QueueStats, error) {
	var args []any
	cond := ""
	if !scope.All {
		who := make([]string, 0, len(scope.Groups))
		for _, g := range scope.Groups {
			args = append(args, g)
			who = append(who, fmt.Sprintf("$%d", len(args)))
		}
		if len(who) == 0 {
			return QueueStats{}, nil
		}
		cond = " AND i.group_name IN (" + strings.Join(who, ", ") + ")"
	}
	var st QueueStats
	var err error
	if st.Groups, err = s.countGroups(ctx, cond, args); err != nil {
		return QueueStats{}, fmt.Errorf("count orders: %w", err)
	}
	rrows, err := s.query(ctx, `SELECT `+orderCols+orderFrom+`WHERE i.stage IN ('Import Started', 'Import Preprocessing')`+cond+
		` AND `+newestOnly+` ORDER BY i.timestamp, i.id LIMIT 500`, args...)
	if err != nil {
		return QueueStats{}, fmt.Errorf("list running orders: %w", err)
	}
	if st.Running, err = scanOrders(rrows); err != nil {
		return QueueStats{}, fmt.Errorf("list running orders: %w", err)
	}
	agents := map[string]*AgentCount{}
	agent := func(name string) *AgentCount {
		if a := agents[name]; a != nil {
			return a
		}
		agents[name] = &AgentCount{Agent: name}
		return agents[name]
	}
	for _, o := range st.Running {
		agent(o.LeaseOwner).Running++
	}
	hcond := ""
	if cond != "" {
		hcond = " AND EXISTS (SELECT 1 FROM imports i WHERE i.uuid = h.uuid" + cond + ")"
	}
	since := s.timeArg(time.Now().Add(-24 * time.Hour))
	hrows, err := s.query(ctx, `SELECT h.worker, h.stage, count(*) FROM adi_history h
		WHERE h.at >= $`+fmt.Sprint(len(args)+1)+` AND h.stage IN ('Import Completed', 'Import Failed')`+hcond+`
		GROUP BY h.worker, h.stage`, append(args, since)...)
	if err != nil {
		return QueueStats{}, fmt.Errorf("count finished orders: %w", err)
	}
	for hrows.Next() {
		var w, stage string
		var n int
		if err := hrows.Scan(&w, &stage, &n); err != nil {
			hrows.Close()
			return QueueStats{}, fmt.Errorf("count finished orders: %w", err)
		}
		if stage == StageCompleted {
			agent(w).Completed += n
		} else {
			agent(w).Failed += n
		}
	}
	hrows.Close()
	if err := hrows.Err(); err != nil {
		return QueueStats{}, fmt.Errorf("count finished orders: %w", err)
	}
	for _, a := range agents {
		st.Agents = append(st.Agents, *a)
	}
	sort.Slice(st.Agents, func(i, j int) bool { return st.Agents[i].Agent < st.Agents[j].Agent })
	return st, nil
}

// countGroups counts the pending, running and failed orders per group (cond narrows the groups,
// with args). Each row of the index of stage, group and uuid is checked against the later rows of
// its uuid in the index of uuid and id. PostgreSQL would rather hash the whole table for that
// anti-join (it cannot know that nearly every uuid has one row): in a read-only transaction, hash
// and merge joins are off, as adi_claim turns bitmap scans off.
func (s *Store) countGroups(ctx context.Context, cond string, args []any) ([]GroupCount, error) {
	var qr queryer = s.db
	if s.eng.name() == DriverPostgres {
		tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
		if err != nil {
			return nil, err
		}
		defer func() { _ = tx.Rollback() }()
		for _, set := range []string{"SET LOCAL enable_hashjoin = off", "SET LOCAL enable_mergejoin = off"} {
			if _, err := tx.ExecContext(ctx, set); err != nil {
				return nil, err
			}
		}
		qr = tx
	}
	rows, err := s.queryOn(ctx, qr, `SELECT CAST(i.group_name AS TEXT), i.stage, count(*) FROM imports i
		WHERE i.stage IN ('Import Pending', 'Import Started', 'Import Preprocessing', 'Import Failed')`+cond+` AND `+newestOnly+`
		GROUP BY i.group_name, i.stage ORDER BY 1`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []GroupCount
	index := map[string]int{}
	for rows.Next() {
		var g, stage string
		var n int
		if err := rows.Scan(&g, &stage, &n); err != nil {
			return nil, err
		}
		k, ok := index[g]
		if !ok {
			k = len(out)
			index[g] = k
			out = append(out, GroupCount{Group: g})
		}
		switch stage {
		case StagePending:
			out[k].Pending += n
		case StageFailed:
			out[k].Failed += n
		default:
			out[k].Running += n
		}
	}
	return out, rows.Err()
}

// Version changes whenever an order is created or changes stage (the newest history row), so a
// reader can poll it to see that something moved. It reads the end of a primary key.
func (s *Store) Version(ctx context.Context) (int64, error) {
	var v sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT max(id) FROM adi_history`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read history version: %w", err)
	}
	return v.Int64, nil
}
