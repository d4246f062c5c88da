// Package iptables reads kube-proxy's iptables mode: the nat table as iptables-save prints it
// (ip6tables-save for IPv6), following the chains kube-proxy v1.37.0 writes
// (k8s.io/kubernetes pkg/proxy/iptables/proxier.go syncProxyRules and
// writeServiceToEndpointRules):
//
//	KUBE-SERVICES  -d clusterIP/externalIP/LB IP --dport … -j KUBE-SVC-… | KUBE-SVL-… | KUBE-EXT-… | KUBE-FW-…
//	KUBE-SERVICES  … -j KUBE-NODEPORTS   (last rule)
//	KUBE-NODEPORTS --dport nodePort -j KUBE-EXT-…
//	KUBE-FW-…      -s sourceRange -j KUBE-EXT-…
//	KUBE-EXT-…     -j KUBE-SVC-… (Cluster policy; short-circuit of pod and node sources) / -j KUBE-SVL-… (Local)
//	KUBE-SVC-…     [-m recent --rcheck …] [-m statistic --mode random --probability 1/n] -j KUBE-SEP-…
//	KUBE-SEP-…     -j DNAT --to-destination ip:port
//
// An IP counts as selected only when a SEP chain that DNATs to it is the target of a service
// chain reachable from KUBE-SERVICES or KUBE-NODEPORTS: in large clusters kube-proxy leaves
// stale SEP chains in place for up to a sync period.
//
// New reads the whole nat table for every check. NewTargeted reads only the chains of the
// Service ports a draining IP is listed under when the caller knows them: at 50,000 endpoints
// that is a few milliseconds of CPU instead of the seconds iptables-nft-save takes.
package iptables

import "github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"

// New returns the probe for kube-proxy's iptables mode, reading iptables-save output of the nat
// table from dump (NewSaver for the real commands).
func New(dump dataplane.Dumper) *dataplane.RulesetProbe {
	return dataplane.NewRulesetProbe("iptables", dump, parse)
}
