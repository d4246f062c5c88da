//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package graceful

import "net"

// unreadBytes cannot peek at a socket here: only the bytes net/http already read tell that a
// request is on its way.
func unreadBytes(net.Conn) bool { return false }
