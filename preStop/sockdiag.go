package prestop

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// TCPConn is one TCP socket as the kernel's sock_diag interface reports it.
type TCPConn struct {
	Socket
	// Family is the socket's address family (afInet, afInet6): an IPv4 caller accepted by a
	// dual-stack listener is an IPv6 socket.
	Family uint8
	// Cookie is the kernel's identity of the socket, never reused: it tells a reused 4-tuple
	// apart.
	Cookie uint64
	// HasInfo says whether the kernel sent tcp_info (full sockets; not request sockets).
	HasInfo bool
	// BytesReceived is tcpi_bytes_received: payload bytes the peer sent, so requests, not ACKs
	// or keepalive probes.
	BytesReceived uint64
	// SinceData is tcpi_last_data_recv: how long ago the last payload arrived (the handshake,
	// when none has).
	SinceData time.Duration
}

// TCP states as sock_diag reports them (include/net/tcp_states.h), beyond those procnet.go
// names.
const (
	tcpFinWait1   = 4
	tcpFinWait2   = 5
	tcpCloseWait  = 8
	tcpLastAck    = 9
	tcpClosing    = 11
	tcpNewSynRecv = 12
)

// diagStates are the states dumped: listeners (to find the serving ports) and every state in
// which a connection can still bring bytes in. TIME_WAIT is left out: it has no counters, and
// it is mostly health checks that open and close between two samples.
const diagStates = 1<<tcpListen | 1<<tcpEstablished | 1<<tcpSynRecv | 1<<tcpFinWait1 | 1<<tcpFinWait2 |
	1<<tcpCloseWait | 1<<tcpLastAck | 1<<tcpClosing | 1<<tcpNewSynRecv

// Netlink and inet_diag wire constants (linux/netlink.h, linux/inet_diag.h, linux/sock_diag.h);
// they are spelled out here so the parser builds and is tested on every OS.
const (
	nlmsgHdrLen       = 16
	nlmsgError        = 2
	nlmsgDone         = 3
	nlmFRequest       = 0x1
	nlmFDump          = 0x300
	sockDiagByFamily  = 20
	inetDiagReqV2Len  = 56
	inetDiagMsgLen    = 72
	inetDiagInfo      = 2 // INET_DIAG_INFO: the tcp_info attribute
	ipprotoTCP        = 6
	afInet            = 2
	afInet6           = 10
	tcpInfoDataRecv   = 52  // offsetof(struct tcp_info, tcpi_last_data_recv)
	tcpInfoBytesRecv  = 128 // offsetof(struct tcp_info, tcpi_bytes_received), Linux 4.1+
	tcpInfoMinWithRcv = tcpInfoBytesRecv + 8
)

// diagRequest is the netlink message asking for every TCP socket of family in diagStates, with
// tcp_info.
func diagRequest(family uint8, seq uint32) []byte {
	b := make([]byte, nlmsgHdrLen+inetDiagReqV2Len)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], sockDiagByFamily)
	ne.PutUint16(b[6:], nlmFRequest|nlmFDump)
	ne.PutUint32(b[8:], seq)
	r := b[nlmsgHdrLen:]
	r[0], r[1], r[2] = family, ipprotoTCP, 1<<(inetDiagInfo-1)
	ne.PutUint32(r[4:], diagStates)
	return b
}

// errDumpTruncated is a tcp_info shorter than tcpi_bytes_received: a kernel older than 4.1.
var errDumpTruncated = errors.New("tcp_info without tcpi_bytes_received (kernel older than 4.1)")

// parseDiagMessages reads one netlink datagram of a sock_diag dump for request seq. done is
// true at the dump's end.
func parseDiagMessages(b []byte, seq uint32) (conns []TCPConn, done bool, err error) {
	ne := binary.NativeEndian
	for len(b) >= nlmsgHdrLen {
		n, typ, msgSeq := int(ne.Uint32(b[0:])), ne.Uint16(b[4:]), ne.Uint32(b[8:])
		if n < nlmsgHdrLen || n > len(b) {
			return nil, false, fmt.Errorf("netlink message of %d bytes in %d", n, len(b))
		}
		msg := b[nlmsgHdrLen:n]
		b = b[min(align4(n), len(b)):]
		if msgSeq != seq {
			continue // an answer to an earlier request
		}
		switch typ {
		case nlmsgDone:
			return conns, true, nil
		case nlmsgError:
			if len(msg) < 4 {
				return nil, false, errors.New("short netlink error message")
			}
			if e := int32(ne.Uint32(msg)); e != 0 {
				return nil, false, syscall.Errno(-e)
			}
			continue
		case sockDiagByFamily:
		default:
			continue
		}
		c, err := parseDiagMsg(msg)
		if err != nil {
			return nil, false, err
		}
		conns = append(conns, c)
	}
	return conns, false, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// parseDiagMsg reads one struct inet_diag_msg and its attributes.
func parseDiagMsg(m []byte) (TCPConn, error) {
	var c TCPConn
	if len(m) < inetDiagMsgLen {
		return c, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(m), inetDiagMsgLen)
	}
	ne := binary.NativeEndian
	family, state := m[0], m[1]
	// inet_diag_sockid: ports and addresses in network byte order.
	sport, dport := binary.BigEndian.Uint16(m[4:]), binary.BigEndian.Uint16(m[6:])
	var src, dst netip.Addr
	switch family {
	case afInet:
		src, dst = netip.AddrFrom4([4]byte(m[8:12])), netip.AddrFrom4([4]byte(m[24:28]))
	case afInet6:
		src, dst = netip.AddrFrom16([16]byte(m[8:24])).Unmap(), netip.AddrFrom16([16]byte(m[24:40])).Unmap()
	default:
		return c, fmt.Errorf("inet_diag_msg of family %d", family)
	}
	c.Family = family
	c.Local, c.Remote, c.State = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), state
	c.Cookie = uint64(ne.Uint32(m[44:])) | uint64(ne.Uint32(m[48:]))<<32
	c.Inode = uint64(ne.Uint32(m[68:]))
	for a := m[inetDiagMsgLen:]; len(a) >= 4; {
		n, typ := int(ne.Uint16(a[0:])), ne.Uint16(a[2:])
		if n < 4 || n > len(a) {
			return c, fmt.Errorf("netlink attribute of %d bytes in %d", n, len(a))
		}
		if typ == inetDiagInfo {
			info := a[4:n]
			if len(info) < tcpInfoMinWithRcv {
				return c, errDumpTruncated
			}
			c.HasInfo = true
			c.SinceData = time.Duration(ne.Uint32(info[tcpInfoDataRecv:])) * time.Millisecond
			c.BytesReceived = ne.Uint64(info[tcpInfoBytesRecv:])
		}
		a = a[min(align4(n), len(a)):]
	}
	return c, nil
}

// SockDiagMeter measures callers' traffic from per-socket counters: the payload bytes every
// inbound connection on the serving ports received (tcp_info over sock_diag, which needs no
// privilege in the pod's network namespace). Unlike counting new connections, it sees requests
// on connections callers keep alive.
type SockDiagMeter struct {
	// Ports are the serving ports; empty means discover them at the first sample.
	Ports []int
	// Skip are ports never taken for serving ports (the app's admin port).
	Skip []int
	// Dump lists the namespace's TCP sockets of the given families (none: all); DumpTCP unless
	// a test says otherwise.
	Dump func(families ...uint8) ([]TCPConn, error)
	// families are those of the serving ports' listeners, from the first sample on: every
	// family dumped costs a walk of the host's socket hash table.
	families []uint8

	prev    map[uint64]uint64 // cookie → bytes received, at the latest sample
	total   uint64
	open    int
	sampled bool
	// last is the latest moment an inbound socket is known to have received data.
	last time.Time
}

// Activity implements Meter: new inbound connections, plus the bytes every inbound connection
// received since the previous sample (a new one counts with all its bytes).
func (m *SockDiagMeter) Activity(_ context.Context) (uint64, error) {
	dump := m.Dump
	if dump == nil {
		dump = DumpTCP
	}
	conns, err := dump(m.families...)
	if err != nil {
		return 0, fmt.Errorf("sock_diag: %w", err)
	}
	// After the dump: the kernel measured each socket's idle time before now, so the last data
	// is placed late rather than early, should this goroutine have been held up.
	now := time.Now()
	if len(m.Ports) == 0 {
		socks := make([]Socket, len(conns))
		for i, c := range conns {
			socks[i] = c.Socket
		}
		m.Ports = ServingPorts(socks, m.Skip...)
	}
	if !m.sampled {
		m.families = listenerFamilies(conns, m.Ports)
	}
	cur := make(map[uint64]uint64, len(m.prev))
	m.open = 0
	for _, c := range conns {
		if c.State == tcpListen || !slices.Contains(m.Ports, int(c.Local.Port())) {
			continue
		}
		if openState(c.State) {
			m.open++
		}
		cur[c.Cookie] = c.BytesReceived
		if m.sampled {
			if old, seen := m.prev[c.Cookie]; !seen {
				m.total += 1 + c.BytesReceived
			} else if c.BytesReceived > old {
				m.total += c.BytesReceived - old
			}
		}
		if c.HasInfo {
			if at := now.Add(-c.SinceData); at.After(m.last) {
				m.last = at
			}
		}
	}
	m.prev, m.sampled = cur, true
	return m.total, nil
}

// LastMoved is the latest moment an inbound connection is known to have received data (its
// last payload, or its handshake); zero before any was seen.
func (m *SockDiagMeter) LastMoved() time.Time { return m.last }

// OpenConns is how many inbound connections on the serving ports were open at the latest
// sample: established, or being accepted. Connections the caller or the app already began to
// close are not counted.
func (m *SockDiagMeter) OpenConns() (int, bool) { return m.open, m.sampled }

// listenerFamilies are the address families of the listeners on ports: the sockets they accept
// have the same family (a Go server on ":8080" listens, and accepts IPv4 callers, as IPv6). None
// (dump every family) when no listener on ports was seen.
func listenerFamilies(conns []TCPConn, ports []int) []uint8 {
	var out []uint8
	for _, c := range conns {
		if c.State == tcpListen && slices.Contains(ports, int(c.Local.Port())) && !slices.Contains(out, c.Family) {
			out = append(out, c.Family)
		}
	}
	slices.Sort(out)
	return out
}

func openState(s uint8) bool {
	return s == tcpEstablished || s == tcpSynRecv || s == tcpNewSynRecv
}
