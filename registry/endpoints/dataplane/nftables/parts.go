package nftables

import (
	"io"
	"net/netip"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Rules is what the rules of one chain of kube-proxy's table do, as a targeted read needs it.
type Rules struct {
	// Count is the number of rules; a chain that does not exist reads as one without rules.
	Count int
	// Goes lists kube-proxy's per-service chains (service-, local-, external-, endpoint-) the
	// rules go to or jump to, directly or through a verdict map, in order, with repeats.
	Goes []string
	// DNAT lists every destination the rules DNAT to, draining or not.
	DNAT []netip.AddrPort
	// Odd is set when a rule DNATs to something that is not one ip:port (kube-proxy writes
	// none): a reader counts it as an endpoint that is not draining.
	Odd bool
}

// MapElem is one element of the service-ips or service-nodeports map that goes to one of
// kube-proxy's per-service chains.
type MapElem struct {
	// Map is the map's name.
	Map string
	// Protocol is the element key's transport protocol, "tcp", "udp" or "sctp"; "" when the
	// key carries none that a reader recognised.
	Protocol string
	// Chain is the chain the element goes to.
	Chain string
}

// parseChain reads an nft JSON listing, of one chain (`nft --json list chain`) or of the whole
// table, and returns what the rules of chain do.
func parseChain(r io.Reader, chain string) (Rules, error) {
	p := newParser(r, dataplane.Draining{})
	p.all = true
	if err := p.walk(p.object); err != nil {
		return Rules{}, err
	}
	id, ok := p.ids[chain]
	if !ok {
		return Rules{}, nil
	}
	n := p.nodes[id]
	out := Rules{Count: n.rules, DNAT: n.selected, Odd: n.others}
	for _, to := range n.targets {
		out.Goes = append(out.Goes, p.nodes[to].name)
	}
	return out, nil
}

// parseMaps reads an nft JSON listing, of one map (`nft --json list map`) or of the whole table,
// and returns the elements of service-ips and service-nodeports that go to a per-service chain.
func parseMaps(r io.Reader) ([]MapElem, error) {
	p := newParser(r, dataplane.Draining{})
	var out []MapElem
	err := p.walk(func() error {
		return p.lex.object(func(typ []byte) error {
			switch string(typ) {
			case "metainfo":
				return p.metainfo()
			case "map":
				elems, err := p.serviceMap()
				out = append(out, elems...)
				return err
			}
			return p.lex.skip()
		})
	})
	return out, err
}

// serviceMap reads a map object; it returns its elements when it is service-ips or
// service-nodeports.
func (p *parser) serviceMap() ([]MapElem, error) {
	l := p.lex
	var name []byte
	var elems []MapElem
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "name":
			n, err := l.str()
			name = append(name[:0], n...)
			return err
		case "elem":
			return l.array(func(int) error {
				var e MapElem
				p.targets = p.targets[:0]
				err := l.array(func(i int) error {
					switch i {
					case 0:
						proto, err := p.keyProtocol()
						e.Protocol = proto
						return err
					case 1:
						return p.verdict()
					}
					return l.skip()
				})
				if len(p.targets) == 1 {
					e.Chain = p.nodes[p.targets[0]].name
					elems = append(elems, e)
				}
				return err
			})
		}
		return l.skip()
	})
	if err != nil || (string(name) != serviceIPsMap && string(name) != serviceNodePortsMap) {
		return nil, err
	}
	for i := range elems {
		elems[i].Map = string(name)
	}
	return elems, nil
}

// keyProtocol reads a map key, {"concat": [ip, "tcp", port]} or {"concat": ["tcp", port]},
// possibly wrapped as {"elem": {"val": key, …}}, and returns its protocol.
func (p *parser) keyProtocol() (string, error) {
	l := p.lex
	if c, err := l.peek(); err != nil || c != '{' {
		if err != nil {
			return "", err
		}
		return "", l.skip()
	}
	var proto string
	err := l.object(func(key []byte) error {
		switch string(key) {
		case "elem":
			_, err := l.field("val", func() error {
				var err error
				proto, err = p.keyProtocol()
				return err
			})
			return err
		case "concat":
			return l.array(func(int) error {
				if c, err := l.peek(); err != nil || c != '"' {
					if err != nil {
						return err
					}
					return l.skip()
				}
				s, err := l.str()
				switch string(s) {
				case "tcp", "udp", "sctp":
					proto = string(s)
				}
				return err
			})
		}
		return l.skip()
	})
	return proto, err
}
