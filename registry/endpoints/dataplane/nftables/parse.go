package nftables

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/ipbytes"
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

var kindPrefixes = [...]struct {
	prefix string
	kind   kind
}{{"service-", kindService}, {"local-", kindLocal}, {"external-", kindExternal}, {"endpoint-", kindEndpoint}}

func chainKind[T ~string | ~[]byte](name T) kind {
	for _, p := range kindPrefixes {
		if len(name) >= len(p.prefix) && string(name[:len(p.prefix)]) == p.prefix {
			return p.kind
		}
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
	rules    int
	selected []netip.AddrPort
	targets  []uint32
}

type parser struct {
	lex      *lexer
	draining dataplane.Draining
	ids      map[string]uint32
	nodes    []node
	found    bool
	version  int
	// all keeps every endpoint a chain DNATs to in selected, draining or not (one chain's
	// listing, see parseChain).
	all bool

	// Scratch for the object being read; its fields can come in any order.
	chain    []byte
	targets  []uint32         // chains it goes to
	selected []netip.AddrPort // draining endpoints it DNATs to
	others   bool             // it DNATs to an endpoint that is not draining
}

// parse reads `nft --json list table ip|ip6 kube-proxy` (libnftables-json(5)) while it streams
// and reduces it to the chain graph; nothing but that graph is kept.
func parse(r io.Reader, draining dataplane.Draining) ([]dataplane.Chain, error) {
	p := newParser(r, draining)
	if err := p.walk(p.object); err != nil {
		return nil, err
	}
	if !p.found {
		return nil, fmt.Errorf("%w: the kube-proxy table has no %q chain", dataplane.ErrRulesNotFound, servicesChain)
	}
	return p.chains(), nil
}

func newParser(r io.Reader, draining dataplane.Draining) *parser {
	return &parser{lex: newLexer(r), draining: draining, ids: make(map[string]uint32)}
}

// walk reads an nft JSON listing, calling object for each element of its "nftables" array, and
// checks the schema version.
func (p *parser) walk(object func() error) error {
	err := p.lex.object(func(key []byte) error {
		if string(key) != "nftables" {
			return p.lex.skip()
		}
		return p.lex.array(func(int) error { return object() })
	})
	if err != nil {
		return err
	}
	if p.version != 1 {
		return fmt.Errorf("nft JSON schema version %d, want 1: use nft 0.9.x or later", p.version)
	}
	return nil
}

// object reads one element of the "nftables" array: {"TYPE": {…}}.
func (p *parser) object() error {
	l := p.lex
	return l.object(func(typ []byte) error {
		switch string(typ) {
		case "metainfo":
			return p.metainfo()
		case "chain":
			_, err := l.field("name", func() error {
				name, err := l.str()
				p.found = p.found || string(name) == servicesChain
				return err
			})
			return err
		case "map":
			return p.verdictMapObject()
		case "rule":
			return p.rule()
		}
		return l.skip()
	})
}

// metainfo reads the value of {"metainfo": {…}}: the JSON schema version.
func (p *parser) metainfo() error {
	_, err := p.lex.field("json_schema_version", func() error {
		v, err := p.lex.scalar()
		p.version, _ = strconv.Atoi(string(v))
		return err
	})
	return err
}

// verdictMapObject reads a named map; the elements of service-ips and service-nodeports, the
// maps the services chain dispatches on, are where new connections enter service chains.
func (p *parser) verdictMapObject() error {
	l := p.lex
	var name []byte
	p.targets = p.targets[:0]
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "name":
			n, err := l.str()
			name = append(name[:0], n...)
			return err
		case "elem":
			return p.verdictElems()
		}
		return l.skip()
	})
	if err != nil {
		return err
	}
	if string(name) != serviceIPsMap && string(name) != serviceNodePortsMap {
		return nil
	}
	for _, id := range p.targets {
		p.nodes[id].root = true
	}
	return nil
}

// verdictElems reads [[key, verdict], …] into p.targets.
func (p *parser) verdictElems() error {
	l := p.lex
	return l.array(func(int) error {
		return l.array(func(i int) error {
			if i != 1 {
				return l.skip()
			}
			return p.verdict()
		})
	})
}

// verdict reads {"goto": {"target": chain}} or {"jump": …} into p.targets; other verdicts
// (accept, drop) are skipped.
func (p *parser) verdict() error {
	l := p.lex
	if c, err := l.peek(); err != nil || c != '{' {
		if err != nil {
			return err
		}
		return l.skip()
	}
	return l.object(func(key []byte) error {
		if string(key) != "goto" && string(key) != "jump" {
			return l.skip()
		}
		return p.jumpTarget()
	})
}

// jumpTarget reads {"target": chain} of a goto or jump.
func (p *parser) jumpTarget() error {
	_, err := p.lex.field("target", func() error {
		t, err := p.lex.str()
		p.target(t)
		return err
	})
	return err
}

// rule reads {"chain": …, "expr": [statement, …]} and keeps the statements that lead to an
// endpoint: goto/jump, a verdict map (numgen … vmap with session affinity), dnat.
func (p *parser) rule() error {
	l := p.lex
	p.chain = p.chain[:0]
	p.targets = p.targets[:0]
	p.selected = p.selected[:0]
	p.others = false
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "chain":
			c, err := l.str()
			p.chain = append(p.chain, c...)
			return err
		case "expr":
			return l.array(func(int) error { return p.statement() })
		}
		return l.skip()
	})
	if err != nil {
		return err
	}
	k := chainKind(p.chain)
	if k == kindOther {
		return nil
	}
	n := &p.nodes[p.idOf(p.chain, k)]
	n.rules++
	n.targets = append(n.targets, p.targets...)
	n.selected = append(n.selected, p.selected...)
	n.others = n.others || p.others
	return nil
}

// target notes a chain a rule or map element goes to, if it is one of kube-proxy's service chains.
func (p *parser) target(name []byte) {
	if k := chainKind(name); k != kindOther {
		p.targets = append(p.targets, p.idOf(name, k))
	}
}

// endpoint notes a destination of a dnat statement; ok is false for one that is not ip:port.
// Destinations kube-proxy would not write count as endpoints that are not draining: the verdict
// errs towards Routed, never towards NotRouted.
func (p *parser) endpoint(ap netip.AddrPort, ok bool) {
	if ok && (p.all || p.draining.Has(ap.Addr())) {
		p.selected = append(p.selected, ap)
	} else {
		p.others = true
	}
}

func (p *parser) statement() error {
	l := p.lex
	return l.object(func(key []byte) error {
		switch string(key) {
		case "goto", "jump":
			return p.jumpTarget()
		case "vmap":
			_, err := l.field("data", func() error {
				if c, err := l.peek(); err != nil || c != '{' {
					return l.skip() // "@name" of a named map
				}
				_, err := l.field("set", p.verdictElems)
				return err
			})
			return err
		case "dnat":
			return p.dnat()
		}
		return l.skip()
	})
}

// dnat reads {"addr": "ip", "port": n} (one endpoint) or {"addr": {"map": {"key": numgen …,
// "data": {"set": [[i, {"concat": [ip, port]}], …]}}}} (kube-proxy's
// writeServiceToEndpointDNATs).
func (p *parser) dnat() error {
	l := p.lex
	var literal netip.Addr
	var literalOK, hasLiteral, hasPort bool
	var port uint64
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "addr":
			c, err := l.peek()
			if err != nil {
				return err
			}
			if c == '"' {
				s, err := l.str()
				literal, literalOK = ipbytes.ParseAddr(s)
				hasLiteral = true
				return err
			}
			found, err := l.field("map", func() error {
				_, err := l.field("data", func() error {
					_, err := l.field("set", func() error {
						return l.array(func(int) error {
							return l.array(func(i int) error {
								if i != 1 {
									return l.skip()
								}
								ap, ok, err := p.concatAddrPort()
								p.endpoint(ap, ok)
								return err
							})
						})
					})
					return err
				})
				return err
			})
			if !found {
				p.endpoint(netip.AddrPort{}, false) // a range, a prefix: not ip:port
			}
			return err
		case "port":
			c, err := l.peek()
			if err != nil {
				return err
			}
			if c < '0' || c > '9' {
				return l.skip() // a range: hasPort stays false
			}
			v, err := l.scalar()
			if err != nil {
				return err
			}
			port, err = strconv.ParseUint(string(v), 10, 16)
			hasPort = err == nil
			return nil
		}
		return l.skip()
	})
	if hasLiteral {
		p.endpoint(netip.AddrPortFrom(literal, uint16(port)), literalOK && hasPort)
	}
	return err
}

// concatAddrPort reads {"concat": [ip, port]}; ok is false for anything else.
func (p *parser) concatAddrPort() (ap netip.AddrPort, ok bool, err error) {
	l := p.lex
	if c, err := l.peek(); err != nil || c != '{' {
		if err != nil {
			return ap, false, err
		}
		return ap, false, l.skip()
	}
	var ip netip.Addr
	var ipOK, portOK bool
	var port uint64
	_, err = l.field("concat", func() error {
		return l.array(func(i int) error {
			c, err := l.peek()
			if err != nil {
				return err
			}
			switch {
			case i == 0 && c == '"':
				s, err := l.str()
				ip, ipOK = ipbytes.ParseAddr(s)
				return err
			case i == 1 && c >= '0' && c <= '9':
				v, err := l.scalar()
				if err == nil {
					port, err = strconv.ParseUint(string(v), 10, 16)
					portOK = err == nil
				}
				return nil
			}
			ipOK = false
			return l.skip()
		})
	})
	return netip.AddrPortFrom(ip, uint16(port)), ipOK && portOK, err
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

// idOf is id for a name read from the lexer; it copies the name only for a new chain.
func (p *parser) idOf(name []byte, k kind) uint32 {
	if id, ok := p.ids[string(name)]; ok {
		return id
	}
	return p.id(string(name), k)
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
		Local:    n.kind == kindLocal,
		Selected: n.selected,
		Others:   n.others,
	}
	// With session affinity every endpoint chain is a target twice; Decide drops the duplicates.
	for _, to := range n.targets {
		t := &p.nodes[to]
		if t.kind != kindEndpoint {
			continue
		}
		c.Selected = append(c.Selected, t.selected...)
		c.Others = c.Others || t.others
	}
	if len(c.Selected) == 0 {
		return c, false
	}
	c.Service = serviceName(n.name)
	return c, true
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
