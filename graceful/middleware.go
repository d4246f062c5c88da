package graceful

import (
	"net/http"
	"time"
)

// closeValue is shared by every draining response: net/http only reads header values.
var closeValue = []string{"close"}

// Wrap returns h with in-flight accounting, the drain behaviour and the shutdown answer. Run wraps
// the configured servers' handlers itself; Wrap is for handlers served some other way.
func (s *Server) Wrap(h http.Handler) http.Handler {
	if h == nil {
		h = http.DefaultServeMux
	}
	return &middleware{s: s, next: h}
}

type middleware struct {
	s    *Server
	next http.Handler
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := m.s
	switch r.URL.Path {
	case s.cfg.ReadyPath:
		s.serveReady(w)
		return
	case s.cfg.LivePath:
		s.serveLive(w)
		return
	}
	s.inFlight.Add(1)
	// Checked after counting: stop() switches the state and then waits for the count, so a
	// request counted after the switch is turned away here instead of slipping through.
	st := State(s.state.Load())
	if st >= Stopping {
		s.finish()
		s.reject(w)
		return
	}
	defer s.finish()
	s.total.Add(1)
	s.last.Store(time.Now().UnixNano())
	if st == Draining {
		// HTTP/1.1: the connection closes after this response. HTTP/2: net/http turns this
		// header into a GOAWAY, and streams in flight complete.
		w.Header()["Connection"] = closeValue
	}
	m.next.ServeHTTP(w, r)
}

func (s *Server) finish() {
	if s.inFlight.Add(-1) == 0 && State(s.state.Load()) >= Stopping {
		select {
		case s.idle <- struct{}{}:
		default:
		}
	}
}

// reject answers a request the server will not process: callers may retry it elsewhere, whatever
// its method.
func (s *Server) reject(w http.ResponseWriter) {
	h := w.Header()
	h.Set(MarkerHeader, "1")
	h.Set("Retry-After", s.retryAfter)
	h.Set("Connection", "close")
	http.Error(w, "shutting down: request not processed, retry on another endpoint", http.StatusServiceUnavailable)
}
