package dataplane

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Draining is the validated set of IPs one Check is about.
type Draining struct {
	set      map[netip.Addr]struct{}
	families []Family
}

// NewDraining validates ips: each must be a valid address; IPv4-mapped IPv6 addresses count as
// IPv4 and zones are dropped, as kube-proxy's rules carry neither.
func NewDraining(ips []netip.Addr) (Draining, error) {
	d := Draining{set: make(map[netip.Addr]struct{}, len(ips))}
	var has [2]bool
	for i, ip := range ips {
		if !ip.IsValid() {
			return Draining{}, fmt.Errorf("draining[%d] is not a valid IP address; pass the pod IPs from status.podIPs", i)
		}
		ip = ip.Unmap().WithZone("")
		d.set[ip] = struct{}{}
		if ip.Is4() {
			has[0] = true
		} else {
			has[1] = true
		}
	}
	if has[0] {
		d.families = append(d.families, IPv4)
	}
	if has[1] {
		d.families = append(d.families, IPv6)
	}
	return d, nil
}

// Has reports whether ip is draining.
func (d Draining) Has(ip netip.Addr) bool {
	_, ok := d.set[ip]
	return ok
}

// Families lists the IP families of the set, IPv4 first: the rulesets a Check has to read.
func (d Draining) Families() []Family { return d.families }

// Len is the number of IPs in the set.
func (d Draining) Len() int { return len(d.set) }

// Chain is what a backend found in one service chain that new connections reach: a chain that
// picks one endpoint per new connection (kube-proxy's KUBE-SVC-… / KUBE-SVL-… in iptables mode,
// service-… / local-… in nftables mode). Backends report only chains that select a draining IP.
type Chain struct {
	Name    string
	Service string
	Local   bool
	// Selected lists the draining endpoints the chain picks from.
	Selected []netip.AddrPort
	// Others is set when the chain also picks from at least one endpoint that is not draining.
	Others bool
}

// Decide turns the chains a backend found into a verdict for every IP of d. An IP is Routed
// when some chain picks it beside an endpoint that is not draining: that chain is the ready set
// kube-proxy has not yet updated. It is LastBackend when every chain that picks it has only
// draining endpoints, which is what kube-proxy's serving-terminating fallback looks like
// (pkg/proxy/topology.go CategorizeEndpoints; see LastBackend for what the caller confirms).
// Otherwise NotRouted.
func Decide(d Draining, chains []Chain) map[netip.Addr]Verdict {
	out := make(map[netip.Addr]Verdict, len(d.set))
	for ip := range d.set {
		out[ip] = Verdict{State: NotRouted}
	}
	for _, c := range chains {
		for _, ep := range c.Selected {
			ip := ep.Addr()
			v, ok := out[ip]
			if !ok {
				continue // a backend bug; an IP nobody asked about
			}
			v.Routes = append(v.Routes, Route{
				Service:  c.Service,
				Chain:    c.Name,
				Local:    c.Local,
				Endpoint: ep,
				Fallback: !c.Others,
			})
			switch {
			case c.Others:
				v.State = Routed
			case v.State == NotRouted:
				v.State = LastBackend
			}
			out[ip] = v
		}
	}
	for ip, v := range out {
		slices.SortFunc(v.Routes, compareRoutes)
		v.Routes = slices.CompactFunc(v.Routes, func(a, b Route) bool { return compareRoutes(a, b) == 0 })
		out[ip] = v
	}
	return out
}

func compareRoutes(a, b Route) int {
	return cmp.Or(
		cmp.Compare(a.Service, b.Service),
		compareBool(a.Local, b.Local),
		a.Endpoint.Compare(b.Endpoint),
		cmp.Compare(a.Chain, b.Chain),
	)
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}
