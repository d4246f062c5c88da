package graceful

import (
	"math"
	"sync/atomic"
	"time"
)

// Late requests: a request that arrives while the server is stopping, typically on a connection
// its caller kept alive, while the stop still waits for requests in flight. Answering it "not
// processed" is safe only for callers that retry it elsewhere; a plain client counts the 503 as
// a failure. So it is served when it can finish before the in-flight deadline, by what the
// server measured of its requests, and answered "not processed" otherwise. Once the wait for
// in-flight requests is over, nothing more is served.

// DefaultLateRequestFloor is the least time a late request is expected to need when the server
// measures it (Config.LateRequestBudget zero): a measured peak of quick handlers misses what a
// late request may meet on a busy node, such as a scheduling delay or a GC pause.
const DefaultLateRequestFloor = 100 * time.Millisecond

// peakPeriod is the decay step of the measured peak: a duration counts whole for one to two
// periods, then half as much for every period after.
const peakPeriod = 30 * time.Second

// peak is a decaying maximum of request durations: the longest request of the last 30 to 60 s,
// or half of an older one for every 30 s since. A maximum rather than a mean or a quantile: a
// late request that cannot finish is cancelled at the deadline, a failure whatever the caller,
// while one turned away costs a retry elsewhere at worst. The decay lets a one-off slow request
// (a warm-up, an export) stop counting after a minute or two.
//
// It is one word, the period it was set in (high 32 bits) and the duration in microseconds (low
// 32 bits), so that the hot path does one atomic load and a compare, and a compare-and-swap only
// when a request beats the decayed peak.
type peak struct{ v atomic.Uint64 }

// observe records a request of duration d that ended at now, both measured from the Server's
// start.
func (p *peak) observe(now, d time.Duration) {
	us := micros(d)
	period := uint32(now / peakPeriod)
	for {
		old := p.v.Load()
		if us <= decayed(old, period) {
			return
		}
		if p.v.CompareAndSwap(old, uint64(period)<<32|uint64(us)) {
			return
		}
	}
}

// at is the peak at now, measured from the Server's start.
func (p *peak) at(now time.Duration) time.Duration {
	return time.Duration(decayed(p.v.Load(), uint32(now/peakPeriod))) * time.Microsecond
}

// decayed is the value in period now of a peak packed as peak stores it: whole in the period it
// was set and the next, halved for every period after.
func decayed(packed uint64, now uint32) uint32 {
	set, us := uint32(packed>>32), uint32(packed)
	if now <= set+1 {
		return us
	}
	age := now - set - 1
	if age >= 32 {
		return 0
	}
	return us >> age
}

// micros is d in whole microseconds, rounded up and saturated to 32 bits (71 minutes).
func micros(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min(int64((d+time.Microsecond-1)/time.Microsecond), math.MaxUint32))
}

// lateNeed is the time a late request is expected to need: the configured budget, else the
// measured peak, at least DefaultLateRequestFloor.
func lateNeed(configured, measured time.Duration) time.Duration {
	if configured > 0 {
		return configured
	}
	return max(measured, DefaultLateRequestFloor)
}

// serveLate decides about a request that arrives while stopping: it is served when the stop
// still waits for requests in flight (open) and the time left until that wait's deadline covers
// what the request needs; otherwise it is answered "not processed".
func serveLate(open bool, left, need time.Duration) bool {
	return open && left >= need
}

// lateRule describes the rule for the stop's log.
func (s *Server) lateRule(now time.Duration) (need time.Duration, source string) {
	if s.cfg.LateRequestBudget > 0 {
		return s.cfg.LateRequestBudget, "Config.LateRequestBudget"
	}
	m := s.peak.at(now)
	if m < DefaultLateRequestFloor {
		return DefaultLateRequestFloor, "floor"
	}
	return m, "longest recent request"
}

// openLate lets late requests in until deadline; the stop calls it before it enters Stopping.
func (s *Server) openLate(deadline time.Time) {
	// 0 means closed: a deadline at or before the start (never in practice) is 1 ns after it.
	s.lateUntil.Store(max(int64(deadline.Sub(s.start)), 1))
}

// closeLate turns every later request away. A request that counted itself before and saw the
// window open is still in flight: the caller checks the count again after closing.
func (s *Server) closeLate() { s.lateUntil.Store(0) }
