package iptables

import (
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// Rulesets captured with `iptables-save -t nat` on node lastcall-worker of the project's kind
// cluster (kube-proxy v1.37.0, iptables mode, nf_tables backend), 2026-11-30: Deployment
// fixture/web (3 replicas, preStop sleep 90 s) behind a ClusterIP Service web and a NodePort
// Service web-local with externalTrafficPolicy Local; pods 10.244.1.15 and 10.244.1.16 on this
// node, 10.244.2.15 on the other worker. See testdata/README.md.
//   - kind-ready: all three ready.
//   - kind-terminating: 10.244.2.15 deleted (terminating, still serving), its replacement
//     10.244.2.16 ready.
//   - kind-lastbackend: scaled to 0: all four pods terminating and serving, so kube-proxy keeps
//     them as the Services' serving-terminating fallback.
func capturedCases() []probetest.Case {
	f := func(name string) probetest.Files { return probetest.Files{dataplane.IPv4: name} }
	return []probetest.Case{
		{Name: "captured: ready pod on another node is routed", Dump: f("kind-ready.txt"), Draining: []string{"10.244.2.15"}, Want: map[string]string{
			"10.244.2.15": "Routed: fixture/web-local:http 10.244.2.15:8080; fixture/web:http 10.244.2.15:8080",
		}},
		{Name: "captured: terminating pod beside ready ones is not routed", Dump: f("kind-terminating.txt"), Draining: []string{"10.244.2.15"}, Want: map[string]string{
			"10.244.2.15": "NotRouted",
		}},
		{Name: "captured: every endpoint draining is the last backend", Dump: f("kind-lastbackend.txt"), Draining: []string{"10.244.1.15", "10.244.1.16", "10.244.2.15", "10.244.2.16"}, Want: map[string]string{
			// on this node the Local chain of web-local selects its own pods too
			"10.244.1.15": "LastBackend: fixture/web-local:http 10.244.1.15:8080 (fallback); fixture/web-local:http 10.244.1.15:8080 (local, fallback); fixture/web:http 10.244.1.15:8080 (fallback)",
			"10.244.1.16": "LastBackend: fixture/web-local:http 10.244.1.16:8080 (fallback); fixture/web-local:http 10.244.1.16:8080 (local, fallback); fixture/web:http 10.244.1.16:8080 (fallback)",
			"10.244.2.15": "LastBackend: fixture/web-local:http 10.244.2.15:8080 (fallback); fixture/web:http 10.244.2.15:8080 (fallback)",
			"10.244.2.16": "LastBackend: fixture/web-local:http 10.244.2.16:8080 (fallback); fixture/web:http 10.244.2.16:8080 (fallback)",
		}},
		{Name: "captured: fallback endpoints count as routed when the others are not known to drain", Dump: f("kind-lastbackend.txt"), Draining: []string{"10.244.2.15"}, Want: map[string]string{
			"10.244.2.15": "Routed: fixture/web-local:http 10.244.2.15:8080; fixture/web:http 10.244.2.15:8080",
		}},
	}
}

func TestCapturedRulesets(t *testing.T) {
	probetest.Run(t, func(d dataplane.Dumper) dataplane.Probe { return New(d) }, capturedCases())
}
