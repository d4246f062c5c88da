//go:build !linux

package nftables

import (
	"context"
	"errors"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Netlink is the Reader that asks the kernel over netlink; it needs Linux.
type Netlink struct{}

var _ Reader = Netlink{}

var errNotLinux = errors.New("netlink: reading nftables needs Linux")

// Chain implements Reader.
func (Netlink) Chain(context.Context, dataplane.Family, string) (Rules, error) {
	return Rules{}, errNotLinux
}

// ServiceMaps implements Reader.
func (Netlink) ServiceMaps(context.Context, dataplane.Family) ([]MapElem, error) {
	return nil, errNotLinux
}
