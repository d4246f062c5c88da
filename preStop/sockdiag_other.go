//go:build !linux

package prestop

import "errors"

// DumpTCP is Linux only: elsewhere SockDiagMeter fails and the caller falls back.
func DumpTCP(...uint8) ([]TCPConn, error) {
	return nil, errors.New("sock_diag is Linux only")
}
