package web

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// hub hands the database's version to the open event streams. Run polls once for all of them,
// so an idle stream costs a blocked goroutine and nothing else.
type hub struct {
	mu     sync.Mutex
	subs   map[chan int64]struct{}
	closed bool
	done   chan struct{}
}

func newHub() *hub { return &hub{subs: map[chan int64]struct{}{}, done: make(chan struct{})} }

func (h *hub) subscribe() (chan int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	ch := make(chan int64, 1)
	h.subs[ch] = struct{}{}
	return ch, true
}

func (h *hub) unsubscribe(ch chan int64) {
	h.mu.Lock()
	delete(h.subs, ch)
	h.mu.Unlock()
}

// publish tells every stream about version v; a stream that has not taken the previous version
// gets the newest one instead.
func (h *hub) publish(v int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

// count is the number of open streams.
func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// keepAlive is how often an idle stream sends a comment, so proxies keep it open.
const keepAlive = 25 * time.Second

// events is GET /events: a server-sent event "change" whenever an order was created or changed
// stage; the page's script then fetches the page again.
func (s *Server) events(w http.ResponseWriter, r *http.Request, v *session) {
	fl, ok := w.(http.Flusher)
	if !ok {
		s.fail(w, r, v, http.StatusInternalServerError, "This server cannot stream events: reload the page to see changes.")
		return
	}
	ch, ok := s.live.subscribe()
	if !ok {
		s.fail(w, r, v, http.StatusServiceUnavailable, "The agent is stopping: reload the page in a moment.")
		return
	}
	defer s.live.unsubscribe(ch)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 3000\n\n")
	fl.Flush()
	t := time.NewTicker(keepAlive)
	defer t.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.live.done:
			return
		case ver := <-ch:
			fmt.Fprintf(w, "event: change\ndata: %d\n\n", ver)
		case <-t.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		}
		fl.Flush()
	}
}
