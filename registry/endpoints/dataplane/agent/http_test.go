package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// serve runs an agent over probe with the HTTP API, in real time.
func serve(t *testing.T, probe *fakeProbe, cfg Config, hcfg HandlerConfig) (*Agent, *httptest.Server) {
	t.Helper()
	cfg.Probe = probe
	if cfg.Syncs == nil {
		cfg.Syncs = &fakeSyncs{}
	}
	a := New(cfg)
	runUntilCleanup(t, a)
	srv := httptest.NewServer(a.Handler(hcfg))
	t.Cleanup(srv.Close)
	return a, srv
}

func do(t *testing.T, method, url, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestBadRequests(t *testing.T) {
	_, srv := serve(t, newFakeProbe(), Config{}, HandlerConfig{MaxTimeout: time.Minute})
	tests := []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"not JSON", PathWait, `ips: 10.0.0.1`, 400, "body: invalid character"},
		{"unknown field", PathWait, `{"ips":[{"ip":"10.0.0.1"}],"timeoutSeconds":3}`, 400, `body: json: unknown field "timeoutSeconds"`},
		{"two objects", PathCheck, `{"ips":[{"ip":"10.0.0.1"}]} {}`, 400, "body: want one JSON object"},
		{"no IPs", PathWait, `{"ips":[]}`, 400, "ips: empty: list at least one pod IP"},
		{"bad IP", PathWait, `{"ips":[{"ip":"10.0.0.1"},{"ip":"pod-a"}]}`, 400, `ips[1].ip: "pod-a" is not an IP address`},
		{"bad service", PathWait, `{"ips":[{"ip":"10.0.0.1","ports":[{"service":"web","port":80}]}]}`, 400, `ips[0].ports[0].service: "web": want namespace/name`},
		{"bad protocol", PathCheck, `{"ips":[{"ip":"10.0.0.1"}],"alsoDraining":[{"ip":"10.0.0.2","ports":[{"service":"demo/web","protocol":"tcp","port":80}]}]}`, 400, `alsoDraining[0].ports[0].protocol: "tcp": want TCP, UDP or SCTP`},
		{"bad port", PathWait, `{"ips":[{"ip":"10.0.0.1","ports":[{"service":"demo/web","name":"http","port":0}]}]}`, 400, `ips[0].ports[0].port: 0: want the EndpointSlice port's number`},
		{"bad port name", PathWait, `{"ips":[{"ip":"10.0.0.1","ports":[{"service":"demo/web","name":"a:b","port":80}]}]}`, 400, `ips[0].ports[0].name: "a:b"`},
		{"bad until", PathWait, `{"ips":[{"ip":"10.0.0.1"}],"until":"first"}`, 400, `until: "first": want all or any`},
		{"bad timeout", PathWait, `{"ips":[{"ip":"10.0.0.1"}],"timeout":"30"}`, 400, `timeout: "30": want a duration above zero`},
		{"timeout too long", PathWait, `{"ips":[{"ip":"10.0.0.1"}],"timeout":"2m"}`, 400, "timeout: 2m0s is more than this agent's --max-timeout 1m0s"},
		{"check takes no timeout", PathCheck, `{"ips":[{"ip":"10.0.0.1"}],"timeout":"1s"}`, 400, `body: json: unknown field "timeout"`},
		{"not JSON content", PathCheck, `ip=10.0.0.1`, 415, `Content-Type "application/x-www-form-urlencoded": want application/json`},
		{"query without ip", PathCheck + "?addr=10.0.0.1", "", 400, "query parameter ips: empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method, header := http.MethodPost, []string{"Content-Type", "application/json"}
			if strings.Contains(tt.path, "?") {
				method = http.MethodGet
			}
			if tt.code == 415 {
				header = []string{"Content-Type", "application/x-www-form-urlencoded"}
			}
			code, _, body := do(t, method, srv.URL+tt.path, tt.body, header...)
			var e ErrorJSON
			if code != tt.code || json.Unmarshal([]byte(body), &e) != nil || !strings.HasPrefix(e.Error, tt.want) {
				t.Errorf("got %d %s, want %d %q", code, body, tt.code, tt.want)
			}
		})
	}
	if code, _, _ := do(t, http.MethodGet, srv.URL+PathWait, ""); code != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d", PathWait, code)
	}
}

func TestAPI(t *testing.T) {
	probe := newFakeProbe()
	probe.set("10.0.0.1", dataplane.Routed)
	syncs := &fakeSyncs{}
	a, srv := serve(t, probe, Config{Syncs: syncs, Node: "worker-1", SyncPoll: 10 * time.Millisecond}, HandlerConfig{Token: "s3cret"})
	c := &Client{URL: srv.URL, Token: "s3cret"}
	ctx := context.Background()

	// GET /v1/check, for people.
	code, _, body := do(t, http.MethodGet, srv.URL+PathCheck+"?ip=10.0.0.1&ip=10.0.0.2", "", "Authorization", "Bearer s3cret")
	var ans Answer
	if code != 200 || json.Unmarshal([]byte(body), &ans) != nil || len(ans.IPs) != 2 || ans.Done || ans.Node != "worker-1" {
		t.Fatalf("GET check: %d %s", code, body)
	}

	// A wait that ends once the node stops routing.
	waited := make(chan error, 1)
	go func() {
		ans, err := c.Wait(ctx, WaitRequest{IPs: []TargetJSON{{IP: "10.0.0.1", Ports: []PortJSON{{Service: "demo/web", Name: "http", Port: 8080}}}}, Timeout: "20s"})
		if err == nil && (!ans.Done || ans.Read != "targeted" || ans.IPs[0].Verdict != "NotRouted" || ans.IPs[0].NotRoutedAt == nil) {
			err = errors.New("unexpected answer")
		}
		waited <- err
	}()
	for a.open() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	probe.set("10.0.0.1", dataplane.NotRouted)
	syncs.sync()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait not answered 10 s after the sync")
	}
	probe.mu.Lock()
	last := probe.reads[len(probe.reads)-1]
	probe.mu.Unlock()
	if want := (dataplane.ServicePort{Name: "demo/web:http", Protocol: "TCP", Port: 8080}); len(last) != 1 || len(last[0].Ports) != 1 || last[0].Ports[0] != want {
		t.Errorf("probe read %v", last)
	}

	// A wait that times out answers 200 with the latest verdicts.
	probe.set("10.0.0.3", dataplane.Routed)
	ans, err := c.Wait(ctx, WaitRequest{IPs: []TargetJSON{{IP: "10.0.0.3"}}, Timeout: "200ms"})
	if err != nil || !ans.TimedOut || ans.Done || ans.IPs[0].Verdict != "Routed" || ans.IPs[0].Routes[0].Chain != "KUBE-SVC-X" {
		t.Errorf("timeout: %+v, %v", ans, err)
	}

	// Wrong token.
	_, err = (&Client{URL: srv.URL, Token: "guess"}).Check(ctx, CheckRequest{IPs: []TargetJSON{{IP: "10.0.0.1"}}})
	var se *StatusError
	if !errors.As(err, &se) || se.Code != 401 || se.Message != "header Authorization: want Bearer and the agent's token" {
		t.Errorf("wrong token: %v", err)
	}
	// Unauthenticated: probes and metrics.
	for path, want := range map[string]string{"/healthz": "ok\n", "/livez": "ok\n"} {
		if code, _, body := do(t, http.MethodGet, srv.URL+path, ""); code != 200 || body != want {
			t.Errorf("%s: %d %q", path, code, body)
		}
	}
	if code, _, body := do(t, http.MethodGet, srv.URL+"/metrics", ""); code != 200 || !strings.Contains(body, `lastcall_node_checks_total{read="targeted",result="ok"}`) {
		t.Errorf("/metrics: %d\n%s", code, body)
	}

	// The ruleset cannot be read: 503 with the reason, and /healthz fails.
	probe.fail(errors.New("iptables-nft: Permission denied (you must be root)"))
	ans, err = c.Check(ctx, CheckRequest{IPs: []TargetJSON{{IP: "10.0.0.1"}}})
	if !errors.As(err, &se) || se.Code != 503 || se.Answer == nil || ans.Error != "iptables-nft: Permission denied (you must be root)" || ans.IPs[0].Verdict != "NotRouted" {
		t.Errorf("503: %+v, %v", ans, err)
	}
	if code, _, body := do(t, http.MethodGet, srv.URL+"/healthz", ""); code != 503 || !strings.Contains(body, "Permission denied") {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

func TestTooManyWaits(t *testing.T) {
	probe := newFakeProbe()
	probe.set("10.0.0.1", dataplane.Routed)
	a, srv := serve(t, probe, Config{MaxWaits: 1}, HandlerConfig{})
	c := &Client{URL: srv.URL}
	go func() {
		_, _ = c.Wait(context.Background(), WaitRequest{IPs: []TargetJSON{{IP: "10.0.0.1"}}, Timeout: "1s"})
	}()
	for a.open() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	code, header, body := do(t, http.MethodPost, srv.URL+PathWait, `{"ips":[{"ip":"10.0.0.2"}]}`)
	if code != http.StatusTooManyRequests || header.Get("Retry-After") != "1" || !strings.Contains(body, "too many open waits or IPs: 1 waits open") {
		t.Errorf("got %d %v %s", code, header, body)
	}
}
