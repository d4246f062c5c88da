//go:build go1.24 && linux

package graceful_test

import (
	"net"
	"syscall"
	"testing"
	"unsafe"
)

// delivered waits until the kernel holds no byte written on conn unacknowledged: on loopback
// the server's socket then has them (or its reader does). A test that says "the caller has
// started a request" needs that: bytes still in flight are invisible to any server, and a busy
// machine can leave them there (loopback delivery may wait for a softirq), which made the
// idle-connection test fail about 1 in 150 runs.
func delivered(t *testing.T, conn net.Conn) {
	t.Helper()
	rc, err := conn.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bytes written reached the server's socket", func() bool {
		queued := int32(-1)
		if err := rc.Control(func(fd uintptr) {
			_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued)))
			if errno != 0 {
				queued = -1
			}
		}); err != nil {
			t.Fatal(err)
		}
		return queued == 0
	})
}
