package nftables

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// BenchmarkCheck parses a generated kube-proxy table at 5,000 Services and 50,000 endpoints and
// decides for 1 and 100 draining IPs. It measures the probe alone; nft's own time is not in it.
func BenchmarkCheck(b *testing.B) {
	probetest.BenchCheck(b, generateRuleset, func(d dataplane.Dumper) dataplane.Probe { return New(d) })
}

// generateRuleset writes `nft --json list table ip kube-proxy` output (on one line, as nft
// prints it) of kube-proxy v1.37.0's table: every service has a cluster IP; every 10th a node
// port (external chain with masquerade); every 20th a load balancer IP with
// externalTrafficPolicy Local (local chain with the node's one local endpoint); every 50th
// ClientIP session affinity (endpoint chains and affinity sets).
func generateRuleset(services, perService int) []byte {
	var sets, chains, rules []string
	var clusterIPs, hairpin, serviceIPs, nodePorts []string
	const t = `"family": "ip", "table": "kube-proxy"`
	handle := 0
	chain := func(name string) {
		handle++
		chains = append(chains, fmt.Sprintf(`{"chain": {%s, "name": %q, "handle": %d}}`, t, name, handle))
	}
	rule := func(chain string, expr ...string) {
		handle++
		rules = append(rules, fmt.Sprintf(`{"rule": {%s, "chain": %q, "handle": %d, "expr": [%s]}}`, t, chain, handle, strings.Join(expr, ", ")))
	}
	gotoChain := func(c string) string { return fmt.Sprintf(`{"goto": {"target": %q}}`, c) }
	const l4tcp = `{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}`
	dnat := func(ep netip.AddrPort) string {
		return fmt.Sprintf(`{"dnat": {"addr": %q, "port": %d}}`, ep.Addr(), ep.Port())
	}
	for _, c := range []string{"cluster-ips-check", "firewall-check", "masquerading", "nodeport-endpoints-check", "services", "service-endpoints-check", "reject-chain"} {
		chain(c)
	}
	rule("services", `{"vmap": {"key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-ips"}}`)
	rule("services", `{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}}`,
		`{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}}`,
		`{"vmap": {"key": {"concat": [{"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}, "data": "@service-nodeports"}}`)
	for i := range services {
		base := fmt.Sprintf("ns%d/svc%d/tcp/http", i/100, i)
		base = hash8(base) + "-" + base
		svc, local, ext := "service-"+base, "local-"+base, "external-"+base
		clusterIP := fmt.Sprintf("10.96.%d.%d", i>>8, i&255)
		nodePort, lbLocal, affinity := i%10 == 0, i%20 == 5, i%50 == 7
		clusterIPs = append(clusterIPs, fmt.Sprintf("%q", clusterIP))
		serviceIPs = append(serviceIPs, fmt.Sprintf(`[{"concat": [%q, "tcp", 80]}, %s]`, clusterIP, gotoChain(svc)))
		chain(svc)
		var eps []netip.AddrPort
		for j := range perService {
			ep := netip.AddrPortFrom(probetest.EndpointIP(i*perService+j), 8080)
			eps = append(eps, ep)
			if j == 0 {
				hairpin = append(hairpin, fmt.Sprintf(`{"concat": [%q, %q, "tcp", 8080]}`, ep.Addr(), ep.Addr()))
			}
		}
		if nodePort || lbLocal {
			nodePorts = append(nodePorts, fmt.Sprintf(`[{"concat": ["tcp", %d]}, %s]`, 30000+i/5, gotoChain(ext)))
			chain(ext)
		}
		if nodePort {
			rule(ext, `{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}}`)
			rule(ext, gotoChain(svc))
		}
		if lbLocal {
			serviceIPs = append(serviceIPs, fmt.Sprintf(`[{"concat": ["172.20.%d.%d", "tcp", 80]}, %s]`, i>>8, i&255, gotoChain(ext)))
			chain(local)
			rule(ext, `{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}}`, gotoChain(svc))
			rule(ext, `{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}}`, `{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}}`)
			rule(ext, `{"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["saddr"]}}, "right": "local"}}`, gotoChain(svc))
			rule(ext, gotoChain(local))
			rule(local, l4tcp, dnat(eps[0]))
		}
		if !affinity {
			var elems []string
			for k, ep := range eps {
				elems = append(elems, fmt.Sprintf(`[%d, {"concat": [%q, %d]}]`, k, ep.Addr(), ep.Port()))
			}
			rule(svc, l4tcp, fmt.Sprintf(`{"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "random", "mod": %d, "offset": 0}}, "data": {"set": [%s]}}}}}`, len(eps), strings.Join(elems, ", ")))
			continue
		}
		var vmap []string
		for k, ep := range eps {
			epBase := fmt.Sprintf("ns%d/svc%d/tcp/http__%s/%d", i/100, i, ep.Addr(), ep.Port())
			epBase = hash8(epBase) + "-" + epBase
			handle++
			sets = append(sets, fmt.Sprintf(`{"set": {%s, "name": "affinity-%s", "type": "ipv4_addr", "handle": %d, "size": 65535, "flags": ["timeout"], "timeout": 10800}}`, t, epBase, handle))
			chain("endpoint-" + epBase)
			rule("endpoint-"+epBase, fmt.Sprintf(`{"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@affinity-%s"}}`, epBase))
			rule("endpoint-"+epBase, l4tcp, dnat(ep))
			rule(svc, fmt.Sprintf(`{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@affinity-%s"}}`, epBase), gotoChain("endpoint-"+epBase))
			vmap = append(vmap, fmt.Sprintf(`[%d, %s]`, k, gotoChain("endpoint-"+epBase)))
		}
		rule(svc, fmt.Sprintf(`{"vmap": {"key": {"numgen": {"mode": "random", "mod": %d, "offset": 0}}, "data": {"set": [%s]}}}`, len(eps), strings.Join(vmap, ", ")))
	}
	objects := []string{
		`{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}`,
		`{"table": {"family": "ip", "name": "kube-proxy", "handle": 1, "comment": "rules for kube-proxy"}}`,
		fmt.Sprintf(`{"set": {%s, "name": "cluster-ips", "type": "ipv4_addr", "handle": 2, "comment": "Active ClusterIPs", "elem": [%s]}}`, t, strings.Join(clusterIPs, ", ")),
		fmt.Sprintf(`{"set": {%s, "name": "hairpin-connections", "type": ["ipv4_addr", "ipv4_addr", "inet_proto", "inet_service"], "handle": 3, "comment": "service hairpin connections", "elem": [%s]}}`, t, strings.Join(hairpin, ", ")),
		fmt.Sprintf(`{"map": {%s, "name": "service-ips", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 4, "map": "verdict", "comment": "ClusterIP, ExternalIP and LoadBalancer IP traffic", "elem": [%s]}}`, t, strings.Join(serviceIPs, ", ")),
		fmt.Sprintf(`{"map": {%s, "name": "service-nodeports", "type": ["inet_proto", "inet_service"], "handle": 5, "map": "verdict", "comment": "NodePort traffic", "elem": [%s]}}`, t, strings.Join(nodePorts, ", ")),
	}
	objects = append(objects, sets...)
	objects = append(objects, chains...)
	objects = append(objects, rules...)
	return []byte(`{"nftables": [` + strings.Join(objects, ", ") + "]}\n")
}

// hash8 is the hash prefix of kube-proxy's nftables chain names (proxier.go hashAndTruncate).
func hash8(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:8]
}

func TestGeneratedRulesetParses(t *testing.T) {
	ruleset := generateRuleset(100, 10)
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
