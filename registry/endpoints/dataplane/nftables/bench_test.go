package nftables

import (
	"context"
	"net/netip"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// BenchmarkCheck parses a generated kube-proxy table at 5,000 Services and 50,000 endpoints and
// decides for 1 and 100 draining IPs. It measures the probe alone; nft's own time is not in it.
func BenchmarkCheck(b *testing.B) {
	probetest.BenchCheck(b, probetest.NFTablesJSON, func(d dataplane.Dumper) dataplane.Probe { return New(d) })
}

func TestGeneratedRulesetParses(t *testing.T) {
	ruleset := probetest.NFTablesJSON(100, 10)
	draining := []netip.Addr{probetest.EndpointIP(50), probetest.EndpointIP(51), probetest.EndpointIP(71)}
	got, err := New(probetest.Memory(ruleset)).Check(context.Background(), draining)
	if err != nil {
		t.Fatal(err)
	}
	// Service 5 is the load balancer with externalTrafficPolicy Local (endpoint 50 is its local
	// one); service 7 has session affinity.
	want := map[netip.Addr]string{
		draining[0]: "Routed: ns0/svc5:http 10.128.0.50:8080; ns0/svc5:http 10.128.0.50:8080 (local, fallback)",
		draining[1]: "Routed: ns0/svc5:http 10.128.0.51:8080",
		draining[2]: "Routed: ns0/svc7:http 10.128.0.71:8080",
	}
	for ip, w := range want {
		if s := probetest.Summary(got[ip]); s != w {
			t.Errorf("%s: got %s, want %s", ip, s, w)
		}
	}
}
