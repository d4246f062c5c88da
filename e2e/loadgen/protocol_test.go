package main

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/e2e/app/workrpc"
	"github.com/lastcall-dev/lastcall/e2e/report"
	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
)

// h2cServer is an HTTP server that speaks HTTP/1.1 and HTTP/2 with prior knowledge, and counts
// the requests it got in each.
type h2cServer struct {
	*httptest.Server
	mu     sync.Mutex
	protos map[string]int
}

func newH2CServer(t *testing.T, name string) *h2cServer {
	t.Helper()
	h := &h2cServer{protos: map[string]int{}}
	h.Server = bothServer(t, func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.protos[r.Proto]++
		h.mu.Unlock()
		w.Header().Set("X-Processed-By", name)
	})
	return h
}

// bothServer serves h over HTTP/1.1 and h2c.
func bothServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetHTTP1(true)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (h *h2cServer) got() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.protos {
		out[k] = v
	}
	return out
}

// work is a gRPC Work service: it names itself, or answers what answer says.
type work struct {
	name   string
	answer func(ctx context.Context) error // nil: ok
}

func (w *work) Do(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if w.answer != nil {
		if err := w.answer(ctx); err != nil {
			return nil, err
		}
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(workrpc.ProcessedByKey, w.name))
	return wrapperspb.String("1"), nil
}

// grpcServer serves w with a plain grpc-go server on loopback and returns its address.
func grpcServer(t *testing.T, w *work) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	workrpc.Register(s, w)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// notProcessed answers as grpcgraceful does to a call that came too late.
func answerNotProcessed(ctx context.Context) error {
	_ = grpc.SetTrailer(ctx, metadata.Pairs(grpcgraceful.MarkerKey, "1"))
	return status.Error(codes.Unavailable, "shutting down: not processed")
}

func TestProtocolModesAgainstRealServers(t *testing.T) {
	h2c := newH2CServer(t, "pod-1")
	g := grpcServer(t, &work{name: "pod-1"})
	marked := grpcServer(t, &work{answer: answerNotProcessed})
	slow := grpcServer(t, &work{answer: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	closed := closedAddr(t)

	tests := []struct {
		name     string
		proto    report.Protocol
		url      string
		timeout  string
		want     report.Outcome
		wantHTTP string // the protocol the server saw, for HTTP
	}{
		{"http1-default ok", report.ProtoHTTP1Default, h2c.URL + "/work", "", report.OK, "HTTP/1.1"},
		{"h2c ok", report.ProtoH2C, h2c.URL + "/work", "", report.OK, "HTTP/2.0"},
		{"grpc ok", report.ProtoGRPC, g, "", report.OK, ""},
		{"grpc ok, dns target", report.ProtoGRPC, "dns:///" + g, "", report.OK, ""},
		{"http1-default refused", report.ProtoHTTP1Default, "http://" + closed + "/work", "", report.Refused, ""},
		{"h2c refused", report.ProtoH2C, "http://" + closed + "/work", "", report.Refused, ""},
		{"grpc refused", report.ProtoGRPC, closed, "", report.Refused, ""},
		{"grpc not processed is a failure for a plain caller", report.ProtoGRPC, marked, "", report.Status5xx, ""},
		{"grpc deadline", report.ProtoGRPC, slow, "50ms", report.Timeout, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h2c.got()[tt.wantHTTP]
			cfg := mustValidate(t, Config{Path: report.PathService, Protocol: tt.proto, URL: tt.url, Rate: 100, Timeout: tt.timeout})
			f, err := serviceTarget(cfg)
			if err != nil {
				t.Fatal(err)
			}
			recs := runUntil(t, cfg, f, 5)
			if got := outcomes(recs); got[tt.want] != len(recs) {
				t.Fatalf("outcomes %v, want all %s (first: %+v)", got, tt.want, recs[0])
			}
			r := recs[0]
			if r.Proto != tt.proto || r.Path != report.PathService || r.Target != f.hostPort || r.Retry {
				t.Errorf("record lacks its protocol, path or target: %+v", r)
			}
			if tt.want == report.OK && (r.Pod != "pod-1" || r.Err != "" || r.Latency <= 0) {
				t.Errorf("ok record: %+v", r)
			}
			if tt.want != report.OK && r.Err == "" {
				t.Errorf("failure without its error text: %+v", r)
			}
			if tt.wantHTTP != "" && h2c.got()[tt.wantHTTP]-before < len(recs) {
				t.Errorf("server saw %v, want %d more requests in %s", h2c.got(), len(recs), tt.wantHTTP)
			}
		})
	}
}

// h2c: one connection carries the requests, as Go's HTTP/2 client multiplexes them.
func TestH2COneConnection(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]bool{}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // several streams at once
	}))
	s.Config.Protocols = new(http.Protocols)
	s.Config.Protocols.SetUnencryptedHTTP2(true)
	s.Start()
	defer s.Close()
	cfg := mustValidate(t, Config{Path: report.PathService, Protocol: report.ProtoH2C, URL: s.URL, Rate: 200})
	recs := runUntil(t, cfg, mustFixed(t, s.URL), 40)
	if o := outcomes(recs); o[report.OK] != len(recs) {
		t.Fatalf("outcomes %v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) != 1 {
		t.Errorf("%d connections for %d requests, want 1", len(conns), len(recs))
	}
}

func watchWith(t *testing.T, cfg Config) *consulTargets {
	t.Helper()
	cfg = mustValidate(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tg, err := watchConsul(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := tg.waitReady(wctx); err != nil {
		t.Fatal(err)
	}
	return tg
}

// The consul path over gRPC: a ClientConn per instance, calls round robin over them; with
// Retry, a "not processed" answer is sent again to the other instance.
func TestGRPCConsulPath(t *testing.T) {
	a, b := grpcServer(t, &work{name: "a"}), grpcServer(t, &work{name: "b"})
	stopping := grpcServer(t, &work{answer: answerNotProcessed})

	t.Run("round robin", func(t *testing.T) {
		_, cs := newFakeConsul(t, a, b)
		cfg := Config{Path: report.PathConsul, Protocol: report.ProtoGRPC, ConsulAddr: cs.URL, Service: "web", Rate: 200}
		tg := watchWith(t, cfg)
		recs := runUntil(t, mustValidate(t, cfg), tg, 20)
		if p := servedBy(t, recs); p["a"] == 0 || p["b"] == 0 || len(p) != 2 {
			t.Errorf("served by %v; want a and b, round robin", p)
		}
		for _, r := range recs {
			if (r.Target != a && r.Target != b) || r.Proto != report.ProtoGRPC {
				t.Errorf("record %+v: want a pod's host:port and protocol grpc", r)
			}
		}
	})
	for _, retry := range []bool{false, true} {
		name := map[bool]string{false: "plain caller fails the not-processed calls", true: "retrying caller sends them elsewhere"}[retry]
		t.Run(name, func(t *testing.T) {
			_, cs := newFakeConsul(t, a, stopping)
			// few calls in flight at once, so that a retry's pick is the other instance
			cfg := Config{Path: report.PathConsul, Protocol: report.ProtoGRPC, ConsulAddr: cs.URL, Service: "web", Rate: 50, Retry: retry}
			tg := watchWith(t, cfg)
			recs := runUntil(t, mustValidate(t, cfg), tg, 30)
			o := outcomes(recs)
			// grpcgraceful sends GOAWAY before its "not processed" answer, so the balancer
			// leaves its connection out at once; this fake does not, so a retry may pick it
			// again when other calls took the picks in between, up to the last try
			if retry && (o[report.OK] < len(recs)-2 || o[report.OK]+o[report.Status5xx] != len(recs)) {
				t.Errorf("outcomes %v, want all ok but a rare unlucky one", o)
			}
			if !retry && (o[report.Status5xx] < len(recs)/5 || o[report.OK]+o[report.Status5xx] != len(recs)) {
				t.Errorf("outcomes %v, want ok and, round robin, many 5xx", o)
			}
			for _, r := range recs {
				if r.Retry != retry {
					t.Errorf("record %+v: retry %v", r, retry)
				}
				if r.Outcome == report.Status5xx && !strings.Contains(r.Err, "not processed") {
					t.Errorf("record %+v: want the marker named in its error", r)
				}
				if r.Outcome == report.OK && r.Target != a {
					t.Errorf("record %+v: want target %s", r, a)
				}
			}
		})
	}
}

// HTTP with retry: a marked 503 is sent again to the other instance.
func TestHTTPRetryConsulPath(t *testing.T) {
	a := newH2CServer(t, "a").Listener.Addr().String()
	stopping := bothServer(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(graceful.MarkerHeader, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	_, cs := newFakeConsul(t, a, stopping.Listener.Addr().String())
	for _, proto := range []report.Protocol{report.ProtoHTTP1, report.ProtoH2C} {
		t.Run(proto.String(), func(t *testing.T) {
			cfg := Config{Path: report.PathConsul, Protocol: proto, ConsulAddr: cs.URL, Service: "web", URLPath: "/work", Rate: 100, Retry: true}
			tg := watchWith(t, cfg)
			recs := runUntil(t, mustValidate(t, cfg), tg, 20)
			if p := servedBy(t, recs); p["a"] != len(recs) {
				t.Errorf("served by %v, want a only", p)
			}
			for _, r := range recs {
				if r.Target != a || !r.Retry {
					t.Errorf("record %+v: want target %s and retry", r, a)
				}
			}
		})
	}
}

func TestClassifyGRPC(t *testing.T) {
	marker := metadata.Pairs(grpcgraceful.MarkerKey, "1")
	tests := []struct {
		name    string
		err     error
		trailer metadata.MD
		want    report.Outcome
	}{
		{"ok", nil, nil, report.OK},
		{"not processed", status.Error(codes.Unavailable, "shutting down"), marker, report.Status5xx},
		{"refused", status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 10.0.0.1:9090: connect: connection refused"`), nil, report.Refused},
		{"EOF", status.Error(codes.Unavailable, "error reading from server: EOF"), nil, report.Reset},
		{"reset", status.Error(codes.Unavailable, "error reading from server: read tcp 10.0.0.2:1->10.0.0.1:9090: read: connection reset by peer"), nil, report.Reset},
		{"closing", status.Error(codes.Unavailable, "transport is closing"), nil, report.Reset},
		{"stream reset", status.Error(codes.Internal, "stream terminated by RST_STREAM with error code: INTERNAL_ERROR"), nil, report.Reset},
		{"no address", status.Error(codes.Unavailable, "name resolver error: produced zero addresses"), nil, report.Other},
		{"deadline", status.Error(codes.DeadlineExceeded, "context deadline exceeded"), nil, report.Timeout},
		{"cancelled", status.Error(codes.Canceled, "context canceled"), nil, report.Other},
		{"server error", status.Error(codes.Internal, "boom"), nil, report.Status5xx},
		{"server says unknown", status.Error(codes.Unknown, "panic"), nil, report.Status5xx},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "too many"), nil, report.Status5xx},
		{"not a status", errors.New("odd"), nil, report.Status5xx},
	}
	for _, tt := range tests {
		if got := classifyGRPC(tt.err, tt.trailer); got != tt.want {
			t.Errorf("%s: classifyGRPC(%v) = %s, want %s", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestValidateProtocol(t *testing.T) {
	svc := func(proto, url string) Config {
		return Config{Path: report.PathService, Protocol: report.Protocol(proto), URL: url, Rate: 10}
	}
	bad := []struct {
		name  string
		cfg   Config
		field string
	}{
		{"unknown protocol", svc("http3", "http://web/"), "generators[0].protocol:"},
		{"conns with defaults", func() Config { c := svc("h2c", "http://web/"); c.Conns = 4; return c }(), "generators[0].conns:"},
		{"idle timeout with defaults", func() Config { c := svc("http1-default", "http://web/"); c.IdleTimeout = "1s"; return c }(), "generators[0].idleTimeout:"},
		{"new conn with h2c", func() Config { c := svc("h2c", "http://web/"); c.Connection = "new"; return c }(), "generators[0].connection:"},
		{"grpc method", func() Config { c := svc("grpc", "web:9090"); c.Method = "GET"; return c }(), "generators[0].method:"},
		{"grpc url", svc("grpc", "http://web/"), "generators[0].url:"},
		{"grpc url without port", svc("grpc", "web"), "generators[0].url:"},
		{"grpc idempotency key", func() Config { c := svc("grpc", "web:9090"); c.IdempotencyKey = true; return c }(), "generators[0].idempotencyKey:"},
		{"grpc url path", Config{Path: report.PathConsul, Protocol: report.ProtoGRPC, ConsulAddr: "http://c:8500", Service: "web", URLPath: "/work", Rate: 1}, "generators[0].urlPath:"},
	}
	for _, tt := range bad {
		if err := tt.cfg.validate(0); err == nil || !strings.HasPrefix(err.Error(), tt.field) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line starting %q", tt.name, err, tt.field)
		}
	}
	good := []struct {
		cfg  Config
		want report.Protocol
	}{
		{svc("", "http://web/"), report.ProtoHTTP1},
		{svc("http1", "http://web/"), report.ProtoHTTP1},
		{func() Config { c := svc("http1-default", "http://web/"); c.Connection = "new"; return c }(), report.ProtoHTTP1Default},
		{svc("h2c", "http://web/"), report.ProtoH2C},
		{func() Config { c := svc("grpc", "dns:///web.ns.svc:9090"); c.Method = "POST"; return c }(), report.ProtoGRPC},
		{Config{Path: report.PathConsul, Protocol: report.ProtoGRPC, ConsulAddr: "http://c:8500", Service: "web", Port: 9090, Rate: 1}, report.ProtoGRPC},
	}
	for _, tt := range good {
		c := mustValidate(t, tt.cfg)
		if c.Protocol != tt.want {
			t.Errorf("%+v: protocol %q, want %q", tt.cfg, c.Protocol, tt.want)
		}
	}
}

// TestIdempotencyKey: every request of a generator with idempotencyKey carries its own key (Go's
// Transport resends such a request when its kept-alive connection closed first), and its
// records say so; a generator without it sends none.
func TestIdempotencyKey(t *testing.T) {
	for _, withKey := range []bool{true, false} {
		var mu sync.Mutex
		keys := map[string]int{}
		srv := bothServer(t, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			keys[r.Header.Get("Idempotency-Key")]++
			mu.Unlock()
		})
		recs := runUntil(t, Config{Path: report.PathService, Protocol: report.ProtoHTTP1Default, URL: srv.URL + "/work", Rate: 100, IdempotencyKey: withKey}, mustFixed(t, srv.URL+"/work"), 10)
		mu.Lock()
		got := maps.Clone(keys)
		mu.Unlock()
		if withKey && (len(got) != len(recs) || got[""] != 0) {
			t.Errorf("idempotencyKey: %d requests, keys seen %v: want one distinct key per request", len(recs), got)
		}
		if !withKey && got[""] != len(recs) {
			t.Errorf("no idempotencyKey: keys seen %v, want none", got)
		}
		for _, r := range recs {
			if r.Idem != withKey || r.Outcome != report.OK {
				t.Fatalf("record %+v: want Idem %v, ok", r, withKey)
			}
		}
	}
}
