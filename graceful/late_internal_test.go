//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful

import (
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestServeLate(t *testing.T) {
	tests := []struct {
		name       string
		open       bool
		left, need time.Duration
		want       bool
	}{
		{"plenty of time left", true, 5 * time.Second, 100 * time.Millisecond, true},
		{"just enough", true, 100 * time.Millisecond, 100 * time.Millisecond, true},
		{"deadline too close", true, 99 * time.Millisecond, 100 * time.Millisecond, false},
		{"deadline passed", true, -time.Second, 100 * time.Millisecond, false},
		{"in-flight requests done", false, 5 * time.Second, 100 * time.Millisecond, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := serveLate(tt.open, tt.left, tt.need); got != tt.want {
				t.Errorf("serveLate(%v, %s, %s) = %v, want %v", tt.open, tt.left, tt.need, got, tt.want)
			}
		})
	}
}

func TestLateNeed(t *testing.T) {
	tests := []struct {
		name                 string
		configured, measured time.Duration
		want                 time.Duration
	}{
		{"nothing measured: the floor", 0, 0, DefaultLateRequestFloor},
		{"quick requests: the floor", 0, 3 * time.Millisecond, DefaultLateRequestFloor},
		{"slow requests: the measured peak", 0, 2 * time.Second, 2 * time.Second},
		{"configured wins, below the floor too", 10 * time.Millisecond, 2 * time.Second, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lateNeed(tt.configured, tt.measured); got != tt.want {
				t.Errorf("lateNeed(%s, %s) = %s, want %s", tt.configured, tt.measured, got, tt.want)
			}
		})
	}
}

func TestDecayed(t *testing.T) {
	pack := func(period, us uint32) uint64 { return uint64(period)<<32 | uint64(us) }
	tests := []struct {
		name   string
		packed uint64
		now    uint32
		want   uint32
	}{
		{"nothing recorded", 0, 7, 0},
		{"same period", pack(10, 800), 10, 800},
		{"next period: still whole", pack(10, 800), 11, 800},
		{"two periods on: half", pack(10, 800), 12, 400},
		{"four periods on: an eighth", pack(10, 800), 14, 100},
		{"long ago: gone", pack(10, math.MaxUint32), 10 + 34, 0},
		{"clock before the record (never): whole", pack(10, 800), 3, 800},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := decayed(tt.packed, tt.now); got != tt.want {
				t.Errorf("decayed = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPeakFollowsTheLongestRecentRequest(t *testing.T) {
	var p peak
	at := p.at
	p.observe(time.Second, 40*time.Millisecond)
	p.observe(2*time.Second, 300*time.Millisecond)
	p.observe(3*time.Second, 20*time.Millisecond) // shorter: the peak stays
	if got := at(3 * time.Second); got != 300*time.Millisecond {
		t.Errorf("peak %s, want the longest request, 300ms", got)
	}
	if got := at(peakPeriod + time.Second); got != 300*time.Millisecond {
		t.Errorf("peak %s in the next period, want 300ms still", got)
	}
	if got := at(3*peakPeriod + time.Second); got != 75*time.Millisecond {
		t.Errorf("peak %s three periods on, want a quarter: 75ms", got)
	}
	p.observe(3*peakPeriod+time.Second, 100*time.Millisecond) // beats the decayed peak
	if got := at(3*peakPeriod + 2*time.Second); got != 100*time.Millisecond {
		t.Errorf("peak %s, want the new longest request, 100ms", got)
	}
	p.observe(4*time.Second, 2*time.Hour) // saturates rather than wraps
	if got := at(4 * time.Second); got != time.Duration(math.MaxUint32)*time.Microsecond {
		t.Errorf("peak %s after a 2h request, want the 71m cap", got)
	}
}

// The middleware while stopping: a request is served, with Connection: close and the draining
// hint, when the time left covers what it needs, else it gets the marked 503; both are counted.
func TestMiddlewareServesLateRequestsThatFit(t *testing.T) {
	tests := []struct {
		name       string
		budget     time.Duration // Config.LateRequestBudget
		measured   time.Duration // a request of that duration ended just before
		left       time.Duration // until the in-flight deadline
		closed     bool          // the in-flight requests are done
		wantServed bool
	}{
		{"time left, nothing measured", 0, 0, 5 * time.Second, false, true},
		{"less left than the floor", 0, 0, DefaultLateRequestFloor / 2, false, false},
		{"time left for the measured peak", 0, time.Second, 2 * time.Second, false, true},
		{"less left than the measured peak", 0, 3 * time.Second, 2 * time.Second, false, false},
		{"less left than the configured budget", time.Minute, 0, 5 * time.Second, false, false},
		{"time left for the configured budget", 10 * time.Millisecond, 3 * time.Second, 50 * time.Millisecond, false, true},
		{"in-flight requests done", 0, 0, 5 * time.Second, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t)
			s.cfg.LateRequestBudget = tt.budget
			if tt.measured > 0 {
				now := time.Since(s.start)
				s.peak.observe(now, tt.measured)
			}
			s.openLate(time.Now().Add(tt.left))
			s.setState(Stopping)
			if tt.closed {
				s.closeLate()
			}
			ran := false
			h := s.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders", nil))
			hdr := rec.Header()
			if tt.wantServed {
				if !ran || rec.Code != http.StatusOK || hdr.Get("Connection") != "close" || hdr.Get(DrainingHeader) != "1" || hdr.Get(MarkerHeader) != "" {
					t.Errorf("got %d ran=%v %v; want served with Connection: close and %s", rec.Code, ran, hdr, DrainingHeader)
				}
			} else if ran || rec.Code != http.StatusServiceUnavailable || hdr.Get(MarkerHeader) != "1" {
				t.Errorf("got %d ran=%v %v; want the marked 503, not processed", rec.Code, ran, hdr)
			}
			st := s.Status()
			if served := st.LateServed == 1 && st.LateRejected == 0 && st.RequestsTotal == 1; served != tt.wantServed ||
				(!served && (st.LateRejected != 1 || st.RequestsTotal != 0)) || st.InFlight != 0 {
				t.Errorf("status %+v after one late request, want it counted as served=%v", st, tt.wantServed)
			}
		})
	}
}

// The race the late window adds to the stop: requests keep arriving while the last in-flight one
// ends. awaitRequests may return only when no accepted request is still running, so each one
// that begin accepted must find the wait still running when it ends; and the requests that come
// after it returned are turned away.
func TestNoAcceptedLateRequestOutlivesTheWait(t *testing.T) {
	const workers = 8
	s := newTestServer(t)
	_, held, ok := s.begin() // in flight when the stop begins
	if !ok {
		t.Fatal("a running server turned a request away")
	}
	far := time.Now().Add(time.Minute)
	s.openLate(far)
	s.setState(Stopping)

	var waited atomic.Bool
	var served, cut, acceptedAfter atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 100000 {
				_, t0, ok := s.begin()
				if !ok {
					return
				}
				served.Add(1)
				runtime.Gosched() // the request's work
				if waited.Load() {
					cut.Add(1) // the stop would close its connection now
				}
				s.finish(t0)
				runtime.Gosched()
			}
		}()
	}
	close(start)
	// The last in-flight request ends while late ones come and go.
	for deadline := time.Now().Add(20 * time.Second); served.Load() < 500; runtime.Gosched() {
		if time.Now().After(deadline) {
			t.Fatalf("only %d late requests served", served.Load())
		}
	}
	s.finish(held)
	done := s.awaitRequests(far)
	waited.Store(true)
	for range workers {
		if _, _, ok := s.begin(); ok {
			acceptedAfter.Add(1)
		}
	}
	wg.Wait()
	if !done {
		t.Fatal("the wait timed out")
	}
	if n := cut.Load(); n > 0 {
		t.Errorf("%d accepted requests still ran when the wait returned", n)
	}
	if n := acceptedAfter.Load(); n > 0 {
		t.Errorf("%d requests accepted after the wait returned", n)
	}
	if st := s.Status(); st.InFlight != 0 || st.LateServed != uint64(served.Load()) {
		t.Errorf("status %+v, want nothing in flight and %d late requests served", st, served.Load())
	}
	t.Logf("%d late requests served before the window closed", served.Load())
}
