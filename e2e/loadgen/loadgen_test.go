package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// eventually waits for cond, checking every few milliseconds, and fails the test after limit.
func eventually(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(limit)
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("waited %s for %s", limit, what)
		case <-tick.C:
		}
	}
}

func mustValidate(t *testing.T, cfg Config) Config {
	t.Helper()
	if err := cfg.validate(0); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func mustFixed(t *testing.T, raw string) fixed {
	t.Helper()
	f, err := fixedTarget(raw)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// runUntil runs a generator until it recorded n requests and returns them all, in-flight ones
// included.
func runUntil(t *testing.T, cfg Config, tg targets, n int) []report.Record {
	t.Helper()
	g := newGenerator(mustValidate(t, cfg), tg, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.run(ctx); close(done) }()
	eventually(t, 20*time.Second, fmt.Sprintf("%d requests", n), func() bool { return g.sent.Load() >= int64(n) })
	cancel()
	<-done
	return g.take()
}

func outcomes(recs []report.Record) map[report.Outcome]int {
	m := map[report.Outcome]int{}
	for _, r := range recs {
		m[r.Outcome]++
	}
	return m
}

func server(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// hijack takes the connection from under the server, after the request was read.
func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err != nil {
		panic(err)
	}
	return conn
}

func TestOutcomesAgainstRealServers(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close() // nothing listens on its port any more

	tests := []struct {
		name    string
		url     string
		timeout string
		want    report.Outcome
	}{
		{"ok", server(t, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Processed-By", "pod-1")
			_, _ = io.WriteString(w, "done")
		}).URL, "", report.OK},
		{"listener closed: refused", closed.URL, "", report.Refused},
		{"connection reset", server(t, func(w http.ResponseWriter, _ *http.Request) {
			conn := hijack(w)
			_ = conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
			_ = conn.Close()
		}).URL, "", report.Reset},
		{"connection closed before the answer", server(t, func(w http.ResponseWriter, _ *http.Request) {
			_ = hijack(w).Close()
		}).URL, "", report.Reset},
		{"body cut short", server(t, func(w http.ResponseWriter, _ *http.Request) {
			conn := hijack(w)
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Processed-By: pod-1\r\n\r\nonly ten b")
			_ = conn.Close()
		}).URL, "", report.Reset},
		{"slower than the timeout", server(t, func(_ http.ResponseWriter, r *http.Request) {
			// the server notices the client going away only once it has read the body
			_, _ = io.Copy(io.Discard, r.Body)
			<-r.Context().Done()
		}).URL, "50ms", report.Timeout},
		{"503", server(t, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}).URL, "", report.Status5xx},
		{"404 is other", server(t, func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		}).URL, "", report.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := mustFixed(t, tt.url+"/work")
			recs := runUntil(t, Config{Path: report.PathService, URL: f.url, Rate: 100, Timeout: tt.timeout}, f, 5)
			if got := outcomes(recs); got[tt.want] != len(recs) {
				t.Fatalf("outcomes %v, want all %s (first: %+v)", got, tt.want, recs[0])
			}
			r := recs[0]
			if r.Path != report.PathService || r.Target != f.hostPort || r.Start.IsZero() {
				t.Errorf("record lacks path, target or time: %+v", r)
			}
			if tt.want == report.OK && (r.Pod != "pod-1" || r.Status != http.StatusOK || r.Err != "" || r.Latency <= 0) {
				t.Errorf("ok record: %+v", r)
			}
			if tt.want != report.OK && r.Err == "" {
				t.Errorf("failure without its error text: %+v", r)
			}
		})
	}
}

func TestOpenLoopRateAndKeepAlive(t *testing.T) {
	// 100 ms per answer at 200/s: a closed loop over few connections would send far fewer
	var mu sync.Mutex
	conns := map[string]bool{}
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.ContentLength == 0 {
			w.WriteHeader(http.StatusBadRequest)
		}
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		time.Sleep(100 * time.Millisecond) // the server's work
	})
	cfg := mustValidate(t, Config{Path: report.PathService, URL: s.URL, Rate: 200})
	g := newGenerator(cfg, mustFixed(t, s.URL), quiet)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g.run(ctx) // returns once the requests in flight at the end have their answers
	recs := g.take()
	// generous bounds: the point is open loop, not timing precision
	if len(recs) < 100 || len(recs) > 300 {
		t.Errorf("%d requests in 1 s at 200/s", len(recs))
	}
	if o := outcomes(recs); o[report.OK] != len(recs) {
		t.Errorf("outcomes %v: stopping must not cut the requests in flight", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) > len(recs)/2 {
		t.Errorf("%d connections for %d requests: keep-alive not used", len(conns), len(recs))
	}
}

func TestNewConnectionPerRequest(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]int{} // remote address → requests on it
	closing := 0              // requests that asked to close the connection
	s := server(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		conns[r.RemoteAddr]++
		if r.Close {
			closing++
		}
		w.Header().Set("X-Processed-By", "pod-1")
	})
	cfg := mustValidate(t, Config{Path: report.PathService, URL: s.URL, Rate: 100, Connection: "new"})
	recs := runUntil(t, cfg, mustFixed(t, s.URL), 20)
	if o := outcomes(recs); o[report.OK] != len(recs) {
		t.Fatalf("outcomes %v", o)
	}
	for _, r := range recs {
		if r.Conn != report.ConnNew || r.Path != report.PathService {
			t.Errorf("record not marked as a new-connection caller's: %+v", r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for addr, n := range conns {
		if n != 1 {
			t.Errorf("%d requests on connection %s, want one each", n, addr)
		}
	}
	if len(conns) != len(recs) || closing != len(recs) {
		t.Errorf("%d connections, %d closing requests for %d requests", len(conns), closing, len(recs))
	}
}

func TestInFlightCap(t *testing.T) {
	release := make(chan struct{})
	var now, peak atomic.Int64
	s := server(t, func(_ http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		storeMax(&peak, n)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	cfg := mustValidate(t, Config{Path: report.PathService, URL: s.URL, Rate: 200, MaxInFlight: 3})
	g := newGenerator(cfg, mustFixed(t, s.URL), quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.run(ctx); close(done) }()
	eventually(t, 20*time.Second, "requests beyond the cap", func() bool { return g.failed.Load() >= 5 })
	cancel()
	close(release)
	<-done
	recs := g.take()
	// the requests held by the server end ok; one sent as the run stopped may join them
	if o := outcomes(recs); o[report.OK] < 3 || o[report.Other] < 5 || o[report.OK]+o[report.Other] != len(recs) {
		t.Errorf("outcomes %v, want 3 ok and the rest other", o)
	}
	for _, r := range recs {
		if r.Outcome == report.Other && r.Err != errOverloaded {
			t.Errorf("refused by the cap, but: %+v", r)
		}
	}
	if p := peak.Load(); p > 3 {
		t.Errorf("%d requests in flight at once, cap 3", p)
	}
}

func storeMax(v *atomic.Int64, n int64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}

func TestClassify(t *testing.T) {
	opErr := func(op string, err error) error {
		return &net.OpError{Op: op, Net: "tcp", Err: os.NewSyscallError(op, err)}
	}
	tests := []struct {
		name   string
		err    error
		status int
		want   report.Outcome
	}{
		{"200", nil, 200, report.OK},
		{"204", nil, 204, report.OK},
		{"500", nil, 500, report.Status5xx},
		{"503", nil, 503, report.Status5xx},
		{"429", nil, 429, report.Other},
		{"404", nil, 404, report.Other},
		{"301 not followed", nil, 301, report.Other},
		{"refused", fmt.Errorf("Post: %w", opErr("dial", syscall.ECONNREFUSED)), 0, report.Refused},
		{"reset on read", fmt.Errorf("Post: %w", opErr("read", syscall.ECONNRESET)), 0, report.Reset},
		{"broken pipe", fmt.Errorf("Post: %w", opErr("write", syscall.EPIPE)), 0, report.Reset},
		{"EOF", fmt.Errorf("Post: %w", io.EOF), 0, report.Reset},
		{"body cut", io.ErrUnexpectedEOF, 200, report.Reset},
		{"idle connection closed", errors.New("Post: http: server closed idle connection"), 0, report.Reset},
		{"context deadline", fmt.Errorf("Post: %w", context.DeadlineExceeded), 0, report.Timeout},
		{"dial timeout", opErr("dial", os.ErrDeadlineExceeded), 0, report.Timeout},
		{"no route", opErr("dial", syscall.EHOSTUNREACH), 0, report.Other},
		{"canceled", context.Canceled, 0, report.Other},
		{"anything else", errors.New("something else"), 0, report.Other},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.status); got != tt.want {
			t.Errorf("%s: classify(%v, %d) = %s, want %s", tt.name, tt.err, tt.status, got, tt.want)
		}
	}
}

func TestFixedTarget(t *testing.T) {
	tests := []struct{ url, hostPort string }{
		{"http://web.ns.svc.cluster.local/work", "web.ns.svc.cluster.local:80"},
		{"https://web/", "web:443"},
		{"http://10.96.0.10:8080/work", "10.96.0.10:8080"},
		{"http://[fd00::1]/", "[fd00::1]:80"},
		{"nope", ""},
		{"ftp://web/", ""},
		{"http:///work", ""},
	}
	for _, tt := range tests {
		f, err := fixedTarget(tt.url)
		if (err == nil) != (tt.hostPort != "") || f.hostPort != tt.hostPort {
			t.Errorf("fixedTarget(%q) = %q, %v; want %q", tt.url, f.hostPort, err, tt.hostPort)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	c := mustValidate(t, Config{Path: report.PathConsul, ConsulAddr: "http://consul:8500", Service: "web", Rate: 100})
	if c.Method != http.MethodPost || c.Conns != 32 || c.timeout != 5*time.Second || c.URLPath != "/" || c.MaxInFlight != 532 ||
		c.Connection != "keep-alive" {
		t.Errorf("defaults: %+v", c)
	}
	c = mustValidate(t, Config{Path: report.PathService, URL: "http://web/", Rate: 10, Timeout: "2s", Conns: 4, MaxInFlight: 7, Method: "GET"})
	if c.timeout != 2*time.Second || c.MaxInFlight != 7 || c.Method != http.MethodGet {
		t.Errorf("given values not kept: %+v", c)
	}
	if err := (&Config{Path: report.PathService, URL: "http://web/", Rate: 10, Method: "get it"}).validate(3); err == nil ||
		!strings.HasPrefix(err.Error(), "generators[3].method:") {
		t.Errorf("bad method: %v", err)
	}
	if err := (&Config{Path: report.PathService, URL: "http://web/", Rate: 2, Connection: "Close"}).validate(1); err == nil ||
		!strings.HasPrefix(err.Error(), "generators[1].connection:") {
		t.Errorf("bad connection: %v", err)
	}
}
