package nftables

import (
	"bytes"
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

var (
	_ dataplane.Dumper = Lister{}
	_ Reader           = Lister{}
)

// Dump implements dataplane.Dumper.
func (l Lister) Dump(ctx context.Context, family dataplane.Family) (io.ReadCloser, error) {
	out, err := command.Start(ctx, l.path(), "--json", "list", "table", nftFamily(family), tableName)
	if err != nil {
		return nil, err
	}
	return missingTable{out}, nil
}

// Ping implements dataplane.Pinger: it lists the service-ips map, which nft 1.0.6 does in about
// a tenth of a second at 50,000 endpoints where listing one chain fetches the whole table.
func (l Lister) Ping(ctx context.Context, family dataplane.Family) error {
	_, err := command.Output(ctx, l.path(), "--json", "list", "map", nftFamily(family), tableName, serviceIPsMap)
	return notFound(err)
}

// Chain implements Reader with `nft --json list chain`. nft 1.0.6 fetches every set of the
// table with its elements to list one chain (its cache.c asks for the full cache), so at 50,000
// endpoints this costs about as much as listing the table; Netlink reads only the chain.
func (l Lister) Chain(ctx context.Context, family dataplane.Family, name string) (Rules, error) {
	out, err := command.Output(ctx, l.path(), "--json", "list", "chain", nftFamily(family), tableName, name)
	if err != nil {
		if errors.Is(notFound(err), dataplane.ErrRulesNotFound) {
			return Rules{}, nil // no such chain (or table: ServiceMaps tells)
		}
		return Rules{}, err
	}
	return parseChain(bytes.NewReader(out), name)
}

// ServiceMaps implements Reader with `nft --json list map`, once per map.
func (l Lister) ServiceMaps(ctx context.Context, family dataplane.Family) ([]MapElem, error) {
	var elems []MapElem
	for _, m := range []string{serviceIPsMap, serviceNodePortsMap} {
		out, err := command.Output(ctx, l.path(), "--json", "list", "map", nftFamily(family), tableName, m)
		if err != nil {
			return nil, notFound(err)
		}
		e, err := parseMaps(bytes.NewReader(out))
		if err != nil {
			return nil, fmt.Errorf("nft list map %s: %w", m, err)
		}
		elems = append(elems, e...)
	}
	return elems, nil
}

const tableName = "kube-proxy"

func (l Lister) path() string {
	if l.Path == "" {
		return "nft"
	}
	return l.Path
}

func nftFamily(family dataplane.Family) string {
	if family == dataplane.IPv6 {
		return "ip6"
	}
	return "ip"
}

// missingTable turns nft's answer for a table that does not exist into ErrRulesNotFound.
type missingTable struct{ io.ReadCloser }

func (m missingTable) Close() error {
	return notFound(m.ReadCloser.Close())
}

// notFound turns nft's error for a table or map that does not exist into ErrRulesNotFound.
func notFound(err error) error {
	var cmdErr *command.Error
	if errors.As(err, &cmdErr) && strings.Contains(cmdErr.Stderr, "No such file or directory") {
		return fmt.Errorf("%w: no kube-proxy table (%w)", dataplane.ErrRulesNotFound, err)
	}
	return err
}
