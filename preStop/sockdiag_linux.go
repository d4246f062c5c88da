//go:build linux

package prestop

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// DumpTCP lists the TCP sockets of this network namespace of the given address families (none:
// IPv4 and IPv6) in diagStates, with their tcp_info. It needs no capability: sock_diag answers
// any process about its own namespace. Each family costs the kernel a walk of the host's whole
// established-socket hash table, whatever the namespace holds (see SockDiagMeter).
func DumpTCP(families ...uint8) ([]TCPConn, error) {
	if len(families) == 0 {
		families = []uint8{afInet, afInet6}
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	// The kernel answers a dump at once; the timeout only keeps a broken one from holding the
	// sampler.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return nil, fmt.Errorf("netlink receive timeout: %w", err)
	}
	var all []TCPConn
	buf := make([]byte, 64<<10) // above the kernel's largest dump datagram (32 KiB)
	for i, family := range families {
		seq := uint32(i + 1)
		if err := unix.Sendto(fd, diagRequest(family, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("send sock_diag request: %w", err)
		}
		for done := false; !done; {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("receive sock_diag answer: %w", err)
			}
			var conns []TCPConn
			conns, done, err = parseDiagMessages(buf[:n], seq)
			if err != nil {
				return nil, fmt.Errorf("sock_diag answer: %w", err)
			}
			all = append(all, conns...)
		}
	}
	return all, nil
}
