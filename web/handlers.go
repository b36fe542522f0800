package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/omero-adi/omero-adi/db"
)

// filter is the listing's query: the page's form fields and GET /api/orders's parameters.
type filter struct {
	View   string `json:"view"` // mine | all (all: every order the person may see)
	Stage  string `json:"stage"`
	Group  string `json:"group"`
	Q      string `json:"q"`
	Since  string `json:"since"`
	Until  string `json:"until"`
	Before int64  `json:"before,omitempty"`
	Limit  int    `json:"limit"`
}

// Page sizes of the listing.
const (
	defaultLimit = 50
	maxLimit     = 200
)

// parseTime reads a filter time: a day (2026-12-03, local midnight) or RFC 3339.
func parseTime(v string, endOfDay bool) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", v, time.Local); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Parse(time.RFC3339, v)
}

// page reads the filter of r into a db.Page for v; a bad value is a message for the person.
func (s *Server) page(r *http.Request, v *session) (filter, db.Page, string) {
	q := r.URL.Query()
	f := filter{View: q.Get("view"), Stage: q.Get("stage"), Group: strings.TrimSpace(q.Get("group")), Q: strings.TrimSpace(q.Get("q")),
		Since: q.Get("since"), Until: q.Get("until"), Limit: defaultLimit}
	p := db.Page{Scope: db.Scope{User: v.user}, Group: f.Group, Text: f.Q}
	switch f.View {
	case "", "mine":
		f.View = "mine"
	case "all":
		p.Scope = v.scope()
	default:
		return f, p, fmt.Sprintf("view must be mine or all, got %q", f.View)
	}
	stage, ok := stageName(f.Stage)
	if !ok {
		return f, p, fmt.Sprintf("stage must be one of pending, started, preprocessing, completed, failed, cancelled; got %q", f.Stage)
	}
	p.Stage = stage
	var err error
	if p.Since, err = parseTime(f.Since, false); err != nil {
		return f, p, fmt.Sprintf("since must be a day such as 2026-12-01 or an RFC 3339 time, got %q", f.Since)
	}
	if p.Until, err = parseTime(f.Until, true); err != nil {
		return f, p, fmt.Sprintf("until must be a day such as 2026-12-31 or an RFC 3339 time, got %q", f.Until)
	}
	if b := q.Get("before"); b != "" {
		if f.Before, err = strconv.ParseInt(b, 10, 64); err != nil || f.Before < 1 {
			return f, p, fmt.Sprintf("before must be a positive row number from a next link, got %q", b)
		}
	}
	if l := q.Get("limit"); l != "" {
		if f.Limit, err = strconv.Atoi(l); err != nil || f.Limit < 1 || f.Limit > maxLimit {
			return f, p, fmt.Sprintf("limit must be a number from 1 to %d, got %q", maxLimit, l)
		}
	}
	p.Before, p.Limit = f.Before, f.Limit+1
	return f, p, ""
}

// listing is the My orders page and GET /api/orders.
type listing struct {
	Who    who       `json:"who"`
	Filter filter    `json:"filter"`
	Orders []summary `json:"orders"`
	// Next is the address of the next (older) page, "" on the last one.
	Next      string `json:"next"`
	SeesOther bool   `json:"-"` // the person may see others' orders (view=all)
}

func (s *Server) list(r *http.Request, v *session, base string) (listing, int, string) {
	f, p, bad := s.page(r, v)
	if bad != "" {
		return listing{}, http.StatusBadRequest, bad
	}
	got, err := s.d.Store.Browse(r.Context(), p)
	if err != nil {
		return listing{}, http.StatusServiceUnavailable, s.dbMessage(err)
	}
	l := listing{Who: whoView(v), Filter: f, Orders: []summary{}, SeesOther: v.admin || len(v.ownerOf) > 0}
	now := s.now()
	for i, o := range got {
		if i == f.Limit {
			q := r.URL.Query()
			q.Set("before", strconv.FormatInt(got[i-1].ID, 10))
			l.Next = base + "?" + q.Encode()
			break
		}
		l.Orders = append(l.Orders, s.summaryOf(o, now))
	}
	return l, http.StatusOK, ""
}

func (s *Server) dbMessage(err error) string {
	s.log.WithError(errors.New(s.scrub(err.Error()))).Error("status page: database query failed")
	return "The order database did not answer: try again in a moment, or tell the facility if it lasts."
}

func (s *Server) ordersPage(w http.ResponseWriter, r *http.Request, v *session) {
	l, code, msg := s.list(r, v, "/")
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	s.render(w, r, http.StatusOK, "orders", v, l)
}

func (s *Server) apiOrders(w http.ResponseWriter, r *http.Request, v *session) {
	l, code, msg := s.list(r, v, "/api/orders")
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, l)
}

// visible is order uuid when v may see it; otherwise the answer is the same as for an order that
// does not exist.
func (s *Server) visible(ctx context.Context, v *session, uuid string) (db.Order, int, string) {
	o, err := s.d.Store.Get(ctx, uuid)
	switch {
	case errors.Is(err, db.ErrNotFound), err == nil && !v.canSee(o):
		return db.Order{}, http.StatusNotFound, msgNotFound
	case err != nil:
		return db.Order{}, http.StatusServiceUnavailable, s.dbMessage(err)
	}
	return o, http.StatusOK, ""
}

func (s *Server) detail(r *http.Request, v *session) (detail, int, string) {
	o, code, msg := s.visible(r.Context(), v, r.PathValue("uuid"))
	if code != http.StatusOK {
		return detail{}, code, msg
	}
	hist, err := s.d.Store.History(r.Context(), o.UUID)
	if err != nil {
		return detail{}, http.StatusServiceUnavailable, s.dbMessage(err)
	}
	var created time.Time
	if len(hist) > 0 {
		created = hist[0].At
	}
	return s.detailOf(v, o, created, hist, s.now()), http.StatusOK, ""
}

// orderView is the order page: the order and who looks at it.
type orderView struct {
	Who   who    `json:"who"`
	Order detail `json:"order"`
}

func (s *Server) orderPage(w http.ResponseWriter, r *http.Request, v *session) {
	d, code, msg := s.detail(r, v)
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	s.render(w, r, http.StatusOK, "order", v, orderView{Who: whoView(v), Order: d})
}

func (s *Server) apiOrder(w http.ResponseWriter, r *http.Request, v *session) {
	d, code, msg := s.detail(r, v)
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, orderView{Who: whoView(v), Order: d})
}

// act is POST /api/orders/UUID/retry and /cancel: the rules of `orders retry` and `orders
// cancel`. A form posted by the page without JavaScript goes back to the order's page.
func (s *Server) act(name string) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, v *session) {
		o, code, msg := s.visible(r.Context(), v, r.PathValue("uuid"))
		if code != http.StatusOK {
			s.fail(w, r, v, code, msg)
			return
		}
		if !v.canAct(o) {
			s.fail(w, r, v, http.StatusForbidden, fmt.Sprintf("Only %s, who made this order, or a facility admin may %s it.", o.User, name))
			return
		}
		var err error
		if name == "retry" {
			_, err = s.d.Store.Retry(r.Context(), o.UUID)
		} else {
			_, err = s.d.Store.Cancel(r.Context(), o.UUID)
		}
		switch {
		case errors.Is(err, db.ErrStage):
			cur, _ := s.d.Store.Get(r.Context(), o.UUID)
			rule := "only failed or cancelled orders can be retried"
			if name == "cancel" {
				rule = "only pending or running orders can be cancelled"
			}
			s.fail(w, r, v, http.StatusConflict, fmt.Sprintf("This order is %s: %s. Reload the page to see its state.", cur.Stage, rule))
			return
		case errors.Is(err, db.ErrNotFound):
			s.fail(w, r, v, http.StatusNotFound, msgNotFound)
			return
		case err != nil:
			s.fail(w, r, v, http.StatusServiceUnavailable, s.dbMessage(err))
			return
		}
		s.log.WithField("order", o.UUID).WithField("user", v.user).Info("order " + name + " requested on the status page")
		if formPost(r) {
			http.Redirect(w, r, "/orders/"+url.PathEscape(o.UUID), http.StatusSeeOther)
			return
		}
		r.SetPathValue("uuid", o.UUID)
		d, code, msg := s.detail(r, v)
		if code != http.StatusOK {
			s.fail(w, r, v, code, msg)
			return
		}
		writeJSON(w, http.StatusOK, orderView{Who: whoView(v), Order: d})
	}
}

// queueView is the queue page and GET /api/queue.
type queueView struct {
	Who      who             `json:"who"`
	Groups   []db.GroupCount `json:"groups"`
	Agents   []db.AgentCount `json:"agents"`
	Running  []running       `json:"running"`
	Roots    []root          `json:"roots,omitempty"` // admins only
	Parts    []part          `json:"parts,omitempty"` // admins only: the last error of each part
	Database string          `json:"database"`        // "ok", or what is wrong
}

type running struct {
	UUID           string  `json:"uuid"`
	User           string  `json:"user"`
	Group          string  `json:"group"`
	Stage          string  `json:"stage"`
	LeaseOwner     string  `json:"lease_owner"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	Elapsed        string  `json:"-"`
}

type root struct {
	Path      string `json:"path"`
	Mode      string `json:"mode"`
	Reason    string `json:"reason"`
	Waiting   int    `json:"waiting"` // units waiting to settle
	LastError string `json:"last_error,omitempty"`
}

func (s *Server) queue(r *http.Request, v *session) (queueView, int, string) {
	if !v.seesQueue() {
		return queueView{}, http.StatusForbidden, "The queue is for facility admins and group owners: your own orders are under My orders."
	}
	scope := v.scope()
	if !v.admin {
		scope = db.Scope{Groups: v.ownerOf}
	}
	st, err := s.d.Store.Queue(r.Context(), scope)
	if err != nil {
		return queueView{}, http.StatusServiceUnavailable, s.dbMessage(err)
	}
	q := queueView{Who: whoView(v), Groups: st.Groups, Agents: st.Agents, Running: []running{}, Database: "ok"}
	if q.Groups == nil {
		q.Groups = []db.GroupCount{}
	}
	if q.Agents == nil {
		q.Agents = []db.AgentCount{}
	}
	now := s.now()
	for _, o := range st.Running {
		el := max(now.Sub(o.Timestamp), 0)
		q.Running = append(q.Running, running{UUID: o.UUID, User: s.scrub(o.User), Group: s.scrub(o.Group), Stage: o.Stage,
			LeaseOwner: s.scrub(o.LeaseOwner), ElapsedSeconds: el.Seconds(), Elapsed: human(el)})
	}
	if !v.admin {
		return q, http.StatusOK, ""
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.d.Store.DB().PingContext(ctx); err != nil {
		q.Database = s.scrub(err.Error())
	}
	if s.d.Health != nil {
		for _, h := range s.d.Health().Roots {
			q.Roots = append(q.Roots, root{Path: s.scrub(h.Path), Mode: h.Mode, Reason: h.Reason, Waiting: h.Pending, LastError: s.scrub(h.LastError)})
		}
	}
	for _, p := range s.d.Errors.Last() {
		p.Message = s.scrub(p.Message)
		p.When = p.At.Local().Format("2006-01-02 15:04:05")
		q.Parts = append(q.Parts, p)
	}
	return q, http.StatusOK, ""
}

func (s *Server) queuePage(w http.ResponseWriter, r *http.Request, v *session) {
	q, code, msg := s.queue(r, v)
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	s.render(w, r, http.StatusOK, "queue", v, q)
}

func (s *Server) apiQueue(w http.ResponseWriter, r *http.Request, v *session) {
	q, code, msg := s.queue(r, v)
	if code != http.StatusOK {
		s.fail(w, r, v, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, q)
}
