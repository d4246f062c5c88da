package prestop

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// TCP states as /proc/net/tcp prints them (include/net/tcp_states.h).
const (
	tcpEstablished = 0x01
	tcpSynRecv     = 0x03
	tcpListen      = 0x0A
)

// Socket is one line of /proc/net/tcp or /proc/net/tcp6.
type Socket struct {
	Local, Remote netip.AddrPort
	State         uint8
	Inode         uint64
}

// ParseProcNetTCP reads the kernel's /proc/net/tcp{,6} format.
func ParseProcNetTCP(r io.Reader) ([]Socket, error) {
	var out []Socket
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Fields(sc.Text())
		if line == 1 || len(f) == 0 {
			continue // header
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("line %d: %d fields, want at least 10", line, len(f))
		}
		local, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, fmt.Errorf("line %d: local address: %w", line, err)
		}
		remote, err := parseHexAddrPort(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: remote address: %w", line, err)
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("line %d: state %q: %w", line, f[3], err)
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: inode %q: %w", line, f[9], err)
		}
		out = append(out, Socket{Local: local, Remote: remote, State: uint8(st), Inode: inode})
	}
	return out, sc.Err()
}

// parseHexAddrPort decodes "0100007F:1F90": the address as the kernel's 32-bit words in host
// byte order (little-endian here), the port big-endian.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("%q: want ADDR:PORT", s)
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("%q: want 8 or 32 hex digits", a)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}

// ServingPorts lists the ports of listening sockets that callers can reach: not bound to
// loopback, and not in skip (the app's admin port).
func ServingPorts(socks []Socket, skip ...int) []int {
	var ports []int
	seen := map[uint16]bool{}
	for _, s := range socks {
		p := s.Local.Port()
		if s.State != tcpListen || s.Local.Addr().IsLoopback() || seen[p] || slices.Contains(skip, int(p)) {
			continue
		}
		seen[p] = true
		ports = append(ports, int(p))
	}
	return ports
}

// inboundKey identifies one accepted connection; the inode tells a reused 4-tuple apart.
type inboundKey struct {
	local, remote netip.AddrPort
	inode         uint64
}

// Inbound returns the accepted (or being accepted) connections on the given local ports.
func Inbound(socks []Socket, ports []int) map[inboundKey]struct{} {
	out := map[inboundKey]struct{}{}
	for _, s := range socks {
		if (s.State == tcpEstablished || s.State == tcpSynRecv) && slices.Contains(ports, int(s.Local.Port())) {
			out[inboundKey{s.Local, s.Remote, s.Inode}] = struct{}{}
		}
	}
	return out
}
