package iptables

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/ipbytes"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/namecheck"
)

// Commands reads kube-proxy's nat table: whole (Dump) or one chain at a time. Saver is the real one.
type Commands interface {
	dataplane.Dumper
	// ListChain returns `iptables -t nat -S chain`; found is false when there is no such chain.
	ListChain(ctx context.Context, family dataplane.Family, chain string) (rules []byte, found bool, err error)
	// ReadsOneChain reports whether ListChain costs one chain rather than the whole table.
	ReadsOneChain(ctx context.Context, family dataplane.Family) (bool, error)
}

// DefaultMaxChainReads bounds the chain reads of one targeted check. One read costs about 2 ms
// of CPU on nf_tables whatever the table's size; iptables-nft-save of a whole table at 50,000
// endpoints costs seconds, so targeted reads win far beyond this bound, which only keeps a
// check of many Services at once from running hundreds of commands.
const DefaultMaxChainReads = 256

// Targeted is the iptables probe that, given the Service ports a draining IP is listed under,
// reads only their chains: KUBE-SVC-… and KUBE-SVL-… named as kube-proxy v1.37 names them from
// the service port name and protocol (proxier.go portProtoHash), and finds the IP's endpoint
// chain among their jumps by its name (servicePortEndpointChainName: the port name, protocol
// and "ip:port"). It reads the whole table when ports are missing, when the backend is legacy
// (which hands over the whole table for every read), when the reads would exceed the bound, and
// when kube-proxy's names do not match the formula.
//
// The names are checked against the ruleset before they are trusted, once per namecheck.Recheck: a
// KUBE-SERVICES rule's comment and protocol must hash to its target chain, and an endpoint chain's
// DNAT destination to that chain's name. A formula that drifted would otherwise find no chain and
// answer NotRouted. What the check cannot catch is a wrong or missing Service port in the request:
// the ports must come from the EndpointSlices that list the IP, which are what kube-proxy reads
// too.
//
// A targeted check reads chains one command at a time, so it is not one snapshot of the table,
// but each chain read is; a draining endpoint only ever leaves a chain, so a read that
// straddles a kube-proxy sync errs towards Routed. A service chain that kube-proxy no longer
// reaches from KUBE-SERVICES but has not yet deleted (large clusters delete stale chains once
// per sync period) counts too, again towards Routed.
type Targeted struct {
	full     *dataplane.RulesetProbe
	cmds     Commands
	maxReads int
	names    *namecheck.Checks
}

var _ dataplane.TargetProbe = (*Targeted)(nil)

// NewTargeted returns the probe over cmds (NewSaver for the real commands). maxReads bounds the
// chain reads of one check (DefaultMaxChainReads when 0).
func NewTargeted(cmds Commands, maxReads int) *Targeted {
	if maxReads <= 0 {
		maxReads = DefaultMaxChainReads
	}
	return &Targeted{full: New(cmds), cmds: cmds, maxReads: maxReads, names: namecheck.New()}
}

// Check implements dataplane.Probe: it reads the whole table.
func (t *Targeted) Check(ctx context.Context, draining []netip.Addr) (map[netip.Addr]dataplane.Verdict, error) {
	return t.full.Check(ctx, draining)
}

// Ping implements dataplane.Pinger.
func (t *Targeted) Ping(ctx context.Context, family dataplane.Family) error {
	return t.full.Ping(ctx, family)
}

// portKey is a Service port as kube-proxy hashes it: name and lower-case protocol.
type portKey struct{ name, protocol string }

// plan is what one targeted check reads for one family.
type plan struct {
	family dataplane.Family
	ports  []portKey
	// seps maps the endpoint chain names of every draining endpoint to the endpoint.
	seps map[string]netip.AddrPort
}

// CheckTargets implements dataplane.TargetProbe.
func (t *Targeted) CheckTargets(ctx context.Context, targets []dataplane.Target) (dataplane.Result, error) {
	d, err := dataplane.NewDraining(dataplane.TargetIPs(targets))
	if err != nil {
		return dataplane.Result{}, fmt.Errorf("iptables: %w", err)
	}
	if !dataplane.HavePorts(targets) || len(targets) == 0 {
		return t.checkFull(ctx, targets, "")
	}
	plans, reads, err := planReads(targets)
	if err != nil {
		return dataplane.Result{}, fmt.Errorf("iptables: %w", err)
	}
	if reads > t.maxReads {
		return t.checkFull(ctx, targets, fmt.Sprintf("%d chain reads needed, more than the bound of %d", reads, t.maxReads))
	}
	if why := t.names.Broken(); why != "" {
		return t.checkFull(ctx, targets, why)
	}
	for _, p := range plans {
		one, err := t.cmds.ReadsOneChain(ctx, p.family)
		if err != nil {
			t.forget(p.family, err)
			return dataplane.Result{}, fmt.Errorf("iptables %s: %w", p.family, err)
		}
		if !one {
			return t.checkFull(ctx, targets, "legacy iptables reads the whole nat table for every chain")
		}
	}

	res := dataplane.Result{Targeted: true}
	var chains []dataplane.Chain
	for _, p := range plans {
		c, n, full, err := t.readPlan(ctx, p)
		res.Reads += n
		if err != nil {
			t.forget(p.family, err)
			return dataplane.Result{}, fmt.Errorf("iptables %s: %w", p.family, err)
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

func (t *Targeted) forget(family dataplane.Family, err error) {
	if f, ok := t.cmds.(forgetter); ok && errors.Is(err, dataplane.ErrRulesNotFound) {
		f.Forget(family)
	}
}

// forgetter is implemented by Commands that cache the backend (Saver).
type forgetter interface{ Forget(dataplane.Family) }

// planReads groups the targets' Service ports by family and counts the reads: two service
// chains per port (KUBE-SVC-, KUBE-SVL-), plus up to three to check names and absent chains.
func planReads(targets []dataplane.Target) ([]plan, int, error) {
	byFamily := map[dataplane.Family]*plan{}
	var order []*plan
	reads := 0
	for i, tg := range targets {
		ip := tg.IP.Unmap().WithZone("")
		fam := dataplane.FamilyOf(ip)
		p := byFamily[fam]
		if p == nil {
			p = &plan{family: fam, seps: map[string]netip.AddrPort{}}
			byFamily[fam] = p
			order = append(order, p)
			reads += 3
		}
		for j, sp := range tg.Ports {
			if err := sp.Validate(); err != nil {
				return nil, 0, fmt.Errorf("targets[%d].ports[%d]: %w", i, j, err)
			}
			key := portKey{sp.Name, strings.ToLower(sp.Protocol)}
			ep := netip.AddrPortFrom(ip, sp.Port)
			sep := endpointChain(key, ep)
			if _, dup := p.seps[sep]; dup {
				continue
			}
			p.seps[sep] = ep
			if !containsKey(p.ports, key) {
				p.ports = append(p.ports, key)
				reads += 2
			}
		}
	}
	out := make([]plan, len(order))
	for i, p := range order {
		out[i] = *p
	}
	return out, reads, nil
}

func containsKey(keys []portKey, k portKey) bool {
	for _, x := range keys {
		if x == k {
			return true
		}
	}
	return false
}

// readPlan reads the service chains of p's ports. full is set when the whole table must be
// read instead.
func (t *Targeted) readPlan(ctx context.Context, p plan) (chains []dataplane.Chain, reads int, full string, err error) {
	var missing []portKey
	var probeSEP string // an endpoint chain that is not draining, to check endpoint chain names
	var probeKey portKey
	for _, key := range p.ports {
		found := false
		for _, k := range []kind{kindSVC, kindSVL} {
			name := prefixes[k] + portProtoHash(key)
			rules, ok, err := t.cmds.ListChain(ctx, p.family, name)
			reads++
			if err != nil {
				return nil, reads, "", err
			}
			if !ok {
				continue
			}
			found = true
			jumps, err := endpointJumps(rules, name)
			if err != nil {
				return nil, reads, "", err
			}
			c := dataplane.Chain{Name: name, Service: key.name, Local: k == kindSVL}
			for _, sep := range jumps {
				if ep, ok := p.seps[sep]; ok {
					c.Selected = append(c.Selected, ep)
					continue
				}
				c.Others = true
				if probeSEP == "" {
					probeSEP, probeKey = sep, key
				}
			}
			if len(c.Selected) > 0 {
				chains = append(chains, c)
			}
		}
		if !found {
			missing = append(missing, key)
		}
	}

	// Trust the names only once the ruleset confirms them. Finding a draining endpoint's chain
	// by its computed name confirms the endpoint chain formula.
	fresh := t.names.Fresh(p.family)
	if len(chains) > 0 {
		fresh.Endpoints = true
		t.names.Confirm(p.family, false, true)
	}
	if !fresh.Services || len(missing) > 0 || (!fresh.Endpoints && probeSEP != "") {
		n, why, err := t.verify(ctx, p.family, !fresh.Services || len(missing) > 0, missing, probeSEP, probeKey)
		reads += n
		if err != nil || why != "" {
			return nil, reads, why, err
		}
	}
	return chains, reads, "", nil
}

// verify checks kube-proxy's chain names against the ruleset. With readServices, every
// KUBE-SERVICES rule that carries a service port name must jump to a chain that name hashes to,
// and no rule may name a port of missing (whose chains were not found: a read that straddled a
// sync, or a name this code does not know). With sep, an endpoint chain of key, that chain must
// be named after its DNAT destination. A mismatch turns targeted reads off for good; why is then
// set.
func (t *Targeted) verify(ctx context.Context, family dataplane.Family, readServices bool, missing []portKey, sep string, key portKey) (reads int, why string, err error) {
	if readServices {
		rules, ok, err := t.cmds.ListChain(ctx, family, servicesChain)
		reads++
		if err != nil {
			return reads, "", err
		}
		if !ok {
			return reads, "", fmt.Errorf("%w: the nat table has no %s chain", dataplane.ErrRulesNotFound, servicesChain)
		}
		named, mismatch, err := serviceRules(rules)
		if err != nil {
			return reads, "", err
		}
		if mismatch != "" {
			return reads, t.names.Disable(mismatch), nil
		}
		for _, m := range missing {
			if named[m] {
				return reads, fmt.Sprintf("%s names %s, whose chains were not found: reading the whole table", servicesChain, m.name), nil
			}
		}
		if len(named) > 0 {
			t.names.Confirm(family, true, false)
		}
	}
	if sep != "" {
		out, ok, err := t.cmds.ListChain(ctx, family, sep)
		reads++
		if err != nil {
			return reads, "", err
		}
		if ok { // else deleted since its service chain was read: the next check looks again
			dest, err := dnatDestination(out, sep)
			if err != nil {
				return reads, "", err
			}
			if got := endpointChain(key, dest); got != sep {
				return reads, t.names.Disable(fmt.Sprintf("endpoint chain %s of %s DNATs to %s, which kube-proxy v1.37 names %s", sep, key.name, dest, got)), nil
			}
			t.names.Confirm(family, false, true)
		}
	}
	return reads, "", nil
}

// portProtoHash is kube-proxy's hash of a service port (proxier.go portProtoHash).
func portProtoHash(k portKey) string {
	h := sha256.Sum256([]byte(k.name + k.protocol))
	return base32.StdEncoding.EncodeToString(h[:])[:hashLen]
}

// endpointChain is kube-proxy's endpoint chain name (proxier.go servicePortEndpointChainName):
// the endpoint is "ip:port" as net.JoinHostPort writes it, which AddrPort.String matches for
// unzoned addresses.
func endpointChain(k portKey, ep netip.AddrPort) string {
	h := sha256.Sum256([]byte(k.name + k.protocol + ep.String()))
	return prefixes[kindSEP] + base32.StdEncoding.EncodeToString(h[:])[:hashLen]
}

// endpointJumps lists the endpoint chains that chain's rules (`-S chain` output) jump to, each once.
func endpointJumps(rules []byte, chain string) ([]string, error) {
	var out []string
	err := eachRule(rules, chain, func(line []byte) error {
		target := ruleTarget(line)
		if !bytes.HasPrefix(target, []byte(prefixes[kindSEP])) {
			return nil
		}
		if len(target) != len(prefixes[kindSEP])+hashLen {
			return fmt.Errorf("chain %s jumps to %s, not named like kube-proxy v1.37's %s<16 characters>", chain, target, prefixes[kindSEP])
		}
		for _, s := range out {
			if s == string(target) {
				return nil
			}
		}
		out = append(out, string(target))
		return nil
	})
	return out, err
}

// dnatDestination returns the DNAT destination of an endpoint chain.
func dnatDestination(rules []byte, chain string) (netip.AddrPort, error) {
	var dest netip.AddrPort
	err := eachRule(rules, chain, func(line []byte) error {
		for i := 0; i < len(line); {
			var tok []byte
			tok, i = token(line, i)
			if string(tok) == "--to-destination" {
				v, _ := token(line, i)
				ap, ok := ipbytes.ParseAddrPort(v)
				if !ok {
					return fmt.Errorf("chain %s: DNAT to %q, not ip:port", chain, v)
				}
				dest = ap
			}
		}
		return nil
	})
	if err == nil && !dest.IsValid() {
		err = fmt.Errorf("chain %s has no DNAT rule", chain)
	}
	return dest, err
}

// serviceRules reads KUBE-SERVICES: the service ports its rules name in their comments, and the
// first rule whose target is not the chain its comment and protocol hash to.
func serviceRules(rules []byte) (named map[portKey]bool, mismatch string, err error) {
	named = map[portKey]bool{}
	err = eachRule(rules, servicesChain, func(line []byte) error {
		var comment, proto, target []byte
		for i := 0; i < len(line); {
			var tok []byte
			tok, i = token(line, i)
			switch string(tok) {
			case "--comment":
				comment, i = token(line, i)
			case "-p":
				proto, i = token(line, i)
			case "-j", "-g":
				target, i = token(line, i)
			}
		}
		name := serviceName(comment)
		key, ok, err := chainKeyOf(target)
		if err != nil || !ok || name == "" || proto == nil || key.kind == kindRoot {
			return err
		}
		k := portKey{name, string(proto)}
		named[k] = true
		if mismatch == "" && string(key.hash[:]) != portProtoHash(k) {
			mismatch = fmt.Sprintf("%s rule for %s %s jumps to %s", servicesChain, name, proto, target)
		}
		return nil
	})
	return named, mismatch, err
}

// eachRule calls fn with each "-A chain …" line of `-S chain` output, after "-A chain ".
func eachRule(rules []byte, chain string, fn func(line []byte) error) error {
	prefix := []byte("-A " + chain + " ")
	sc := bufio.NewScanner(bytes.NewReader(rules))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, prefix) {
			continue
		}
		if err := fn(line[len(prefix):]); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read -S %s output: %w", chain, err)
	}
	return nil
}

// ruleTarget returns the -j or -g target of a rule.
func ruleTarget(line []byte) []byte {
	var target []byte
	for i := 0; i < len(line); {
		var tok []byte
		tok, i = token(line, i)
		if string(tok) == "-j" || string(tok) == "-g" {
			target, i = token(line, i)
		}
	}
	return target
}
