// Package dataplane answers, on one node, "does this node's dataplane still send new connections
// of any Service to this pod IP?" by reading the rules the node's service proxy programmed. It
// never writes to them. Each dataplane is one subpackage (iptables, nftables; IPVS or Cilium
// later); this package holds what they share: the Probe a caller uses, the verdicts, and the
// pure decision that turns what a backend found in its ruleset into verdicts.
package dataplane

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strconv"
)

// Probe reads the node's dataplane. Implementations are safe for concurrent use.
type Probe interface {
	// Check returns a verdict for every IP in draining: the pod IPs that are leaving (their
	// pods are being deleted), all of them, not only those the caller waits for. The set
	// also tells LastBackend apart: a Service whose only remaining endpoints are in it is
	// using them as its serving-terminating fallback. Keys are the IPs unmapped
	// (netip.Addr.Unmap) and without zone. An error means the probe could not tell; it is
	// never a silent NotRouted (see ErrRulesNotFound).
	Check(ctx context.Context, draining []netip.Addr) (map[netip.Addr]Verdict, error)
}

// ErrRulesNotFound is wrapped by a Check whose ruleset has no kube-proxy rules for an IP
// family asked about: kube-proxy is not running in the probe's mode on this node, has not
// synced yet, or the probe reads another network namespace.
var ErrRulesNotFound = errors.New("kube-proxy rules not found")

// State is what the dataplane does with new connections to one IP.
type State int

const (
	// NotRouted: no Service's new-connection path on this node selects the IP.
	NotRouted State = iota
	// Routed: some Service still picks the IP for new connections beside endpoints that
	// are not draining; the node has not caught up yet.
	Routed
	// LastBackend: the IP is still selected, but only by service chains whose every endpoint
	// is draining. kube-proxy keeps serving-terminating endpoints when a Service has no ready
	// one left (KEP-1669, k8s.io/kubernetes pkg/proxy/topology.go CategorizeEndpoints), so
	// waiting would not end until the pod stops serving. The ruleset cannot tell that
	// fallback from a chain kube-proxy has not yet updated while a ready endpoint exists that
	// it does not show (a new pod not synced yet, or one in another zone under topology-aware
	// routing): the caller confirms with the API that the Service port has no ready endpoint
	// (no ready endpoint on this node for a Local route) before it stops waiting, and treats
	// the verdict as Routed otherwise. Not final either way: a later check may say NotRouted.
	LastBackend
)

func (s State) String() string {
	switch s {
	case NotRouted:
		return "NotRouted"
	case Routed:
		return "Routed"
	case LastBackend:
		return "LastBackend"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Verdict for one IP.
type Verdict struct {
	State State
	// Routes lists every service chain that selects the IP, for logs and reports.
	Routes []Route
}

// Route is one service chain that selects the IP for new connections.
type Route struct {
	// Service is kube-proxy's service port name, "namespace/name:port" ("namespace/name"
	// for an unnamed port); empty when the ruleset does not carry it.
	Service string
	// Chain is the dataplane's name for the service chain (KUBE-SVC-…, KUBE-SVL-…,
	// service-…, local-…).
	Chain string
	// Local is set for the chain of a Local traffic policy (node-local endpoints only).
	Local bool
	// Endpoint is the destination the chain rewrites connections to.
	Endpoint netip.AddrPort
	// Fallback is set when every endpoint of the chain is draining.
	Fallback bool
}

// Family is an IP family; kube-proxy programs one ruleset per family.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return "Family(" + strconv.Itoa(int(f)) + ")"
}

// FamilyOf returns the family of an unmapped address.
func FamilyOf(ip netip.Addr) Family {
	if ip.Is4() {
		return IPv4
	}
	return IPv6
}

// Dumper reads the ruleset kube-proxy programmed for one IP family, in the format its backend
// parses. Close releases it and reports a failure of the dump. Implementations never write.
type Dumper interface {
	Dump(ctx context.Context, family Family) (io.ReadCloser, error)
}
