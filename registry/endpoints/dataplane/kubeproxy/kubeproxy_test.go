package kubeproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// v137 is an excerpt of kube-proxy v1.37.0's /metrics on a dual-stack node.
const v137 = `# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending [ALPHA] Pending proxy rules Endpoint changes
# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_pending gauge
kubeproxy_sync_proxy_rules_endpoint_changes_pending 2
# HELP kubeproxy_sync_proxy_rules_endpoint_changes_total [ALPHA] Cumulative proxy rules Endpoint changes
# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter
kubeproxy_sync_proxy_rules_endpoint_changes_total 41
# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds [ALPHA] The last time a sync of proxy rules was queued
# TYPE kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family="IPv4"} 1.7806e+09
# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds [ALPHA] The last time proxy rules were successfully synced
# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv4"} 1.7806000125e+09
kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family="IPv6"} 1.78060001e+09
`

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    map[string]time.Time
		pending float64
	}{
		{"v1.37, per family", v137, map[string]time.Time{
			"IPv4": time.Unix(1780600012, 500000000),
			"IPv6": time.Unix(1780600010, 0),
		}, 2},
		{"without labels, with a sample timestamp", "kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.78060001e+09 1780600011000\n", map[string]time.Time{
			"": time.Unix(1780600010, 0),
		}, -1},
		{"not synced yet", "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\nkubeproxy_sync_proxy_rules_endpoint_changes_pending 0\n", map[string]time.Time{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseMetrics(strings.NewReader(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Last) != len(tt.want) {
				t.Errorf("got %v, want %v", got.Last, tt.want)
			}
			for fam, want := range tt.want {
				if !got.Last[fam].Equal(want) {
					t.Errorf("%q: got %v, want %v", fam, got.Last[fam], want)
				}
			}
			if got.Pending != tt.pending {
				t.Errorf("pending %v, want %v", got.Pending, tt.pending)
			}
		})
	}
	if _, err := ParseMetrics(strings.NewReader("kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} soon\n")); err == nil || !strings.Contains(err.Error(), `line 1: kubeproxy_sync_proxy_rules_last_timestamp_seconds value "soon"`) {
		t.Errorf("bad value: %v", err)
	}
}

func TestSyncAdvanced(t *testing.T) {
	t0 := time.Unix(1780600000, 0)
	prev := Sync{Last: map[string]time.Time{"IPv4": t0, "IPv6": t0}}
	if (Sync{Last: map[string]time.Time{"IPv4": t0, "IPv6": t0}}).Advanced(prev) {
		t.Error("same timestamps advanced")
	}
	next := Sync{Last: map[string]time.Time{"IPv4": t0, "IPv6": t0.Add(time.Second)}}
	if !next.Advanced(prev) || !next.Newest().Equal(t0.Add(time.Second)) {
		t.Error("IPv6 sync not seen")
	}
	if !(Sync{Last: map[string]time.Time{"IPv4": t0}}).Advanced(Sync{}) {
		t.Error("first sync not seen")
	}
}

func TestClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/metrics":
			_, _ = w.Write([]byte(v137))
		case "/proxyMode":
			_, _ = w.Write([]byte("nftables"))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := &Client{URL: srv.URL + "/"}
	s, err := c.Sync(context.Background())
	if err != nil || len(s.Last) != 2 {
		t.Errorf("Sync: %v, %v", s, err)
	}
	if m, err := c.Mode(context.Background()); err != nil || m != "nftables" {
		t.Errorf("Mode: %q, %v", m, err)
	}
	if _, err := (&Client{URL: srv.URL + "/nothing"}).Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "404 Not Found") {
		t.Errorf("404: %v", err)
	}
	srv.Close()
	if _, err := c.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "kube-proxy /metrics") {
		t.Errorf("closed: %v", err)
	}
}
