package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// The manager as shipped, against a real API server: probes answer and the metrics endpoint
// serves lastcall's metrics; cancelling the context stops it cleanly.
func TestManagerServesProbesAndMetrics(t *testing.T) {
	_, cfg := apitest.Start(t)
	o := options{metricsAddr: freeAddr(t), probeAddr: freeAddr(t), sweepInterval: time.Minute, gateRetry: time.Second, observePoll: time.Second, qps: 50, burst: 100}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, o) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, u := range []struct{ url, want string }{
		{"http://" + o.probeAddr + "/healthz", "ok"},
		{"http://" + o.probeAddr + "/readyz", "ok"},
		{"http://" + o.metricsAddr + "/metrics", "lastcall_stale_registrations_removed_total"},
	} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body := get(u.url)
			if code == http.StatusOK && strings.Contains(body, u.want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d %q, want 200 with %q", u.url, code, body, u.want)
			}
			time.Sleep(50 * time.Millisecond) // the manager is starting: nothing to wait on but the port
		}
	}
}

func TestRunRejectsBadIntervals(t *testing.T) {
	err := run(context.Background(), nil, options{sweepInterval: 0, gateRetry: time.Second})
	if err == nil || !strings.Contains(err.Error(), "--sweep-interval") {
		t.Errorf("err = %v", err)
	}
}
