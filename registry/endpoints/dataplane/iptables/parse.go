package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/ipbytes"
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

// prefixes of the per-service chains, indexed by kind; each is followed by 16 characters of
// base32 (proxier.go portProtoHash, servicePortEndpointChainName).
var prefixes = [...]string{kindExt: "KUBE-EXT-", kindFW: "KUBE-FW-", kindSVC: "KUBE-SVC-", kindSVL: "KUBE-SVL-", kindSEP: "KUBE-SEP-"}

const hashLen = 16

// chainKey identifies one of kube-proxy's chains without keeping its name as a string: a map
// keyed by it hashes and compares a few fixed bytes and allocates nothing per chain.
type chainKey struct {
	kind kind
	hash [hashLen]byte
}

func (k chainKey) String() string {
	if k.kind == kindRoot {
		return "KUBE-" + string(bytes.TrimRight(k.hash[:], "\x00"))
	}
	return prefixes[k.kind] + string(k.hash[:])
}

// chainKeyOf classifies a chain name; ok is false for chains that are not kube-proxy's service
// chains. A name with a kube-proxy prefix but not its shape is an error: a kube-proxy this
// parser does not know must not look like one without rules.
func chainKeyOf(name []byte) (key chainKey, ok bool, err error) {
	if len(name) < 8 || string(name[:5]) != "KUBE-" {
		return key, false, nil
	}
	if string(name) == servicesChain || string(name) == nodePortsChain {
		key.kind = kindRoot
		copy(key.hash[:], name[5:])
		return key, true, nil
	}
	for k := kindExt; k <= kindSEP; k++ {
		if bytes.HasPrefix(name, []byte(prefixes[k])) {
			if len(name) != len(prefixes[k])+hashLen {
				return key, false, fmt.Errorf("chain %s is not named like kube-proxy v1.37's %s<16 characters>", name, prefixes[k])
			}
			key.kind = k
			copy(key.hash[:], name[len(prefixes[k]):])
			return key, true, nil
		}
	}
	return key, false, nil
}

type node struct {
	key     chainKey
	service string
}

type edge struct{ from, to uint32 }

// sepEdge is a jump from a service chain to an endpoint chain, which may not have been read yet.
type sepEdge struct {
	from uint32
	sep  [hashLen]byte
}

// parser reads iptables-save output of the nat table in one pass. It keeps the graph of
// kube-proxy's chains above the endpoint (SEP) chains, the jumps into SEP chains as 20-byte
// records, and only those SEP chains that DNAT to a draining IP: about 1.5 MB at 50,000
// endpoints.
type parser struct {
	draining dataplane.Draining
	ids      map[chainKey]uint32
	nodes    []node
	edges    []edge
	sepEdges []sepEdge
	hits     map[[hashLen]byte]netip.AddrPort
	found    bool
	// sepChains counts the SEP chains declared.
	sepChains int
	// last chain a rule was appended to: iptables-save prints a chain's rules together.
	lastChain []byte
	lastKey   chainKey
}

// parse returns the service chains reachable for new connections that select a draining IP.
func parse(r io.Reader, draining dataplane.Draining) ([]dataplane.Chain, error) {
	p := &parser{draining: draining, ids: make(map[chainKey]uint32), hits: make(map[[hashLen]byte]netip.AddrPort)}
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
			if table == "nat" {
				p.declare(line[1:])
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
		if table != "nat" || !bytes.HasPrefix(line, []byte("-A KUBE-")) {
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

// declare notes a chain declaration (":NAME POLICY [counters]"). iptables-save prints them all
// before the rules, so counting them sizes the tables once instead of growing them.
func (p *parser) declare(line []byte) {
	switch {
	case bytes.HasPrefix(line, []byte(servicesChain+" ")):
		p.found = true
	case bytes.HasPrefix(line, []byte(prefixes[kindSEP])):
		p.sepChains++
	}
}

// rule handles the text after "-A ".
func (p *parser) rule(line []byte) error {
	if p.sepEdges == nil {
		// About one jump per endpoint chain from its service chain (two with session
		// affinity, also one from the Local chain for local endpoints).
		p.sepEdges = make([]sepEdge, 0, p.sepChains+p.sepChains/8+16)
	}
	chain, i := token(line, 0)
	key, ok, err := p.chainKey(chain)
	if err != nil || !ok {
		return err
	}
	// Most rules are the two of each SEP chain; only the DNAT one matters.
	if key.kind == kindSEP && !bytes.Contains(line[i:], []byte("DNAT")) {
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
	if key.kind == kindSEP {
		if string(target) == "DNAT" {
			return p.dnat(key, dest)
		}
		return nil
	}
	tkey, ok, err := chainKeyOf(target)
	if err != nil || !ok {
		return err
	}
	from := p.id(key)
	if tkey.kind == kindSEP {
		p.sepEdges = append(p.sepEdges, sepEdge{from, tkey.hash})
		return nil
	}
	to := p.id(tkey)
	p.edges = append(p.edges, edge{from, to})
	if key.kind == kindRoot && p.nodes[to].service == "" {
		p.nodes[to].service = serviceName(comment)
	}
	return nil
}

// chainKey classifies the chain of a rule, reusing the previous rule's answer for the same chain.
func (p *parser) chainKey(chain []byte) (chainKey, bool, error) {
	if p.lastChain != nil && bytes.Equal(chain, p.lastChain) {
		return p.lastKey, true, nil
	}
	key, ok, err := chainKeyOf(chain)
	if err != nil || !ok {
		return key, ok, err
	}
	p.lastChain = append(p.lastChain[:0], chain...)
	p.lastKey = key
	return key, true, nil
}

func (p *parser) dnat(key chainKey, dest []byte) error {
	if dest == nil {
		return errors.New("DNAT rule without --to-destination")
	}
	// A SEP chain not recorded here counts as an endpoint that is not draining, including one
	// whose destination kube-proxy would not write (a range): the verdict errs towards Routed,
	// never towards NotRouted.
	if ap, ok := ipbytes.ParseAddrPort(dest); ok && p.draining.Has(ap.Addr()) {
		p.hits[key.hash] = ap
	}
	return nil
}

func (p *parser) id(key chainKey) uint32 {
	if id, ok := p.ids[key]; ok {
		return id
	}
	id := uint32(len(p.nodes))
	p.ids[key] = id
	p.nodes = append(p.nodes, node{key: key})
	return id
}

// chains walks from KUBE-SERVICES and KUBE-NODEPORTS along the jumps to the service chains a new
// connection can reach and reports those that select a draining endpoint. SEP chains that no
// reachable service chain jumps to (kube-proxy deletes stale chains late in large clusters,
// proxier.go syncProxyRules "Delete chains no longer in use") do not count.
func (p *parser) chains() []dataplane.Chain {
	// Adjacency in compressed rows: adj[start[n]:start[n+1]] are the targets of node n.
	start := make([]uint32, len(p.nodes)+1)
	for _, e := range p.edges {
		start[e.from+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	adj := make([]uint32, len(p.edges))
	fill := slices.Clone(start[:len(p.nodes)])
	for _, e := range p.edges {
		adj[fill[e.from]] = e.to
		fill[e.from]++
	}

	reached := make([]bool, len(p.nodes))
	var queue []uint32
	for id, n := range p.nodes {
		if n.key.kind == kindRoot {
			reached[id] = true
			queue = append(queue, uint32(id))
		}
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		for _, to := range adj[start[id]:start[id+1]] {
			if p.nodes[to].service == "" {
				p.nodes[to].service = p.nodes[id].service
			}
			if !reached[to] {
				reached[to] = true
				queue = append(queue, to)
			}
		}
	}

	others := make([]bool, len(p.nodes))
	selected := map[uint32][]netip.AddrPort{}
	for _, e := range p.sepEdges {
		if !reached[e.from] {
			continue
		}
		if k := p.nodes[e.from].key.kind; k != kindSVC && k != kindSVL {
			continue
		}
		if ap, ok := p.hits[e.sep]; ok {
			selected[e.from] = append(selected[e.from], ap)
		} else {
			others[e.from] = true
		}
	}
	out := make([]dataplane.Chain, 0, len(selected))
	for id, eps := range selected {
		n := p.nodes[id]
		out = append(out, dataplane.Chain{
			Name:     n.key.String(),
			Service:  n.service,
			Local:    n.key.kind == kindSVL,
			Selected: eps,
			Others:   others[id],
		})
	}
	return out
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
