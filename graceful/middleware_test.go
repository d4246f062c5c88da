package graceful

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRejectionWhileStopping(t *testing.T) {
	s, err := New(Config{Servers: []*http.Server{{}}, AdminAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	h := s.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { ran = true }))
	s.state.Store(int32(Stopping))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders", nil))
	if ran {
		t.Error("handler ran while stopping")
	}
	if rec.Code != 503 || rec.Header().Get(MarkerHeader) == "" || rec.Header().Get("Retry-After") != "1" {
		t.Errorf("answer %d, headers %v; want 503 with %s and Retry-After", rec.Code, rec.Header(), MarkerHeader)
	}
	if s.inFlight.Load() != 0 || s.total.Load() != 0 {
		t.Errorf("a rejected request was counted: inFlight %d, total %d", s.inFlight.Load(), s.total.Load())
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

// BenchmarkBare and BenchmarkMiddleware compare a handler with and without the middleware;
// the difference is the hot-path overhead (docs/benchmarks.md).
func BenchmarkBare(b *testing.B) { benchHandler(b, okHandler) }

func BenchmarkMiddleware(b *testing.B) {
	s, err := New(Config{Servers: []*http.Server{{}}, AdminAddr: "-"})
	if err != nil {
		b.Fatal(err)
	}
	s.state.Store(int32(Running))
	benchHandler(b, s.Wrap(okHandler))
}

func BenchmarkMiddlewareDraining(b *testing.B) {
	s, err := New(Config{Servers: []*http.Server{{}}, AdminAddr: "-"})
	if err != nil {
		b.Fatal(err)
	}
	s.state.Store(int32(Draining))
	benchHandler(b, s.Wrap(okHandler))
}
