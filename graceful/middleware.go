package graceful

import (
	"net/http"
	"time"
)

// Header values shared by every draining response: net/http only reads them.
var (
	closeValue = []string{"close"}
	oneValue   = []string{"1"}
)

// Wrap returns h with in-flight accounting, the drain behaviour, the shutdown answer and the
// health paths. Run wraps the configured servers' handlers itself; Wrap is for handlers served
// some other way, whose requests then count for the stop too.
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

// ServeHTTP is the hot path: a few atomics and a clock read, no lock, no allocation.
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
	st, ok := s.begin()
	if !ok {
		s.reject(w)
		return
	}
	defer s.finish()
	if st == Draining {
		// HTTP/1.1: the connection closes after this response. HTTP/2 (a connection opened
		// since the drain's GOAWAY): GOAWAY instead, and the streams in flight complete.
		h := w.Header()
		h["Connection"] = closeValue
		h[DrainingHeader] = oneValue
	}
	m.next.ServeHTTP(w, r)
}

// Begin counts a request that the app serves other than through an http.Handler that Run or
// Wrap wrapped (a gRPC call, for one: graceful/grpcgraceful uses it), so that the stop waits for
// it and Status reports it. It returns false, having counted nothing, once the server is stopping:
// answer that the request was not processed. After true, call End once the request is done.
func (s *Server) Begin() bool {
	_, ok := s.begin()
	return ok
}

// End ends a request that Begin counted.
func (s *Server) End() { s.finish() }

// begin counts a request unless the server is stopping, and returns the state it saw.
func (s *Server) begin() (State, bool) {
	s.inFlight.Add(1)
	// Checked after counting: stop() switches the state and then waits for the count, so a
	// request is either counted before the switch (and awaited) or sees it (and is turned
	// away); none slips between the two.
	st := State(s.state.Load())
	if st >= Stopping {
		s.finish()
		return st, false
	}
	s.total.Add(1)
	s.last.Store(int64(time.Since(s.start)) + 1)
	return st, true
}

// finish uncounts a request and, once stopping, wakes the stop when it was the last one.
func (s *Server) finish() {
	if s.inFlight.Add(-1) == 0 && State(s.state.Load()) >= Stopping {
		select {
		case s.idle <- struct{}{}:
		default: // a wake-up is already pending; awaitIdle rechecks the count anyway
		}
	}
}

// NotProcessed answers like the server does for a request that came too late: 503, Retry-After
// and MarkerHeader, so RetryTransport sends it elsewhere whatever its method. It is for a handler
// whose context was cancelled at the stop deadline and that rolled back everything it did; a
// handler that left any effect behind must answer something else.
func (s *Server) NotProcessed(w http.ResponseWriter) { s.reject(w) }

// reject answers a request the server will not process: callers may retry it elsewhere, whatever
// its method.
func (s *Server) reject(w http.ResponseWriter) {
	h := w.Header()
	h.Set(MarkerHeader, "1")
	h.Set("Retry-After", s.retryAfter)
	h.Set("Connection", "close")
	http.Error(w, "shutting down: request not processed, retry on another endpoint", http.StatusServiceUnavailable)
}
