package main

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// fakeConsul answers /v1/health/service/web like Consul: a blocking query (?index=) waits
// until the instance list changes or its wait time passes.
type fakeConsul struct {
	mu      sync.Mutex
	index   uint64
	addrs   []string // host:port of the passing instances
	failing bool
	changed chan struct{}
	queries int
}

func newFakeConsul(t *testing.T, addrs ...string) (*fakeConsul, *httptest.Server) {
	f := &fakeConsul{changed: make(chan struct{})}
	f.set(addrs...)
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return f, s
}

// bump wakes the blocked queries; f.mu held.
func (f *fakeConsul) bump() {
	f.index++
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeConsul) set(addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs = addrs
	f.bump()
}

func (f *fakeConsul) fail(failing bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing = failing
	f.bump()
}

func (f *fakeConsul) queryCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path != "/v1/health/service/web" || !q.Has("passing") {
		http.Error(w, "unexpected "+r.URL.String(), http.StatusBadRequest)
		return
	}
	want, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait, err := time.ParseDuration(q.Get("wait"))
	if err != nil {
		wait = 5 * time.Minute
	}
	timeout := time.After(wait)
	f.mu.Lock()
	f.queries++
	for f.index <= want {
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
		if f.index <= want { // wait passed: answer the same index, as Consul does
			break
		}
	}
	defer f.mu.Unlock()
	if f.failing {
		http.Error(w, "rpc error: No cluster leader", http.StatusInternalServerError)
		return
	}
	entries := []map[string]any{}
	for _, a := range f.addrs {
		host, port, _ := net.SplitHostPort(a)
		p, _ := strconv.Atoi(port)
		entries = append(entries, map[string]any{
			"Node":    map[string]any{"Node": "kind-worker", "Address": "172.18.0.2"},
			"Service": map[string]any{"Service": "web", "Address": host, "Port": p},
			"Checks":  []any{},
		})
	}
	w.Header().Set("X-Consul-Index", strconv.FormatUint(f.index, 10))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(entries)
}

// backend is a pod: it names itself in X-Processed-By.
func backend(t *testing.T, name string) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/work" {
			w.WriteHeader(http.StatusNotFound)
		}
		w.Header().Set("X-Processed-By", name)
	}))
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func startWatch(t *testing.T, consulURL string) (Config, *consulTargets) {
	t.Helper()
	cfg := mustValidate(t, Config{Path: report.PathConsul, ConsulAddr: consulURL, Service: "web", URLPath: "/work", Rate: 200})
	return cfg, watchWith(t, cfg)
}

func servedBy(t *testing.T, recs []report.Record) map[string]int {
	t.Helper()
	m := map[string]int{}
	for _, r := range recs {
		if r.Outcome != report.OK {
			t.Errorf("failed: %+v", r)
		}
		m[r.Pod]++
	}
	return m
}

func hasTarget(tg *consulTargets, hostPort string) func() bool {
	return func() bool {
		next, ok := tg.next()
		return ok && next.hostPort == hostPort
	}
}

func TestConsulPathFollowsTheInstanceList(t *testing.T) {
	a, b, c := backend(t, "a"), backend(t, "b"), backend(t, "c")
	fc, cs := newFakeConsul(t, a, b)
	cfg, tg := startWatch(t, cs.URL)

	first := runUntil(t, cfg, tg, 20)
	if p := servedBy(t, first); p["a"] == 0 || p["b"] == 0 || len(p) != 2 {
		t.Errorf("before the change, served by %v; want a and b, round robin", p)
	}
	for _, r := range first {
		if r.Target != a && r.Target != b {
			t.Errorf("target %q, want a pod's host:port", r.Target)
		}
	}

	fc.set(c) // a and b leave, c arrives: the blocking query returns with the change
	eventually(t, 10*time.Second, "the new instance list", hasTarget(tg, c))
	second := runUntil(t, cfg, tg, 20)
	if p := servedBy(t, second); p["c"] != len(second) {
		t.Errorf("after the change, served by %v; want only c", p)
	}
	// blocking queries, not polling: one answer per change, and one query waiting
	if n := fc.queryCount(); n > 4 {
		t.Errorf("%d queries for 2 changes", n)
	}
}

func TestConsulKeepsTheLastListOnErrors(t *testing.T) {
	a, b := backend(t, "a"), backend(t, "b")
	fc, cs := newFakeConsul(t, a)
	cfg, tg := startWatch(t, cs.URL)

	before := fc.queryCount()
	fc.fail(true)
	eventually(t, 10*time.Second, "retries of the failing query", func() bool { return fc.queryCount() >= before+2 })
	recs := runUntil(t, cfg, tg, 10)
	if p := servedBy(t, recs); p["a"] != len(recs) {
		t.Errorf("while Consul fails, served by %v; want a, the last list", p)
	}

	fc.fail(false)
	fc.set(b)
	eventually(t, 10*time.Second, "the list after Consul recovered", hasTarget(tg, b))
}

func TestConsulNoInstances(t *testing.T) {
	_, cs := newFakeConsul(t)
	cfg, tg := startWatch(t, cs.URL)
	recs := runUntil(t, cfg, tg, 5)
	for _, r := range recs {
		if r.Outcome != report.Other || r.Err != "no instances" || r.Target != "" {
			t.Errorf("with no instance: %+v", r)
		}
	}
}

func TestConsulInstanceAddress(t *testing.T) {
	entry := func(nodeAddr, svcAddr string, port int) *api.ServiceEntry {
		return &api.ServiceEntry{Node: &api.Node{Address: nodeAddr}, Service: &api.AgentService{Address: svcAddr, Port: port}}
	}
	tests := []struct {
		name    string
		port    int // the generator's override
		entries []*api.ServiceEntry
		want    []string
	}{
		{"service address and port", 0, []*api.ServiceEntry{entry("172.18.0.2", "10.244.1.7", 8080)}, []string{"10.244.1.7:8080"}},
		{"node address when the service has none", 0, []*api.ServiceEntry{entry("172.18.0.2", "", 8080)}, []string{"172.18.0.2:8080"}},
		{"port override", 9090, []*api.ServiceEntry{entry("n", "10.244.1.7", 8080), entry("n", "10.244.2.3", 0)}, []string{"10.244.1.7:9090", "10.244.2.3:9090"}},
		{"IPv6", 0, []*api.ServiceEntry{entry("n", "fd00::7", 8080)}, []string{"[fd00::7]:8080"}},
		{"none", 0, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tg := &consulTargets{cfg: Config{Port: tt.port, URLPath: "/work"}, log: quiet, ready: make(chan struct{})}
			tg.set(tt.entries, 1)
			var got []string
			for _, x := range tg.list {
				got = append(got, x.hostPort)
				if x.url != "http://"+x.hostPort+"/work" {
					t.Errorf("url %q for %s", x.url, x.hostPort)
				}
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("got %v, want %v", got, tt.want)
				}
			}
			select {
			case <-tg.ready:
			default:
				t.Error("not ready after an answer")
			}
		})
	}
}
