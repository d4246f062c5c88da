package nftables

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Names kube-proxy v1.37.0 gives its objects (k8s.io/kubernetes pkg/proxy/nftables/proxier.go:
// servicesChain, serviceIPsMap, serviceNodePortsMap, servicePort…ChainNamePrefix).
const (
	servicesChain       = "services"
	serviceIPsMap       = "service-ips"
	serviceNodePortsMap = "service-nodeports"
)

type kind uint8

const (
	kindOther    kind = iota
	kindService       // service-…: Cluster traffic policy endpoints
	kindLocal         // local-…: Local traffic policy endpoints
	kindExternal      // external-…: external traffic, splits into service-/local-
	kindEndpoint      // endpoint-…: one endpoint, with session affinity only
)

func chainKind(name string) kind {
	switch {
	case strings.HasPrefix(name, "service-"):
		return kindService
	case strings.HasPrefix(name, "local-"):
		return kindLocal
	case strings.HasPrefix(name, "external-"):
		return kindExternal
	case strings.HasPrefix(name, "endpoint-"):
		return kindEndpoint
	}
	return kindOther
}

// node is one of kube-proxy's per-service chains. Endpoints a chain DNATs to itself (service-
// and local- chains without session affinity, endpoint- chains) are summarised as the draining
// ones (selected) and whether there is any other.
type node struct {
	name     string
	kind     kind
	root     bool
	others   bool
	selected []netip.AddrPort
	targets  []uint32
}

type parser struct {
	draining dataplane.Draining
	ids      map[string]uint32
	nodes    []node
	found    bool
	version  int
}

// parse reads `nft --json list table ip|ip6 kube-proxy` while it streams: one top-level object
// (table, chain, map, set, rule) is decoded at a time and reduced to the chain graph.
func parse(r io.Reader, draining dataplane.Draining) ([]dataplane.Chain, error) {
	p := &parser{draining: draining, ids: make(map[string]uint32)}
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("read nft JSON: %w", err)
		}
		if key != "nftables" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, fmt.Errorf("read nft JSON: %w", err)
			}
			continue
		}
		if err := expectDelim(dec, '['); err != nil {
			return nil, err
		}
		for dec.More() {
			var o object
			if err := dec.Decode(&o); err != nil {
				return nil, fmt.Errorf("read nft JSON: %w", err)
			}
			if err := p.object(&o); err != nil {
				return nil, err
			}
		}
		if err := expectDelim(dec, ']'); err != nil {
			return nil, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	if p.version != 1 {
		return nil, fmt.Errorf("nft JSON schema version %d, want 1: use nft 0.9.x or later", p.version)
	}
	if !p.found {
		return nil, fmt.Errorf("%w: the kube-proxy table has no %q chain", dataplane.ErrRulesNotFound, servicesChain)
	}
	return p.chains(), nil
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("read nft JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("read nft JSON: got %v, want %q", tok, want)
	}
	return nil
}

// object is one element of the "nftables" array (libnftables-json(5)); other object types are
// skipped by the decoder.
type object struct {
	Metainfo *struct {
		Version int `json:"json_schema_version"`
	} `json:"metainfo"`
	Chain *struct {
		Name string `json:"name"`
	} `json:"chain"`
	Map  *nftMap  `json:"map"`
	Rule *nftRule `json:"rule"`
}

type nftMap struct {
	Name string        `json:"name"`
	Elem []verdictPair `json:"elem"`
}

type nftRule struct {
	Chain string      `json:"chain"`
	Expr  []statement `json:"expr"`
}

// statement keeps the statements that lead to an endpoint: goto/jump, a verdict map (numgen …
// vmap with session affinity), and dnat.
type statement struct {
	Goto *target `json:"goto"`
	Jump *target `json:"jump"`
	Vmap *struct {
		Data verdictMap `json:"data"`
	} `json:"vmap"`
	Dnat *struct {
		Addr address `json:"addr"`
		Port port    `json:"port"`
	} `json:"dnat"`
}

type target struct {
	Target string `json:"target"`
}

// verdictPair is a [key, verdict] element of a verdict map; only the chain it goes to is kept.
type verdictPair struct{ chain string }

func (v *verdictPair) UnmarshalJSON(b []byte) error {
	var pair [2]verdict
	if err := json.Unmarshal(b, &pair); err != nil {
		return err
	}
	v.chain = pair[1].chain
	return nil
}

// verdict is {"goto": {"target": chain}} or {"jump": …}; other values (keys, accept, drop) leave
// it empty.
type verdict struct{ chain string }

func (v *verdict) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return nil
	}
	var s struct {
		Goto *target `json:"goto"`
		Jump *target `json:"jump"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	switch {
	case s.Goto != nil:
		v.chain = s.Goto.Target
	case s.Jump != nil:
		v.chain = s.Jump.Target
	}
	return nil
}

// verdictMap is the "data" of a vmap: "@name" of a named map, or an anonymous {"set": [...]}.
type verdictMap struct{ elems []verdictPair }

func (m *verdictMap) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return nil
	}
	var s struct {
		Set []verdictPair `json:"set"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	m.elems = s.Set
	return nil
}

// address is the "addr" of a dnat statement: a literal ("10.0.0.1", single endpoint) or
// `numgen random mod N map { i : ip . port }` (kube-proxy's writeServiceToEndpointDNATs).
type address struct {
	literal string
	targets []netip.AddrPort
	invalid int // map entries that are not ip . port
}

func (a *address) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &a.literal)
	}
	var m struct {
		Map struct {
			Data struct {
				Set [][2]concat `json:"set"`
			} `json:"data"`
		} `json:"map"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for _, pair := range m.Map.Data.Set {
		ap, err := addrPort(pair[1])
		if err != nil {
			a.invalid++
			continue
		}
		a.targets = append(a.targets, ap)
	}
	return nil
}

// concat is {"concat": [scalar, …]}; other values (map keys) leave it empty.
type concat []scalar

func (c *concat) UnmarshalJSON(b []byte) error {
	if len(b) == 0 || b[0] != '{' {
		return nil
	}
	var s struct {
		Concat []scalar `json:"concat"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*c = s.Concat
	return nil
}

// scalar is a string or a number of a concatenation.
type scalar string

func (s *scalar) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, (*string)(s))
	}
	*s = scalar(b)
	return nil
}

func addrPort(c concat) (netip.AddrPort, error) {
	if len(c) != 2 {
		return netip.AddrPort{}, errors.New("not ip . port")
	}
	ip, err := netip.ParseAddr(string(c[0]))
	if err != nil {
		return netip.AddrPort{}, err
	}
	n, err := strconv.ParseUint(string(c[1]), 10, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

// port is the "port" of a dnat statement; 0 when absent or not a number.
type port uint16

func (p *port) UnmarshalJSON(b []byte) error {
	n, err := strconv.ParseUint(string(b), 10, 16)
	if err == nil {
		*p = port(n)
	}
	return nil
}

func (p *parser) object(o *object) error {
	switch {
	case o.Metainfo != nil:
		p.version = o.Metainfo.Version
	case o.Chain != nil:
		if o.Chain.Name == servicesChain {
			p.found = true
		}
	case o.Map != nil:
		// The verdict maps the services chain dispatches on: destination → service chain.
		if o.Map.Name != serviceIPsMap && o.Map.Name != serviceNodePortsMap {
			return nil
		}
		for _, e := range o.Map.Elem {
			if k := chainKind(e.chain); k != kindOther {
				p.nodes[p.id(e.chain, k)].root = true
			}
		}
	case o.Rule != nil:
		p.rule(o.Rule)
	}
	return nil
}

func (p *parser) rule(r *nftRule) {
	k := chainKind(r.Chain)
	if k == kindOther {
		return
	}
	from := p.id(r.Chain, k)
	for _, s := range r.Expr {
		switch {
		case s.Goto != nil:
			p.edge(from, s.Goto.Target)
		case s.Jump != nil:
			p.edge(from, s.Jump.Target)
		case s.Vmap != nil:
			for _, e := range s.Vmap.Data.elems {
				p.edge(from, e.chain)
			}
		case s.Dnat != nil:
			p.dnat(from, s.Dnat.Addr, uint16(s.Dnat.Port))
		}
	}
}

func (p *parser) edge(from uint32, to string) {
	k := chainKind(to)
	if k == kindOther {
		return
	}
	id := p.id(to, k)
	p.nodes[from].targets = append(p.nodes[from].targets, id)
}

func (p *parser) dnat(id uint32, a address, port uint16) {
	n := &p.nodes[id]
	targets := a.targets
	if a.literal != "" {
		ip, err := netip.ParseAddr(a.literal)
		if err != nil {
			n.others = true
			return
		}
		targets = []netip.AddrPort{netip.AddrPortFrom(ip, port)}
	}
	// Destinations kube-proxy would not write count as endpoints that are not draining: the
	// verdict errs towards Routed, never towards NotRouted.
	if a.invalid > 0 {
		n.others = true
	}
	for _, ap := range targets {
		if p.draining.Has(ap.Addr()) {
			n.selected = append(n.selected, ap)
		} else {
			n.others = true
		}
	}
}

func (p *parser) id(name string, k kind) uint32 {
	if id, ok := p.ids[name]; ok {
		return id
	}
	id := uint32(len(p.nodes))
	p.ids[name] = id
	p.nodes = append(p.nodes, node{name: name, kind: k})
	return id
}

// chains walks from the service-ips and service-nodeports maps to the service and local chains
// new connections reach and reports those that select a draining endpoint, directly or through
// endpoint chains. Chains nothing reaches (kube-proxy flushes stale chains and deletes them a
// second later, proxier.go syncProxyRules staleChains) do not count.
func (p *parser) chains() []dataplane.Chain {
	reached := make([]bool, len(p.nodes))
	var queue []uint32
	for id, n := range p.nodes {
		if n.root {
			reached[id] = true
			queue = append(queue, uint32(id))
		}
	}
	var out []dataplane.Chain
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		n := &p.nodes[id]
		switch n.kind {
		case kindService, kindLocal:
			if c, ok := p.serviceChain(n); ok {
				out = append(out, c)
			}
		case kindExternal:
			for _, to := range n.targets {
				if !reached[to] {
					reached[to] = true
					queue = append(queue, to)
				}
			}
		}
	}
	return out
}

func (p *parser) serviceChain(n *node) (dataplane.Chain, bool) {
	c := dataplane.Chain{
		Name:     n.name,
		Service:  serviceName(n.name),
		Local:    n.kind == kindLocal,
		Selected: n.selected,
		Others:   n.others,
	}
	seen := make(map[uint32]bool, len(n.targets))
	for _, to := range n.targets {
		t := &p.nodes[to]
		if t.kind != kindEndpoint || seen[to] {
			continue
		}
		seen[to] = true
		c.Selected = append(c.Selected, t.selected...)
		c.Others = c.Others || t.others
	}
	return c, len(c.Selected) > 0
}

// serviceName turns a chain name such as "service-HASH-ns/name/tcp/port" (proxier.go
// servicePortChainNameBase) into kube-proxy's service port name, "ns/name:port".
func serviceName(chain string) string {
	_, rest, _ := strings.Cut(chain, "-") // kind prefix
	_, rest, _ = strings.Cut(rest, "-")   // hash
	parts := strings.Split(rest, "/")
	if len(parts) != 4 {
		return ""
	}
	name := parts[0] + "/" + parts[1]
	if parts[3] != "" {
		name += ":" + parts[3]
	}
	return name
}
