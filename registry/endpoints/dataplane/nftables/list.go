package nftables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/command"
)

// Lister is the dataplane.Dumper that runs `nft --json list table ip|ip6 kube-proxy`. It only
// reads. One listing is one consistent snapshot: nft retries its netlink dump when the ruleset
// generation changes while it reads.
type Lister struct {
	// Path of the nft command; "nft" (found in PATH) when empty.
	Path string
}

var _ dataplane.Dumper = Lister{}

// Dump implements dataplane.Dumper.
func (l Lister) Dump(ctx context.Context, family dataplane.Family) (io.ReadCloser, error) {
	path := l.Path
	if path == "" {
		path = "nft"
	}
	nftFamily := "ip"
	if family == dataplane.IPv6 {
		nftFamily = "ip6"
	}
	out, err := command.Start(ctx, path, "--json", "list", "table", nftFamily, "kube-proxy")
	if err != nil {
		return nil, err
	}
	return missingTable{out}, nil
}

// missingTable turns nft's answer for a table that does not exist into ErrRulesNotFound.
type missingTable struct{ io.ReadCloser }

func (m missingTable) Close() error {
	err := m.ReadCloser.Close()
	var cmdErr *command.Error
	if errors.As(err, &cmdErr) && strings.Contains(cmdErr.Stderr, "No such file or directory") {
		return fmt.Errorf("%w: no kube-proxy table (%w)", dataplane.ErrRulesNotFound, err)
	}
	return err
}
