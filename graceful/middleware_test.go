//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func newTestServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Config{Servers: []*http.Server{{}}, AdminAddr: "-", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func TestMiddlewareByState(t *testing.T) {
	tests := []struct {
		state     State
		path      string
		wantCode  int
		wantRan   bool
		wantClose bool
		wantTotal uint64
	}{
		{Running, "/orders", 200, true, false, 1},
		{Draining, "/orders", 200, true, true, 1},
		{Stopping, "/orders", 503, false, true, 0},
		{Running, "/readyz", 200, false, false, 0},
		{Draining, "/readyz", 503, false, false, 0},
		{Stopping, "/readyz", 503, false, false, 0},
		{Draining, "/livez", 200, false, false, 0},
		{Stopped, "/livez", 503, false, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.state.String()+tt.path, func(t *testing.T) {
			s := newTestServer(t)
			s.setState(tt.state)
			ran := false
			h := s.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, tt.path, nil))
			if hinted := rec.Header().Get(DrainingHeader) == "1"; hinted != (tt.state == Draining && tt.wantRan) {
				t.Errorf("%s present = %v, want it on the draining server's answers", DrainingHeader, hinted)
			}
			if rec.Code != tt.wantCode || ran != tt.wantRan || (rec.Header().Get("Connection") == "close") != tt.wantClose {
				t.Errorf("got %d ran=%v Connection=%q; want %d ran=%v close=%v", rec.Code, ran, rec.Header().Get("Connection"), tt.wantCode, tt.wantRan, tt.wantClose)
			}
			if s.inFlight.Load() != 0 || s.total.Load() != tt.wantTotal {
				t.Errorf("inFlight %d, total %d; want 0, %d", s.inFlight.Load(), s.total.Load(), tt.wantTotal)
			}
			marked := rec.Header().Get(MarkerHeader) == "1" && rec.Header().Get("Retry-After") == "1"
			if marked != (tt.state >= Stopping && !tt.wantRan && tt.path == "/orders") {
				t.Errorf("marker and Retry-After present = %v, headers %v", marked, rec.Header())
			}
		})
	}
}

func TestRetryAfterRoundsUp(t *testing.T) {
	s, err := New(Config{Servers: []*http.Server{{}}, AdminAddr: "-", RetryAfter: 1500e6})
	if err != nil {
		t.Fatal(err)
	}
	if s.retryAfter != "2" {
		t.Errorf("Retry-After %q for 1.5s, want 2", s.retryAfter)
	}
}

// nopWriter is a ResponseWriter that allocates nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

func benchHandler(b *testing.B, h http.Handler) {
	w := &nopWriter{h: http.Header{}}
	r := httptest.NewRequest(http.MethodGet, "/work", nil)
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
}

// BenchmarkBare and BenchmarkMiddleware compare the same handler without and with the
// middleware; the difference is the hot-path overhead (docs/benchmarks-graceful.md).
func BenchmarkBare(b *testing.B) { benchHandler(b, okHandler) }

func BenchmarkMiddleware(b *testing.B) {
	s := newTestServer(b)
	s.setState(Running)
	benchHandler(b, s.Wrap(okHandler))
}

func BenchmarkMiddlewareDraining(b *testing.B) {
	s := newTestServer(b)
	s.setState(Draining)
	benchHandler(b, s.Wrap(okHandler))
}

// BenchmarkMiddlewareParallel shows the cost of the shared counters when every core serves.
func BenchmarkMiddlewareParallel(b *testing.B) {
	s := newTestServer(b)
	s.setState(Running)
	h := s.Wrap(okHandler)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		w := &nopWriter{h: http.Header{}}
		r := httptest.NewRequest(http.MethodGet, "/work", nil)
		for pb.Next() {
			h.ServeHTTP(w, r)
		}
	})
}
