package nftables

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/namecheck"
)

// Reader reads the parts of kube-proxy's table that a targeted check needs. Netlink asks the
// kernel; Lister runs nft.
type Reader interface {
	// Chain returns what the rules of one chain of the table do. A chain that does not exist
	// reads as one without rules.
	Chain(ctx context.Context, family dataplane.Family, name string) (Rules, error)
	// ServiceMaps returns the elements of the service-ips and service-nodeports maps that go
	// to per-service chains; an error wrapping dataplane.ErrRulesNotFound when there is no
	// such table or map.
	ServiceMaps(ctx context.Context, family dataplane.Family) ([]MapElem, error)
}

// DefaultMaxChainReads bounds the reads of one targeted check. Through netlink a read costs well
// under a millisecond whatever the table's size; the bound only keeps a check of many Services
// at once from reading hundreds of chains.
const DefaultMaxChainReads = 256

// Targeted is the nftables probe that, given the Service ports a draining IP is listed under,
// reads only their chains: service-… and local-…, named as kube-proxy v1.37 names them
// (k8s.io/kubernetes pkg/proxy/nftables/proxier.go servicePortChainNameBase and hashAndTruncate:
// the first 8 base32 characters of the SHA-256 of "namespace/name/protocol/portname", a dash,
// then that string). Those are the chains that pick an endpoint for a new connection: the
// service-ips and service-nodeports maps go to them directly or through external-…, which only
// goes on to them. Their rules DNAT to endpoints, or, with session affinity, go to endpoint-…
// chains named after "…/portname__ip/port" (servicePortEndpointChainNameBase), whose names
// tell draining endpoints apart without reading them. It reads the whole table when ports are
// missing, when the reads would exceed the bound, and when kube-proxy's names do not match
// the formula.
//
// The names are checked against the ruleset before they are trusted, again every namecheck.Recheck:
// every element of the service-ips and service-nodeports maps must go to a chain whose name hashes
// as the formula says and whose protocol is the element's, and an endpoint chain that is not
// draining must DNAT to the endpoint its name says. A port whose chains are missing is looked up in
// those maps; if they name it, the whole table is read. A formula that drifted would otherwise find
// no chain and answer NotRouted. What the check cannot catch is a wrong or missing Service port in
// the request: the ports must come from the EndpointSlices that list the IP, which are what
// kube-proxy reads too.
//
// Each chain read is one consistent snapshot of that chain (Netlink: the ruleset generation
// did not change while it read); a check reads chains one after the other, and a draining
// endpoint only ever leaves a chain, so a check that straddles a kube-proxy sync errs towards
// Routed. kube-proxy flushes a stale chain when it stops using it, so a stale chain reads as
// one without rules.
type Targeted struct {
	full     *dataplane.RulesetProbe
	read     Reader
	maxReads int
	names    *namecheck.Checks
}

var _ dataplane.TargetProbe = (*Targeted)(nil)

// NewTargeted returns the probe that reads whole tables from dump (Lister) and parts of them
// from read (Netlink, or Lister). maxReads bounds the reads of one check (DefaultMaxChainReads
// when 0).
func NewTargeted(dump dataplane.Dumper, read Reader, maxReads int) *Targeted {
	if maxReads <= 0 {
		maxReads = DefaultMaxChainReads
	}
	return &Targeted{full: New(dump), read: read, maxReads: maxReads, names: namecheck.New()}
}

// Check implements dataplane.Probe: it reads the whole table.
func (t *Targeted) Check(ctx context.Context, draining []netip.Addr) (map[netip.Addr]dataplane.Verdict, error) {
	return t.full.Check(ctx, draining)
}

// Ping implements dataplane.Pinger.
func (t *Targeted) Ping(ctx context.Context, family dataplane.Family) error {
	return t.full.Ping(ctx, family)
}

// portPlan is one Service port a targeted check reads.
type portPlan struct {
	// name is kube-proxy's service port name, "namespace/name:port".
	name string
	// key is "namespace/name/protocol/port", what kube-proxy hashes for the chain names.
	key string
	// endpoints maps the endpoint chain names of the port's draining endpoints to them.
	endpoints map[string]netip.AddrPort
}

// plan is what one targeted check reads for one family.
type plan struct {
	family dataplane.Family
	ports  []*portPlan
}

// CheckTargets implements dataplane.TargetProbe.
func (t *Targeted) CheckTargets(ctx context.Context, targets []dataplane.Target) (dataplane.Result, error) {
	d, err := dataplane.NewDraining(dataplane.TargetIPs(targets))
	if err != nil {
		return dataplane.Result{}, fmt.Errorf("nftables: %w", err)
	}
	if len(targets) == 0 || !dataplane.HavePorts(targets) {
		return t.checkFull(ctx, targets, "")
	}
	plans, reads, err := planReads(targets)
	if err != nil {
		return dataplane.Result{}, fmt.Errorf("nftables: %w", err)
	}
	if reads > t.maxReads {
		return t.checkFull(ctx, targets, fmt.Sprintf("%d chain reads needed, more than the bound of %d", reads, t.maxReads))
	}
	if why := t.names.Broken(); why != "" {
		return t.checkFull(ctx, targets, why)
	}
	res := dataplane.Result{Targeted: true}
	var chains []dataplane.Chain
	for _, p := range plans {
		c, n, full, err := t.readPlan(ctx, p, d)
		res.Reads += n
		if err != nil {
			return dataplane.Result{}, fmt.Errorf("nftables %s: %w", p.family, err)
		}
		if full != "" {
			r, err := t.checkFull(ctx, targets, full)
			r.Reads += res.Reads
			return r, err
		}
		chains = append(chains, c...)
	}
	res.Verdicts = dataplane.Decide(d, chains)
	return res, nil
}

func (t *Targeted) checkFull(ctx context.Context, targets []dataplane.Target, why string) (dataplane.Result, error) {
	v, err := t.full.Check(ctx, dataplane.TargetIPs(targets))
	if err != nil {
		return dataplane.Result{}, err
	}
	d, _ := dataplane.NewDraining(dataplane.TargetIPs(targets))
	return dataplane.Result{Verdicts: v, FullReason: why, Reads: len(d.Families())}, nil
}

// planReads groups the targets' Service ports by family and counts the reads: two chains per
// port (service-, local-), plus up to three to check names (two maps, one endpoint chain).
func planReads(targets []dataplane.Target) ([]plan, int, error) {
	byFamily := map[dataplane.Family]*plan{}
	byKey := map[dataplane.Family]map[string]*portPlan{}
	var order []*plan
	reads := 0
	for i, tg := range targets {
		ip := tg.IP.Unmap().WithZone("")
		fam := dataplane.FamilyOf(ip)
		p := byFamily[fam]
		if p == nil {
			p = &plan{family: fam}
			byFamily[fam] = p
			byKey[fam] = map[string]*portPlan{}
			order = append(order, p)
			reads += 3
		}
		for j, sp := range tg.Ports {
			if err := sp.Validate(); err != nil {
				return nil, 0, fmt.Errorf("targets[%d].ports[%d]: %w", i, j, err)
			}
			key := portKey(sp)
			pp := byKey[fam][key]
			if pp == nil {
				pp = &portPlan{name: sp.Name, key: key, endpoints: map[string]netip.AddrPort{}}
				byKey[fam][key] = pp
				p.ports = append(p.ports, pp)
				reads += 2
			}
			ep := netip.AddrPortFrom(ip, sp.Port)
			pp.endpoints[endpointChain(key, ep)] = ep
		}
	}
	out := make([]plan, len(order))
	for i, p := range order {
		out[i] = *p
	}
	return out, reads, nil
}

// readPlan reads the service chains of p's ports. full is set when the whole table must be read
// instead.
func (t *Targeted) readPlan(ctx context.Context, p plan, d dataplane.Draining) (chains []dataplane.Chain, reads int, full string, err error) {
	var missing []*portPlan
	var probe string // an endpoint chain that is not draining, to check endpoint chain names
	var probePort *portPlan
	foundByName := false
	for _, pp := range p.ports {
		found := false
		for _, k := range []kind{kindService, kindLocal} {
			name := prefixOf(k) + nameBase(pp.key)
			r, err := t.read.Chain(ctx, p.family, name)
			reads++
			if err != nil {
				return nil, reads, "", err
			}
			if r.Count == 0 {
				continue
			}
			found = true
			c := dataplane.Chain{Name: name, Service: pp.name, Local: k == kindLocal, Others: r.Odd}
			for _, ep := range r.DNAT {
				if d.Has(ep.Addr()) {
					c.Selected = append(c.Selected, ep)
				} else {
					c.Others = true
				}
			}
			for _, to := range r.Goes {
				if chainKind(to) != kindEndpoint {
					continue // kube-proxy writes none from these chains
				}
				if ep, ok := pp.endpoints[to]; ok {
					c.Selected = append(c.Selected, ep)
					foundByName = true
					continue
				}
				if why := checkEndpointName(to, pp); why != "" {
					return nil, reads, t.names.Disable(why), nil
				}
				c.Others = true
				if probe == "" {
					probe, probePort = to, pp
				}
			}
			if len(c.Selected) > 0 {
				chains = append(chains, c)
			}
		}
		if !found {
			missing = append(missing, pp)
		}
	}

	// Trust the names only once the ruleset confirms them. Finding a draining endpoint's chain
	// by its computed name confirms the endpoint chain formula.
	if foundByName {
		t.names.Confirm(p.family, false, true)
	}
	fresh := t.names.Fresh(p.family)
	if !fresh.Services || len(missing) > 0 {
		n, why, err := t.verifyServices(ctx, p.family, missing)
		reads += n
		if err != nil || why != "" {
			return nil, reads, why, err
		}
	}
	if !fresh.Endpoints && probe != "" {
		n, why, err := t.verifyEndpoint(ctx, p.family, probe, probePort)
		reads += n
		if err != nil || why != "" {
			return nil, reads, why, err
		}
	}
	return chains, reads, "", nil
}

// verifyServices reads the service maps: every element must go to a chain named as the formula
// says, and none may name a port of missing (whose chains were not found: a read that
// straddled a sync, or a name this code does not know). A name unlike the formula turns
// targeted reads off for good; why is then set.
func (t *Targeted) verifyServices(ctx context.Context, family dataplane.Family, missing []*portPlan) (reads int, why string, err error) {
	elems, err := t.read.ServiceMaps(ctx, family)
	reads += 2
	if err != nil {
		return reads, "", err
	}
	named := map[string]string{} // port key → map naming it
	for _, e := range elems {
		key, ok := serviceChainKey(e.Chain, e.Protocol)
		if !ok {
			return reads, t.names.Disable(fmt.Sprintf("%s goes to %s, which is not named <prefix><hash>-<namespace>/<name>/%s/<port> as kube-proxy v1.37 hashes it", e.Map, e.Chain, protocolOr(e.Protocol))), nil
		}
		if _, seen := named[key]; !seen {
			named[key] = e.Map
		}
	}
	for _, m := range missing {
		if inMap, ok := named[m.key]; ok {
			return reads, fmt.Sprintf("%s names %s, whose chains were not found: reading the whole table", inMap, m.name), nil
		}
	}
	if len(named) > 0 {
		t.names.Confirm(family, true, false)
	}
	return reads, "", nil
}

// verifyEndpoint reads endpoint chain name, which is not draining: it must DNAT to the endpoint
// its name says.
func (t *Targeted) verifyEndpoint(ctx context.Context, family dataplane.Family, name string, pp *portPlan) (reads int, why string, err error) {
	r, err := t.read.Chain(ctx, family, name)
	reads++
	if err != nil || r.Count == 0 { // no rules: deleted since its service chain was read; the next check looks again
		return reads, "", err
	}
	if len(r.DNAT) != 1 || r.Odd {
		return reads, t.names.Disable(fmt.Sprintf("endpoint chain %s of %s does not DNAT to one ip:port", name, pp.name)), nil
	}
	if got := endpointChain(pp.key, r.DNAT[0]); got != name {
		return reads, t.names.Disable(fmt.Sprintf("endpoint chain %s of %s DNATs to %s, which kube-proxy v1.37 names %s", name, pp.name, r.DNAT[0], got)), nil
	}
	t.names.Confirm(family, false, true)
	return reads, "", nil
}

// nameBaseMax is the longest name base kube-proxy writes (proxier.go chainNameBaseLengthMax:
// knftables.NameLengthMax 256 less chainNamePrefixLengthMax 16).
const nameBaseMax = 256 - 16

// nameBase is kube-proxy's name base for s (proxier.go hashAndTruncate): the first 8 base32
// characters of its SHA-256, a dash and s, cut to nameBaseMax with "...".
func nameBase(s string) string {
	h := sha256.Sum256([]byte(s))
	b := base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + s
	if len(b) > nameBaseMax {
		b = b[:nameBaseMax-3] + "..."
	}
	return b
}

// portKey is what kube-proxy hashes for a Service port's chains (servicePortChainNameBase):
// "namespace/name/protocol/port" with the protocol in lower case and port "" when unnamed.
func portKey(sp dataplane.ServicePort) string {
	nsName, port, _ := strings.Cut(sp.Name, ":")
	return nsName + "/" + strings.ToLower(sp.Protocol) + "/" + port
}

// endpointChain is the name of the endpoint chain of one endpoint of a port
// (servicePortEndpointChainNameBase): "…/port__ip/port", colons of an IPv6 address written as
// dots.
func endpointChain(key string, ep netip.AddrPort) string {
	ip := strings.ReplaceAll(ep.Addr().String(), ":", ".")
	return prefixOf(kindEndpoint) + nameBase(key+"__"+ip+"/"+strconv.Itoa(int(ep.Port())))
}

func prefixOf(k kind) string {
	for _, p := range kindPrefixes {
		if p.kind == k {
			return p.prefix
		}
	}
	return ""
}

// splitName splits a per-service chain name into the key it was made from; ok is false when its
// hash is not that key's. A name kube-proxy cut short cannot be checked and counts as fine.
func splitName(name string) (key string, ok bool) {
	k := chainKind(name)
	if k == kindOther {
		return "", false
	}
	base := name[len(prefixOf(k)):]
	hash, key, found := strings.Cut(base, "-")
	if !found || len(hash) != 8 {
		return "", false
	}
	if len(base) == nameBaseMax && strings.HasSuffix(base, "...") {
		return key, true
	}
	return key, nameBase(key) == base
}

// serviceChainKey checks the name of a chain a service map goes to and returns its port key.
func serviceChainKey(chain, protocol string) (string, bool) {
	key, ok := splitName(chain)
	if !ok || chainKind(chain) == kindEndpoint {
		return "", false
	}
	parts := strings.Split(key, "/")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" {
		return "", false
	}
	switch parts[2] {
	case "tcp", "udp", "sctp":
	default:
		return "", false
	}
	return key, protocol == "" || protocol == parts[2]
}

// checkEndpointName checks the name of an endpoint chain a service chain of pp goes to; it
// returns why it is unlike kube-proxy's, or "".
func checkEndpointName(name string, pp *portPlan) string {
	key, ok := splitName(name)
	if ok && strings.HasPrefix(key, pp.key+"__") {
		return ""
	}
	return fmt.Sprintf("service chain of %s goes to %s, not named endpoint-<hash>-%s__<ip>/<port>", pp.name, name, pp.key)
}

func protocolOr(p string) string {
	if p == "" {
		return "<protocol>"
	}
	return p
}
