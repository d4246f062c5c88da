// Package dumpbench measures what one lastcall-node check costs with the real commands and
// kernel interfaces, on a generated kube-proxy ruleset of 5,000 Services and 50,000 endpoints
// loaded into a network namespace of its own: nft and netlink for nftables mode, iptables-nft
// for iptables mode, whole-table and targeted reads, and the lastcall-node binary's RSS. It has
// only a test, which needs root and runs when LASTCALL_DATAPLANE_BENCH=1:
//
//	make bench-dataplane
//
// docs/benchmarks.md ("lastcall-node: reading a ruleset") holds its numbers.
package dumpbench
