package nftables

import (
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// Rulesets captured with `nft --json list table ip kube-proxy` on node nft-worker of a kind
// cluster made from the project's node image with `networking.kubeProxyMode: nftables`
// (kube-proxy v1.37.0, nft 1.0.6), 2026-11-30, with ../iptables/testdata/kind-fixture.yaml
// applied. Pods 10.244.1.2 (later also 10.244.1.3) on this node, 10.244.2.2 and 10.244.2.3 on
// the other worker. See testdata/README.md.
func TestCapturedRulesets(t *testing.T) {
	probetest.Run(t, func(d dataplane.Dumper) dataplane.Probe { return New(d) }, capturedCases())
}

func capturedCases() []probetest.Case {
	f := func(name string) probetest.Files { return probetest.Files{dataplane.IPv4: name} }
	return []probetest.Case{
		{Name: "captured: ready pod on another node is routed", Dump: f("kind-ready.json"), Draining: []string{"10.244.2.3"}, Want: map[string]string{
			"10.244.2.3": "Routed: fixture/web-local:http 10.244.2.3:8080; fixture/web:http 10.244.2.3:8080",
		}},
		{Name: "captured: terminating pod beside ready ones is not routed", Dump: f("kind-terminating.json"), Draining: []string{"10.244.2.3"}, Want: map[string]string{
			"10.244.2.3": "NotRouted",
		}},
		{Name: "captured: every endpoint draining is the last backend", Dump: f("kind-lastbackend.json"), Draining: []string{"10.244.1.2", "10.244.1.3", "10.244.2.2", "10.244.2.3"}, Want: map[string]string{
			"10.244.1.2": "LastBackend: fixture/web-local:http 10.244.1.2:8080 (fallback); fixture/web-local:http 10.244.1.2:8080 (local, fallback); fixture/web:http 10.244.1.2:8080 (fallback)",
			"10.244.1.3": "LastBackend: fixture/web-local:http 10.244.1.3:8080 (fallback); fixture/web-local:http 10.244.1.3:8080 (local, fallback); fixture/web:http 10.244.1.3:8080 (fallback)",
			"10.244.2.2": "LastBackend: fixture/web-local:http 10.244.2.2:8080 (fallback); fixture/web:http 10.244.2.2:8080 (fallback)",
			"10.244.2.3": "LastBackend: fixture/web-local:http 10.244.2.3:8080 (fallback); fixture/web:http 10.244.2.3:8080 (fallback)",
		}},
	}
}
