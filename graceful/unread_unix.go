//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package graceful

import (
	"net"
	"syscall"
)

// unreadBytes reports whether bytes wait in c's socket, unread: it peeks without blocking.
func unreadBytes(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n := 0
	// Control, not Read: Read would wait for net/http's own Read on the connection to return.
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		// Go's sockets are non-blocking: no byte is EAGAIN, not a wait.
		n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
	})
	return n > 0
}
