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
	st, t0, ok := s.begin()
	if !ok {
		s.reject(w)
		return
	}
	defer s.finish(t0)
	if st >= Draining {
		// HTTP/1.1: the connection closes after this response. HTTP/2 (a connection opened
		// since the drain's GOAWAY): GOAWAY instead, and the streams in flight complete. A late
		// request served while stopping gets the same.
		h := w.Header()
		h["Connection"] = closeValue
		h[DrainingHeader] = oneValue
	}
	m.next.ServeHTTP(w, r)
}

// Begin counts a request that the app serves other than through an http.Handler that Run or
// Wrap wrapped, so that the stop waits for it and Status reports it. It returns false, having
// counted nothing, when the server is stopping and the request cannot be served: answer that it
// was not processed. After true, call End once the request is done. Admit does the same and
// also times the request, which Begin and End cannot.
func (s *Server) Begin() bool {
	_, _, ok := s.begin()
	return ok
}

// End ends a request that Begin counted.
func (s *Server) End() { s.uncount() }

// Ticket is a request that Admit counted and timed. End it once.
type Ticket struct {
	s     *Server
	start time.Duration // from the Server's start
}

// Admit is Begin for a request whose duration counts in the server's estimate of how long a
// request takes, which decides whether a request that arrives while stopping is still served
// (Config.LateRequestBudget): graceful/grpcgraceful counts gRPC calls with it. When ok, call
// End on the Ticket once the request is done.
func (s *Server) Admit() (t Ticket, ok bool) {
	_, start, ok := s.begin()
	if !ok {
		return Ticket{}, false
	}
	return Ticket{s: s, start: start}, true
}

// End ends the request: it is no longer in flight, and its duration is measured.
func (t Ticket) End() { t.s.finish(t.start) }

// begin counts a request unless the server is stopping and the request cannot be served in
// time (see serveLate). It returns the state it saw and when the request started, from s.start.
func (s *Server) begin() (State, time.Duration, bool) {
	s.inFlight.Add(1)
	// Checked after counting: stop() opens the late window, switches the state, and waits for
	// the count; once it reached zero it closes the window, then reads the count again. So a
	// request is either counted before the switch (and awaited), or sees the open window after
	// it was counted (and is awaited: the count read after the close sees it), or sees the
	// window closed (and is turned away); none slips between the two.
	st := State(s.state.Load())
	now := time.Since(s.start)
	if st >= Stopping {
		until := time.Duration(s.lateUntil.Load())
		if !serveLate(until > 0, until-now, lateNeed(s.cfg.LateRequestBudget, s.peak.at(now))) {
			s.lateRejected.Add(1)
			s.uncount()
			return st, 0, false
		}
		s.lateServed.Add(1)
	}
	s.total.Add(1)
	s.last.Store(int64(now) + 1)
	return st, now, true
}

// finish ends a request that began at start (from s.start): its duration feeds the peak, and it
// is uncounted.
func (s *Server) finish(start time.Duration) {
	now := time.Since(s.start)
	s.peak.observe(now, now-start)
	s.uncount()
}

// uncount uncounts a request and, once stopping, wakes the stop when it was the last one.
func (s *Server) uncount() {
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
