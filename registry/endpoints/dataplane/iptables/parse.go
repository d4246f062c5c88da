package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Chain names and shapes as k8s.io/kubernetes v1.37.0 pkg/proxy/iptables/proxier.go writes them
// (constants kubeServicesChain, kubeNodePortsChain and the servicePort…ChainNamePrefix family).
const (
	servicesChain  = "KUBE-SERVICES"
	nodePortsChain = "KUBE-NODEPORTS"
)

type kind uint8

const (
	kindOther kind = iota
	kindRoot       // KUBE-SERVICES, KUBE-NODEPORTS: where new connections to a service IP start
	kindExt        // KUBE-EXT-…: external traffic, splits into SVC/SVL
	kindFW         // KUBE-FW-…: loadBalancerSourceRanges, continues to EXT
	kindSVC        // KUBE-SVC-…: Cluster traffic policy endpoints
	kindSVL        // KUBE-SVL-…: Local traffic policy endpoints
	kindSEP        // KUBE-SEP-…: one endpoint, DNAT
)

func chainKind(name []byte) kind {
	switch {
	case len(name) < 8 || string(name[:5]) != "KUBE-":
		return kindOther
	case bytes.HasPrefix(name, []byte("KUBE-SEP-")):
		return kindSEP
	case bytes.HasPrefix(name, []byte("KUBE-SVC-")):
		return kindSVC
	case bytes.HasPrefix(name, []byte("KUBE-SVL-")):
		return kindSVL
	case bytes.HasPrefix(name, []byte("KUBE-EXT-")):
		return kindExt
	case bytes.HasPrefix(name, []byte("KUBE-FW-")):
		return kindFW
	case string(name) == servicesChain, string(name) == nodePortsChain:
		return kindRoot
	}
	return kindOther
}

// Endpoint destinations of a SEP chain besides an index into parser.hits.
const (
	destNone  = -1 // no DNAT seen (yet)
	destOther = -2 // DNAT to an endpoint that is not draining
)

type node struct {
	name    string
	service string
	kind    kind
	dest    int32
}

type edge struct{ from, to uint32 }

// parser reads iptables-save output of the nat table in one pass and keeps only the chain graph
// between kube-proxy's chains and, per endpoint chain, whether it DNATs to a draining IP: a few
// bytes per chain, so memory stays small at 50,000 endpoints.
type parser struct {
	draining dataplane.Draining
	ids      map[string]uint32
	nodes    []node
	edges    []edge
	hits     []netip.AddrPort
	found    bool
}

// parse returns the service chains reachable for new connections that select a draining IP.
func parse(r io.Reader, draining dataplane.Draining) ([]dataplane.Chain, error) {
	p := &parser{draining: draining, ids: make(map[string]uint32)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	table := ""
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		switch line[0] {
		case '#':
			continue
		case '*':
			table = string(line[1:])
			continue
		case ':':
			if table == "nat" && bytes.HasPrefix(line[1:], []byte(servicesChain+" ")) {
				p.found = true
			}
			continue
		case '[': // rule counters of iptables-save -c
			if i := bytes.IndexByte(line, ']'); i >= 0 {
				line = bytes.TrimLeft(line[i+1:], " ")
			}
		}
		if bytes.Equal(line, []byte("COMMIT")) {
			table = ""
			continue
		}
		if table != "nat" || !bytes.HasPrefix(line, []byte("-A ")) {
			continue
		}
		if err := p.rule(line[3:]); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read iptables-save output: %w", err)
	}
	if !p.found {
		return nil, fmt.Errorf("%w: the nat table has no %s chain", dataplane.ErrRulesNotFound, servicesChain)
	}
	return p.chains(), nil
}

// rule handles the text after "-A ".
func (p *parser) rule(line []byte) error {
	chain, i := token(line, 0)
	k := chainKind(chain)
	if k == kindOther {
		return nil
	}
	var target, comment, dest []byte
	for i < len(line) {
		var tok []byte
		tok, i = token(line, i)
		switch string(tok) {
		case "-j", "-g":
			target, i = token(line, i)
		case "--comment":
			comment, i = token(line, i)
		case "--to-destination":
			dest, i = token(line, i)
		}
	}
	if target == nil {
		return nil
	}
	if k == kindSEP {
		if string(target) == "DNAT" {
			return p.dnat(chain, dest)
		}
		return nil
	}
	tk := chainKind(target)
	if tk == kindOther {
		return nil
	}
	from, to := p.id(chain, k), p.id(target, tk)
	p.edges = append(p.edges, edge{from, to})
	if k == kindRoot && p.nodes[to].service == "" {
		p.nodes[to].service = serviceName(comment)
	}
	return nil
}

func (p *parser) dnat(chain, dest []byte) error {
	if dest == nil {
		return errors.New("DNAT rule without --to-destination")
	}
	id := p.id(chain, kindSEP)
	ap, err := netip.ParseAddrPort(string(dest))
	if err != nil || !p.draining.Has(ap.Addr()) {
		// A destination kube-proxy would not write (a range) counts as an endpoint that is not
		// draining: the verdict errs towards Routed, never towards NotRouted.
		p.nodes[id].dest = destOther
		return nil
	}
	p.nodes[id].dest = int32(len(p.hits))
	p.hits = append(p.hits, ap)
	return nil
}

func (p *parser) id(name []byte, k kind) uint32 {
	if id, ok := p.ids[string(name)]; ok {
		return id
	}
	id := uint32(len(p.nodes))
	s := string(name)
	p.ids[s] = id
	p.nodes = append(p.nodes, node{name: s, kind: k, dest: destNone})
	return id
}

// chains walks from KUBE-SERVICES and KUBE-NODEPORTS along the jumps to the service chains a new
// connection can reach and reports those that select a draining endpoint. SEP chains that no
// reachable service chain jumps to (kube-proxy deletes stale chains late in large clusters,
// proxier.go syncProxyRules "Delete chains no longer in use") do not count.
func (p *parser) chains() []dataplane.Chain {
	// Adjacency in compressed rows: start[n]..start[n+1] indexes adj.
	start := make([]uint32, len(p.nodes)+1)
	for _, e := range p.edges {
		start[e.from+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	adj := make([]uint32, len(p.edges))
	fill := make([]uint32, len(p.nodes))
	copy(fill, start)
	for _, e := range p.edges {
		adj[fill[e.from]] = e.to
		fill[e.from]++
	}

	reached := make([]bool, len(p.nodes))
	var queue []uint32
	for id, n := range p.nodes {
		if n.kind == kindRoot {
			reached[id] = true
			queue = append(queue, uint32(id))
		}
	}
	var out []dataplane.Chain
	seen := fill // reused as a per-chain marker: seen[sep] == chain+1 once counted
	clear(seen)
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		n := &p.nodes[id]
		if n.kind == kindSVC || n.kind == kindSVL {
			if c, ok := p.serviceChain(id, adj[start[id]:start[id+1]], seen); ok {
				out = append(out, c)
			}
			continue
		}
		for _, to := range adj[start[id]:start[id+1]] {
			if p.nodes[to].service == "" {
				p.nodes[to].service = n.service
			}
			if !reached[to] && p.nodes[to].kind != kindSEP {
				reached[to] = true
				queue = append(queue, to)
			}
		}
	}
	return out
}

func (p *parser) serviceChain(id uint32, targets []uint32, seen []uint32) (dataplane.Chain, bool) {
	n := p.nodes[id]
	c := dataplane.Chain{Name: n.name, Service: n.service, Local: n.kind == kindSVL}
	for _, to := range targets {
		t := p.nodes[to]
		if t.kind != kindSEP || seen[to] == id+1 {
			continue
		}
		seen[to] = id + 1
		switch {
		case t.dest >= 0:
			c.Selected = append(c.Selected, p.hits[t.dest])
		case t.dest == destOther:
			c.Others = true
		}
	}
	return c, len(c.Selected) > 0
}

// serviceName takes kube-proxy's service port name from the comment of a KUBE-SERVICES or
// KUBE-NODEPORTS rule: `"ns/name:port cluster IP"`, `… external IP`, `… loadbalancer IP`, or
// the bare name on node ports.
func serviceName(comment []byte) string {
	for _, suffix := range []string{" cluster IP", " external IP", " loadbalancer IP"} {
		if bytes.HasSuffix(comment, []byte(suffix)) {
			comment = comment[:len(comment)-len(suffix)]
			break
		}
	}
	if bytes.IndexByte(comment, '/') < 0 || bytes.IndexByte(comment, ' ') >= 0 {
		return ""
	}
	return string(comment)
}

// token returns the word of an iptables-save line that starts at or after i, and the index
// after it. iptables-save double-quotes a value with characters outside [A-Za-z0-9_-] and
// escapes `"`, `\` and `'` inside the quotes (libxtables xtables_save_string); the quotes are
// dropped and the escapes resolved.
func token(line []byte, i int) ([]byte, int) {
	for i < len(line) && line[i] == ' ' {
		i++
	}
	if i >= len(line) {
		return nil, i
	}
	if line[i] != '"' {
		j := i
		for j < len(line) && line[j] != ' ' {
			j++
		}
		return line[i:j], j
	}
	i++
	j := i
	escaped := false
	for j < len(line) && line[j] != '"' {
		if line[j] == '\\' && j+1 < len(line) {
			escaped = true
			j++
		}
		j++
	}
	tok := line[i:j]
	if escaped {
		out := make([]byte, 0, len(tok))
		for k := 0; k < len(tok); k++ {
			if tok[k] == '\\' && k+1 < len(tok) {
				k++
			}
			out = append(out, tok[k])
		}
		tok = out
	}
	return tok, min(j+1, len(line))
}
