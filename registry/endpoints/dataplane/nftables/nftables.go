// Package nftables reads kube-proxy's nftables mode: the table "kube-proxy" of family ip (ip6
// for IPv6) as `nft --json list table` prints it, following what kube-proxy v1.37.0 writes
// (k8s.io/kubernetes pkg/proxy/nftables/proxier.go setupNFTables, syncProxyRules,
// writeServiceToEndpointDNATs, writeServiceToEndpointJumps):
//
//	chain services   ip daddr . meta l4proto . th dport vmap @service-ips
//	                 fib daddr type local … meta l4proto . th dport vmap @service-nodeports
//	map service-ips        { clusterIP . tcp . 80 : goto service-… | local-… ; LB/external IP … : goto external-… }
//	map service-nodeports  { tcp . nodePort : goto external-… }
//	chain external-… goto service-… (Cluster policy; short-circuit of pod and node sources) / goto local-… (Local)
//	chain service-…  meta l4proto tcp dnat to ip:port                                 (one endpoint)
//	                 meta l4proto tcp dnat ip addr . port to numgen random mod N map { i : ip . port, … }
//	                 ip saddr @affinity-… goto endpoint-… ; numgen random mod N vmap { i : goto endpoint-… }  (session affinity)
//	chain endpoint-… update @affinity-… { ip saddr } ; meta l4proto tcp dnat to ip:port
//
// It reads JSON, not the text listing: the JSON schema is nft's documented interface for
// programs (libnftables-json(5), the one kube-proxy's knftables library parses), while the text
// form is meant for people and has changed between nft releases (set layout, statement
// spelling). An IP counts as selected only through a chain that the service-ips or
// service-nodeports maps reach.
//
// New reads the whole table for every check: at 50,000 endpoints nft takes seconds to list it.
// NewTargeted reads only the chains of the Service ports a draining IP is listed under when the
// caller knows them, through netlink (Netlink): milliseconds at any size.
package nftables

import "github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"

// New returns the probe for kube-proxy's nftables mode, reading `nft --json list table` output
// from dump (Lister for the real command).
func New(dump dataplane.Dumper) *dataplane.RulesetProbe {
	return dataplane.NewRulesetProbe("nftables", dump, parse)
}
