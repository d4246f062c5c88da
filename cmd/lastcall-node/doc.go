// Command lastcall-node is lastcall's per-node agent (a DaemonSet on the host network). It
// answers lastcall-controller's question "does this node's dataplane still send new
// connections to these draining pod IPs?" by reading the rules kube-proxy programmed, in
// iptables or nftables mode. It never writes to the dataplane and never calls the Kubernetes
// API: the controller asks it over HTTP, so API load does not grow with nodes × draining pods.
// See --help for every setting; registry/endpoints/dataplane/agent for the API.
//
// # When it looks
//
// kube-proxy's metrics (127.0.0.1:10249, kubeproxy_sync_proxy_rules_last_timestamp_seconds)
// say when a rule sync finished; the agent re-reads the ruleset then, every --recheck while
// waits are open, and every --fallback-interval while the metrics cannot be read (logged, and
// lastcall_node_kube_proxy_metrics_up 0). The metrics are never the proof: a sync that began
// before kube-proxy received a change finishes after it. Reads are shared by every open wait,
// never overlap, and pause at least as long as they took.
//
// # What a check costs
//
// Measured with this agent in a network namespace holding a generated kube-proxy ruleset of
// 5,000 Services and 50,000 endpoints (Linux 6.18, iptables 1.8.9, nft 1.0.6, a busy 2-core
// machine); CPU is the agent's and its commands':
//
//	iptables, nf_tables backend, with ports (targeted): iptables-nft -t nat -S of the Service
//	  ports' KUBE-SVC-/KUBE-SVL- chains; 14 ms of CPU and 9 to 27 ms for two pods in two
//	  Services (4 commands); 112 ms for the first check, which also confirms the chain names
//	  from KUBE-SERVICES (again every 10 minutes)
//	iptables, nf_tables backend, whole table: iptables-nft-save alone takes 32 s of CPU and
//	  138 MB, growing with the square of the chain count (0.35 s at 5,000 endpoints, 4.4 s at
//	  20,000): requests without ports are not usable at this size
//	iptables, legacy backend: iptables-legacy-save, 0.57 s of CPU and 0.6 to 1 s per check
//	  (one chain would cost as much: the kernel hands over the whole table for every read)
//	nftables, with ports (targeted): the Service ports' service-/local- chains over netlink (a
//	  rule dump the kernel filters to the chain, and the maps its rules look up), no command;
//	  0.2 ms for one pod, 50 ms for 100 pods in 100 Services; the first check also reads the
//	  service maps to confirm the chain names (16 to 63 ms, again every 10 minutes)
//	nftables, whole table: nft --json list table, 2.3 s of CPU per check, 214 MB in nft; nft
//	  1.0.6 fetches every set of the table even to list one chain (2.8 s for a port's two)
//
// The agent itself stays at 16 MB RSS (make bench-dataplane; docs/benchmarks.md has the
// numbers). The target, one check within 200 ms at 50,000 endpoints, is met when the
// caller passes the Service ports: in nftables mode, and in iptables mode on the nf_tables
// backend for pods in a few Services (100 pods in 100 Services take 0.5 s, 200 iptables-nft
// commands); not on legacy iptables (0.6 to 1 s), and not without ports.
//
// # Privileges
//
// Measured by running each command as root in a throwaway network namespace holding the
// fixtures' rules, with setpriv limiting the capability bounding set:
//
//	iptables-nft-save, iptables-nft -S    CAP_NET_ADMIN (nf_tables netlink dump; without it
//	                                      "Could not fetch rule set generation id: Permission denied")
//	nft --json list table / list map      CAP_NET_ADMIN ("Operation not permitted")
//	the agent's netlink reads (nftables)  CAP_NET_ADMIN ("operation not permitted")
//	iptables-legacy-save                  CAP_NET_ADMIN and CAP_NET_RAW (libiptc opens a raw
//	                                      socket, then reads the table with getsockopt)
//
// CAP_NET_RAW alone reads nothing. A non-root user with these capabilities only in the bounding
// set, which is what Kubernetes grants a non-root container (no ambient capabilities), reads
// nothing either, so the container runs as UID 0 with every other capability dropped.
// no_new_privs (allowPrivilegeEscalation: false) changes nothing, and nothing is written: a
// read-only root filesystem is fine (the agent never runs iptables-legacy -S, the one read
// that takes /run/xtables.lock). hostNetwork is needed because the rules belong to the node's
// network namespace, and the image must carry iptables (both backends) and nft.
package main
