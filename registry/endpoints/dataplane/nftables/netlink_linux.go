//go:build linux

package nftables

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Netlink is the Reader that asks the kernel over netlink (NETLINK_NETFILTER), the interface nft
// itself uses: one rule dump that the kernel filters to the chain, then the elements of the
// anonymous maps its rules look up. nft 1.0.6 fetches every set of the table with its elements
// to list a single chain, which at 50,000 endpoints is thousands of set dumps; this reads a
// chain in well under a millisecond at any size. It only reads, and needs CAP_NET_ADMIN, as nft
// does.
//
// A read is one snapshot: the ruleset generation (NFT_MSG_GETGEN) must be the same before and
// after it, else it reads again; anonymous sets are named per table and reused, so a set read
// after kube-proxy replaced the rule could otherwise belong to another Service.
type Netlink struct{}

var _ Reader = Netlink{}

// Chain implements Reader.
func (Netlink) Chain(ctx context.Context, family dataplane.Family, name string) (Rules, error) {
	var rules Rules
	err := snapshot(ctx, func(c *nlConn) error {
		var err error
		rules, err = c.chain(family, name)
		return err
	})
	if err != nil {
		return Rules{}, fmt.Errorf("netlink: read chain %s: %w", name, err)
	}
	return rules, nil
}

// ServiceMaps implements Reader.
func (Netlink) ServiceMaps(ctx context.Context, family dataplane.Family) ([]MapElem, error) {
	var out []MapElem
	err := snapshot(ctx, func(c *nlConn) error {
		out = out[:0]
		for _, m := range []string{serviceIPsMap, serviceNodePortsMap} {
			elems, err := c.setElems(family, m)
			if errors.Is(err, syscall.ENOENT) {
				return fmt.Errorf("%w: no %s map in table %s %s", dataplane.ErrRulesNotFound, m, nftFamily(family), tableName)
			}
			if err != nil {
				return err
			}
			for _, e := range elems {
				if !e.verdict || (e.code != verdictGoto && e.code != verdictJump) || chainKind(e.chain) == kindOther {
					continue
				}
				out = append(out, MapElem{Map: m, Protocol: keyProtocol(family, m, e.key), Chain: e.chain})
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netlink: read the service maps: %w", err)
	}
	return out, nil
}

// keyProtocol reads the protocol of a service-ips key (address . inet_proto . inet_service) or
// of a service-nodeports key (inet_proto . inet_service); each part takes whole 4-byte registers.
func keyProtocol(family dataplane.Family, m string, key []byte) string {
	at := 0
	if m == serviceIPsMap {
		at = addrLen(family)
	}
	if len(key) <= at {
		return ""
	}
	switch key[at] {
	case syscall.IPPROTO_TCP:
		return "tcp"
	case syscall.IPPROTO_UDP:
		return "udp"
	case 132: // IPPROTO_SCTP
		return "sctp"
	}
	return ""
}

func addrLen(family dataplane.Family) int {
	if family == dataplane.IPv6 {
		return 16
	}
	return 4
}

// errChanged is a read the ruleset changed under.
var errChanged = errors.New("the ruleset changed while it was read")

// snapshotTries bounds the reads of one snapshot; kube-proxy syncs at most once a second by
// default.
const snapshotTries = 5

// snapshot runs read until the ruleset generation is the same before and after it.
func snapshot(ctx context.Context, read func(*nlConn) error) error {
	c, err := dialNetlink(ctx)
	if err != nil {
		return err
	}
	defer c.close()
	for range snapshotTries {
		before, err := c.generation()
		if err != nil {
			return err
		}
		err = read(c)
		if err != nil && !errors.Is(err, errChanged) {
			return err
		}
		after, genErr := c.generation()
		if genErr != nil {
			return genErr
		}
		if err == nil && before == after {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return fmt.Errorf("%w, %d times", errChanged, snapshotTries)
}

// Netlink constants from linux/netfilter/nfnetlink.h and nf_tables.h.
const (
	nfnlSubsysNFTables = 10

	msgGetRule    = 7
	msgGetSetElem = 13
	msgGetGen     = 16

	nfprotoIPv4 = 2
	nfprotoIPv6 = 10

	attrRuleTable       = 1
	attrRuleChain       = 2
	attrRuleExpressions = 4
	attrListElem        = 1
	attrExprName        = 1
	attrExprData        = 2
	attrDataValue       = 1
	attrDataVerdict     = 2
	attrVerdictCode     = 1
	attrVerdictChain    = 2
	attrImmediateDreg   = 1
	attrImmediateData   = 2
	attrLookupSet       = 1
	attrLookupDreg      = 3
	attrNATType         = 1
	attrNATFamily       = 2
	attrNATRegAddrMin   = 3
	attrNATRegProtoMin  = 5
	attrSetElemTable    = 1
	attrSetElemSet      = 2
	attrSetElemElements = 3
	attrSetElemKey      = 1
	attrSetElemData     = 2
	attrGenID           = 1

	natDNAT = 1

	verdictJump = -3
	verdictGoto = -4

	nlmFDumpIntr = 0x10
	nlaTypeMask  = 0x3fff
)

// nlConn is one netlink socket; requests on it run one at a time.
type nlConn struct {
	fd  int
	seq uint32
	buf []byte
}

func dialNetlink(ctx context.Context) (*nlConn, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	c := &nlConn{fd: fd, buf: make([]byte, 64<<10)}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		c.close()
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// A receive never blocks past the context's deadline (10 s without one).
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	tv := syscall.NsecToTimeval(timeout.Nanoseconds())
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		c.close()
		return nil, fmt.Errorf("netlink timeout: %w", err)
	}
	return c, nil
}

func (c *nlConn) close() { _ = syscall.Close(c.fd) }

func nfproto(family dataplane.Family) uint8 {
	if family == dataplane.IPv6 {
		return nfprotoIPv6
	}
	return nfprotoIPv4
}

// request sends one nf_tables request and calls each with the attributes of every message of
// the answer, after its nfgenmsg header. A dump ends with NLMSG_DONE, a request with its
// acknowledgement. An interrupted dump is errChanged; a kernel error is its errno.
func (c *nlConn) request(msg uint16, dump bool, family uint8, attrs []byte, each func(attrs []byte) error) error {
	c.seq++
	flags := uint16(syscall.NLM_F_REQUEST | syscall.NLM_F_ACK)
	if dump {
		flags = syscall.NLM_F_REQUEST | syscall.NLM_F_DUMP
	}
	req := make([]byte, syscall.NLMSG_HDRLEN+4, syscall.NLMSG_HDRLEN+4+len(attrs))
	binary.NativeEndian.PutUint32(req[0:4], uint32(syscall.NLMSG_HDRLEN+4+len(attrs)))
	binary.NativeEndian.PutUint16(req[4:6], nfnlSubsysNFTables<<8|msg)
	binary.NativeEndian.PutUint16(req[6:8], flags)
	binary.NativeEndian.PutUint32(req[8:12], c.seq)
	req[16] = family // nfgenmsg: family, version 0, resource id 0
	req = append(req, attrs...)
	if err := syscall.Sendto(c.fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	interrupted := false
	for {
		n, _, rflags, _, err := syscall.Recvmsg(c.fd, c.buf, nil, 0)
		if err != nil {
			if errors.Is(err, syscall.EAGAIN) {
				return fmt.Errorf("netlink: no answer in time: %w", context.DeadlineExceeded)
			}
			return fmt.Errorf("netlink receive: %w", err)
		}
		if rflags&syscall.MSG_TRUNC != 0 {
			return errors.New("netlink: message larger than the receive buffer")
		}
		msgs, err := syscall.ParseNetlinkMessage(c.buf[:n])
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != c.seq {
				continue // a late answer to an earlier request
			}
			switch m.Header.Type {
			case syscall.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("netlink: short error message")
				}
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return syscall.Errno(-errno)
				}
				return nil // the acknowledgement
			case syscall.NLMSG_DONE:
				if interrupted {
					return errChanged
				}
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno < 0 {
						return syscall.Errno(-errno)
					}
				}
				return nil
			}
			if m.Header.Flags&nlmFDumpIntr != 0 {
				interrupted = true
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short nf_tables message")
			}
			if err := each(m.Data[4:]); err != nil {
				return err
			}
		}
	}
}

// generation returns the ruleset's generation, which every committed change advances.
func (c *nlConn) generation() (uint32, error) {
	var gen uint32
	var found bool
	err := c.request(msgGetGen, false, 0, nil, func(b []byte) error {
		return eachAttr(b, func(typ uint16, v []byte) error {
			if typ == attrGenID && len(v) == 4 {
				gen, found = binary.BigEndian.Uint32(v), true
			}
			return nil
		})
	})
	if err == nil && !found {
		err = errors.New("netlink: no generation in the answer")
	}
	return gen, err
}

// chain dumps the rules of one chain of kube-proxy's table and reads the maps they look up.
func (c *nlConn) chain(family dataplane.Family, name string) (Rules, error) {
	var out Rules
	var lookups []lookup
	attrs := appendAttr(nil, attrRuleTable, cstring(tableName))
	attrs = appendAttr(attrs, attrRuleChain, cstring(name))
	err := c.request(msgGetRule, true, nfproto(family), attrs, func(b []byte) error {
		var table, chain string
		var exprs []byte
		err := eachAttr(b, func(typ uint16, v []byte) error {
			switch typ {
			case attrRuleTable:
				table = gostring(v)
			case attrRuleChain:
				chain = gostring(v)
			case attrRuleExpressions:
				exprs = v
			}
			return nil
		})
		if err != nil || table != tableName || chain != name {
			return err // a kernel that does not filter dumps sends every rule
		}
		out.Count++
		return decodeRule(exprs, family, &out, &lookups)
	})
	if errors.Is(err, syscall.ENOENT) {
		return Rules{}, nil // no such table or chain
	}
	if err != nil {
		return Rules{}, err
	}
	for _, l := range lookups {
		elems, err := c.setElems(family, l.set)
		if errors.Is(err, syscall.ENOENT) {
			return Rules{}, errChanged // the rule went away with its map
		}
		if err != nil {
			return Rules{}, err
		}
		for _, e := range elems {
			l.apply(e, &out)
		}
	}
	return out, nil
}

// setElem is one element of a set or map.
type setElem struct {
	key, data []byte
	code      int32 // verdict code when the data is a verdict
	chain     string
	verdict   bool
}

// setElems dumps the elements of one set of kube-proxy's table.
func (c *nlConn) setElems(family dataplane.Family, set string) ([]setElem, error) {
	var out []setElem
	attrs := appendAttr(nil, attrSetElemTable, cstring(tableName))
	attrs = appendAttr(attrs, attrSetElemSet, cstring(set))
	err := c.request(msgGetSetElem, true, nfproto(family), attrs, func(b []byte) error {
		return eachAttr(b, func(typ uint16, v []byte) error {
			if typ != attrSetElemElements {
				return nil
			}
			return eachAttr(v, func(typ uint16, v []byte) error {
				if typ != attrListElem {
					return nil
				}
				var e setElem
				err := eachAttr(v, func(typ uint16, v []byte) error {
					switch typ {
					case attrSetElemKey:
						e.key = dataValue(v)
					case attrSetElemData:
						return decodeData(v, &e)
					}
					return nil
				})
				// Copied: the receive buffer is reused for the rest of the dump.
				e.key, e.data = bytes.Clone(e.key), bytes.Clone(e.data)
				out = append(out, e)
				return err
			})
		})
	})
	return out, err
}

// decodeData reads a nested NFTA_DATA_*: a value, or a verdict with its chain.
func decodeData(b []byte, e *setElem) error {
	return eachAttr(b, func(typ uint16, v []byte) error {
		switch typ {
		case attrDataValue:
			e.data = v
		case attrDataVerdict:
			e.verdict = true
			return eachAttr(v, func(typ uint16, v []byte) error {
				switch typ {
				case attrVerdictCode:
					if len(v) == 4 {
						e.code = int32(binary.BigEndian.Uint32(v))
					}
				case attrVerdictChain:
					e.chain = gostring(v)
				}
				return nil
			})
		}
		return nil
	})
}

// dataValue returns the value of a nested NFTA_DATA_VALUE.
func dataValue(b []byte) []byte {
	var out []byte
	_ = eachAttr(b, func(typ uint16, v []byte) error {
		if typ == attrDataValue {
			out = v
		}
		return nil
	})
	return out
}

// slot is what one 32-bit register holds as far as the rule's DNAT needs to know: bytes of an
// immediate value, or bytes of the data of a map lookup, from off on.
type slot struct {
	imm []byte
	set string
	off int
	ok  bool
}

// lookup is a map a rule reads that Chain must read too: a verdict map (its elements' gotos) or
// the DNAT map of addresses and ports.
type lookup struct {
	set              string
	verdicts         bool
	addrOff, portOff int
	addrLen          int
}

func (l lookup) apply(e setElem, out *Rules) {
	if l.verdicts {
		out.goTo(e)
		return
	}
	if len(e.data) < l.addrOff+l.addrLen || len(e.data) < l.portOff+2 {
		out.Odd = true
		return
	}
	ip, _ := netip.AddrFromSlice(e.data[l.addrOff : l.addrOff+l.addrLen])
	out.DNAT = append(out.DNAT, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(e.data[l.portOff:])))
}

// goTo notes the chain of a goto or jump verdict, if it is one of kube-proxy's per-service chains.
func (r *Rules) goTo(e setElem) {
	if e.verdict && (e.code == verdictGoto || e.code == verdictJump) && chainKind(e.chain) != kindOther {
		r.Goes = append(r.Goes, e.chain)
	}
}

// regSlot turns an nf_tables register number into the index of its first 32-bit register:
// NFT_REG_1…4 are 16 bytes, NFT_REG32_00…15 (8…23) are 4.
func regSlot(reg uint32) (int, bool) {
	switch {
	case reg >= 1 && reg <= 4:
		return int(reg-1) * 4, true
	case reg >= 8 && reg <= 23:
		return int(reg - 8), true
	}
	return 0, false
}

// decodeRule follows the registers through one rule's expressions as kube-proxy's statements
// compile (nft --debug=netlink): "dnat to ip:port" is two immediates and nat; "dnat ip addr .
// port to numgen … map {…}" is numgen, a lookup into an anonymous map and nat; gotos are an
// immediate to the verdict register or a lookup into a verdict map. Any other expression that
// writes a register makes it unknown, and a DNAT from unknown registers is Odd.
func decodeRule(exprs []byte, family dataplane.Family, out *Rules, lookups *[]lookup) error {
	var regs [16]slot
	clobber := func(reg uint32) {
		if i, ok := regSlot(reg); ok {
			for j := i; j < min(i+4, len(regs)); j++ {
				regs[j] = slot{}
			}
		}
	}
	return eachAttr(exprs, func(typ uint16, v []byte) error {
		if typ != attrListElem {
			return nil
		}
		var name string
		var data []byte
		if err := eachAttr(v, func(typ uint16, v []byte) error {
			switch typ {
			case attrExprName:
				name = gostring(v)
			case attrExprData:
				data = v
			}
			return nil
		}); err != nil {
			return err
		}
		a, err := u32Attrs(data)
		if err != nil {
			return err
		}
		switch name {
		case "immediate":
			var e setElem
			if err := eachAttr(data, func(typ uint16, v []byte) error {
				if typ == attrImmediateData {
					return decodeData(v, &e)
				}
				return nil
			}); err != nil {
				return err
			}
			dreg := a.u32[attrImmediateDreg]
			if e.verdict {
				if dreg == 0 {
					out.goTo(e)
				}
				return nil
			}
			if i, ok := regSlot(dreg); ok {
				for j := 0; j*4 < len(e.data) && i+j < len(regs); j++ {
					regs[i+j] = slot{imm: e.data[j*4:], ok: true}
				}
			}
		case "lookup":
			set := gostring(a.raw[attrLookupSet])
			dreg, hasDreg := a.u32[attrLookupDreg], a.has[attrLookupDreg]
			switch {
			case !hasDreg: // a set match: ip saddr @affinity-…
			case dreg == 0:
				*lookups = append(*lookups, lookup{set: set, verdicts: true})
			default:
				if i, ok := regSlot(dreg); ok {
					for j := i; j < len(regs); j++ {
						regs[j] = slot{set: set, off: (j - i) * 4, ok: true}
					}
				}
			}
		case "nat":
			if a.u32[attrNATType] != natDNAT {
				return nil
			}
			alen := addrLen(family)
			switch a.u32[attrNATFamily] {
			case nfprotoIPv4:
				alen = 4
			case nfprotoIPv6:
				alen = 16
			}
			ai, aok := regSlot(a.u32[attrNATRegAddrMin])
			pi, pok := regSlot(a.u32[attrNATRegProtoMin])
			if !aok || !pok || !a.has[attrNATRegAddrMin] || !a.has[attrNATRegProtoMin] || !regs[ai].ok || !regs[pi].ok {
				out.Odd = true
				return nil
			}
			addr, port := regs[ai], regs[pi]
			switch {
			case addr.set == "" && port.set == "" && len(addr.imm) >= alen && len(port.imm) >= 2:
				ip, _ := netip.AddrFromSlice(addr.imm[:alen])
				out.DNAT = append(out.DNAT, netip.AddrPortFrom(ip, binary.BigEndian.Uint16(port.imm)))
			case addr.set != "" && addr.set == port.set:
				*lookups = append(*lookups, lookup{set: addr.set, addrOff: addr.off, portOff: port.off, addrLen: alen})
			default:
				out.Odd = true
			}
		case "meta", "payload", "numgen", "ct", "fib", "rt", "socket", "exthdr", "osf", "xfrm":
			if a.has[1] { // their destination register
				clobber(a.u32[1])
			}
		case "bitwise", "byteorder", "hash":
			if a.has[2] {
				clobber(a.u32[2])
			}
		case "cmp", "range", "counter", "log", "limit", "quota", "dynset", "masq", "redir", "reject", "notrack", "objref":
			// They write no register.
		default:
			// Unknown: clobbering every register only makes a DNAT after it Odd (Routed).
			regs = [16]slot{}
		}
		return nil
	})
}

// exprAttrs holds an expression's top-level attributes, as big-endian u32 where they are 4 bytes.
type exprAttrs struct {
	u32 map[uint16]uint32
	has map[uint16]bool
	raw map[uint16][]byte
}

func u32Attrs(b []byte) (exprAttrs, error) {
	a := exprAttrs{u32: map[uint16]uint32{}, has: map[uint16]bool{}, raw: map[uint16][]byte{}}
	err := eachAttr(b, func(typ uint16, v []byte) error {
		a.raw[typ] = v
		if len(v) == 4 {
			a.u32[typ] = binary.BigEndian.Uint32(v)
			a.has[typ] = true
		}
		return nil
	})
	return a, err
}

// eachAttr calls fn with the type (without the nested and byte-order flags) and value of each
// netlink attribute in b.
func eachAttr(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) >= syscall.SizeofNlAttr {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask
		if l < syscall.SizeofNlAttr || l > len(b) {
			return fmt.Errorf("netlink: malformed attribute (length %d of %d)", l, len(b))
		}
		if err := fn(typ, b[syscall.SizeofNlAttr:l]); err != nil {
			return err
		}
		b = b[min(nlaAlign(l), len(b)):]
	}
	return nil
}

func nlaAlign(l int) int { return (l + syscall.NLA_ALIGNTO - 1) &^ (syscall.NLA_ALIGNTO - 1) }

func appendAttr(b []byte, typ uint16, v []byte) []byte {
	l := syscall.SizeofNlAttr + len(v)
	var h [syscall.SizeofNlAttr]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(l))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	b = append(b, h[:]...)
	b = append(b, v...)
	for range nlaAlign(l) - l {
		b = append(b, 0)
	}
	return b
}

func cstring(s string) []byte { return append([]byte(s), 0) }

func gostring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
