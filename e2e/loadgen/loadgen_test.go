package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// runFor runs a generator until it recorded n requests (or 10 s passed) and returns them.
func runFor(t *testing.T, cfg Config, tg targets, n int) []report.Record {
	t.Helper()
	if err := cfg.validate(0); err != nil {
		t.Fatal(err)
	}
	g := newGenerator(cfg, tg, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.run(ctx); close(done) }()
	deadline := time.After(10 * time.Second)
	for g.sent.Load() < int64(n) {
		select {
		case <-deadline:
			t.Fatalf("only %d of %d requests recorded in 10 s", g.sent.Load(), n)
		case <-time.After(5 * time.Millisecond):
		}
	}
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

func TestOutcomesAgainstRealServers(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		return "http://" + addr + "/"
	}
	server := func(h http.HandlerFunc) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s.URL + "/"
	}
	tests := []struct {
		name    string
		url     string
		timeout string
		want    report.Outcome
	}{
		{"ok", server(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("X-Processed-By", "pod-1")
			_, _ = w.Write([]byte("done"))
		}), "", report.OK},
		{"refused", closedPort(), "", report.Refused},
		{"reset", server(func(w http.ResponseWriter, _ *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				_ = conn.(*net.TCPConn).SetLinger(0) // RST, not FIN
				_ = conn.Close()
			}
		}), "", report.Reset},
		{"timeout", server(func(_ http.ResponseWriter, r *http.Request) {
			// the server notices a client going away only once it has read the body
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}), "50ms", report.Timeout},
		{"5xx", server(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }), "", report.Status5xx},
		{"4xx is other", server(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }), "", report.Other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			recs := runFor(t, Config{Path: report.PathService, URL: tt.url, Rate: 200, Timeout: tt.timeout}, fixedTarget(tt.url), 5)
			got := outcomes(recs)
			if got[tt.want] != len(recs) {
				t.Fatalf("outcomes %v, want all %s (first err %q)", got, tt.want, recs[0].Err)
			}
			r := recs[0]
			if r.Path != report.PathService || r.Target == "" || r.Start.IsZero() {
				t.Errorf("record lacks path, target or time: %+v", r)
			}
			if tt.want == report.OK && (r.Pod != "pod-1" || r.Status != 200 || r.Err != "") {
				t.Errorf("ok record: %+v", r)
			}
			if tt.want != report.OK && r.Err == "" {
				t.Errorf("failure without its error text: %+v", r)
			}
		})
	}
}

func TestRateIsKeptWhenTheServerIsSlow(t *testing.T) {
	// 100 ms per answer at 200/s: a closed loop over few connections would send far fewer
	var mu sync.Mutex
	conns := map[string]bool{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}))
	defer s.Close()
	cfg := Config{Path: report.PathService, URL: s.URL, Rate: 200, Conns: 32}
	if err := cfg.validate(0); err != nil {
		t.Fatal(err)
	}
	g := newGenerator(cfg, fixedTarget(s.URL), quiet)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g.run(ctx)
	recs := g.take()
	// generous bounds: the point is open loop, not timing precision
	if len(recs) < 100 || len(recs) > 300 {
		t.Errorf("%d requests in 1 s at 200/s", len(recs))
	}
	if o := outcomes(recs); o[report.OK] != len(recs) {
		t.Errorf("outcomes %v", o)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conns) > 4*cfg.Conns {
		t.Errorf("%d connections for %d requests: keep-alive not used", len(conns), len(recs))
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err    error
		status int
		want   report.Outcome
	}{
		{nil, 200, report.OK},
		{nil, 204, report.OK},
		{nil, 500, report.Status5xx},
		{nil, 503, report.Status5xx},
		{nil, 429, report.Other},
		{context.DeadlineExceeded, 0, report.Timeout},
		{io.ErrUnexpectedEOF, 0, report.Reset},
		{fmt.Errorf("Post: %w", io.EOF), 0, report.Reset},
		{fmt.Errorf("http: server closed idle connection"), 0, report.Reset},
		{fmt.Errorf("something else"), 0, report.Other},
	}
	for _, tt := range tests {
		if got := classify(tt.err, tt.status); got != tt.want {
			t.Errorf("classify(%v, %d) = %s, want %s", tt.err, tt.status, got, tt.want)
		}
	}
}

// fakeConsul answers /v1/health/service/web like Consul: blocking on ?index until the instance
// list changes.
type fakeConsul struct {
	mu      sync.Mutex
	index   uint64
	addrs   []string
	changed chan struct{}
}

func (f *fakeConsul) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.addrs = addrs
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/health/service/web" || r.URL.Query().Get("passing") == "" {
		http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
		return
	}
	want, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	f.mu.Lock()
	for f.index <= want {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	var entries []map[string]any
	for _, a := range f.addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		entries = append(entries, map[string]any{"Node": map[string]any{"Address": "10.0.0.1"}, "Service": map[string]any{"Address": host, "Port": p}})
	}
	idx := f.index
	f.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
	_ = json.NewEncoder(w).Encode(entries)
}

func TestConsulPathFollowsTheInstanceList(t *testing.T) {
	backend := func(name string) (string, *httptest.Server) {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/work" {
				w.WriteHeader(http.StatusNotFound)
			}
			w.Header().Set("X-Processed-By", name)
		}))
		t.Cleanup(s.Close)
		return strings.TrimPrefix(s.URL, "http://"), s
	}
	a, _ := backend("a")
	b, _ := backend("b")
	c, _ := backend("c")
	fc := &fakeConsul{changed: make(chan struct{})}
	fc.set(a, b)
	cs := httptest.NewServer(fc)
	defer cs.Close()

	cfg := Config{Path: report.PathConsul, ConsulAddr: cs.URL, Service: "web", URLPath: "/work", Rate: 200}
	if err := cfg.validate(0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tg, err := watchConsul(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	<-tg.ready
	first := runFor(t, cfg, tg, 20)
	fc.set(c) // a and b leave, c arrives: a blocking query brings the change
	deadline := time.After(5 * time.Second)
	for {
		if u, _ := tg.next(); strings.Contains(u, c) {
			break
		}
		select {
		case <-deadline:
			t.Fatal("the new instance list never arrived")
		case <-time.After(time.Millisecond):
		}
	}
	second := runFor(t, cfg, tg, 20)
	pods := func(recs []report.Record) map[string]int {
		m := map[string]int{}
		for _, r := range recs {
			if r.Outcome != report.OK {
				t.Errorf("failed: %+v", r)
			}
			m[r.Pod]++
		}
		return m
	}
	if p := pods(first); p["a"] == 0 || p["b"] == 0 || p["c"] != 0 {
		t.Errorf("before the change, served by %v; want a and b", p)
	}
	if p := pods(second); p["c"] != len(second) {
		t.Errorf("after the change, served by %v; want only c", p)
	}
}

func TestControlAPI(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer target.Close()
	api := httptest.NewServer(newControl(context.Background(), quiet))
	defer api.Close()
	post := func(path, body string) (int, string) {
		resp, err := http.Post(api.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	start := fmt.Sprintf(`{"name":"r1","generators":[{"path":"service","url":%q,"rate":200}]}`, target.URL)

	bad := []struct{ body, field string }{
		{`{"name":"","generators":[]}`, "name"},
		{`{"name":"x","generators":[]}`, "generators"},
		{`{"name":"x","generators":[{"path":"service","url":"nope","rate":1}]}`, "generators[0].url"},
		{`{"name":"x","generators":[{"path":"dns","rate":1}]}`, "generators[0].path"},
		{`{"name":"x","generators":[{"path":"consul","consulAddr":"http://c:8500","rate":1}]}`, "generators[0].service"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":0}]}`, "generators[0].rate"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":1,"timeout":"soon"}]}`, "generators[0].timeout"},
		{`{"name":"x","bogus":1}`, "bogus"},
	}
	for _, b := range bad {
		code, msg := post("/start", b.body)
		if code != http.StatusBadRequest || !strings.Contains(msg, b.field) || strings.Count(strings.TrimSpace(msg), "\n") > 0 {
			t.Errorf("start %s: %d %q, want 400 naming %s on one line", b.body, code, msg, b.field)
		}
	}
	if code, msg := post("/start", start); code != http.StatusAccepted {
		t.Fatalf("start: %d %s", code, msg)
	}
	if code, _ := post("/start", start); code != http.StatusConflict {
		t.Errorf("second start of r1: %d, want 409", code)
	}
	resp, err := http.Get(api.URL + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st map[string][]struct{ Sent int64 }
	_ = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if len(st["r1"]) != 1 {
		t.Errorf("status: %v", st)
	}
	code, body := post("/stop?name=r1", "")
	if code != http.StatusOK {
		t.Fatalf("stop: %d %s", code, body)
	}
	var out struct{ Records []report.Record }
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Records) == 0 || out.Records[0].Outcome != report.OK {
		t.Errorf("stop answer: %v, %d records", err, len(out.Records))
	}
	if code, _ := post("/stop?name=r1", ""); code != http.StatusNotFound {
		t.Errorf("stop of a stopped run: %d, want 404", code)
	}
}
