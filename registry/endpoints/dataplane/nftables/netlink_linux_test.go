//go:build linux

package nftables

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/netnstest"
)

// The integration tests load the fixtures into the kernel, in a network namespace of their own,
// and read them back through netlink and nft. They need root and nft; they skip without, unless
// LASTCALL_REQUIRE_INTEGRATION=1.

// Every chain and service map of every fixture reads the same through netlink, through
// `nft --json list chain|map` and from the fixture's listing.
func TestIntegrationReadersAgree(t *testing.T) {
	if !netnstest.InNetns(t, nil, "nft") {
		return
	}
	ctx := context.Background()
	for file, listing := range fixtureListings(t) {
		netnstest.LoadNFT(t, listing, true)
		family := dataplane.IPv4
		if bytes.Contains(listing, []byte(`"family": "ip6"`)) {
			family = dataplane.IPv6
		}
		p := newParser(bytes.NewReader(listing), dataplane.Draining{})
		if err := p.walk(p.object); err != nil {
			t.Fatal(err)
		}
		names := []string{"no-such-chain"}
		for _, n := range p.nodes {
			names = append(names, n.name)
		}
		for _, name := range names {
			want, err := parseChain(bytes.NewReader(listing), name)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []Reader{Netlink{}, Lister{}} {
				got, err := r.Chain(ctx, family, name)
				if err != nil {
					t.Fatalf("%s %T: %v", file, r, err)
				}
				if g, w := rulesString(got), rulesString(want); g != w {
					t.Errorf("%s %s through %T:\n got %s\nwant %s", file, name, r, g, w)
				}
			}
		}
		want, err := parseMaps(bytes.NewReader(listing))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []Reader{Netlink{}, Lister{}} {
			got, err := r.ServiceMaps(ctx, family)
			if err != nil {
				t.Fatalf("%s %T: %v", file, r, err)
			}
			if g, w := mapsString(got), mapsString(want); g != w || len(want) == 0 {
				t.Errorf("%s maps through %T:\n got %s\nwant %s", file, r, g, w)
			}
		}
	}
	netnstest.Must(t, nil, "nft", "delete", "table", "ip", tableName)
	for _, r := range []Reader{Netlink{}, Lister{}} {
		if _, err := r.ServiceMaps(ctx, dataplane.IPv4); !errors.Is(err, dataplane.ErrRulesNotFound) {
			t.Errorf("%T without a table: %v, want ErrRulesNotFound", r, err)
		}
		if got, err := r.Chain(ctx, dataplane.IPv4, "service-AZWIHYO4-fixture/web/tcp/http"); err != nil || got.Count != 0 {
			t.Errorf("%T chain without a table: %v, %v", r, got, err)
		}
	}
}

// Targeted reads through netlink give the fixtures' verdicts, read from the kernel.
func TestIntegrationTargeted(t *testing.T) {
	if !netnstest.InNetns(t, nil, "nft") {
		return
	}
	ports := slicePorts(t)
	cases := append(probetest.KubeProxyCases(".json"), capturedCases()...)
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			for _, name := range tt.Dump {
				listing, err := os.ReadFile(filepath.Join("testdata", name))
				if err != nil {
					t.Fatal(err)
				}
				netnstest.LoadNFT(t, listing, true)
			}
			checkTargeted(t, NewTargeted(Lister{}, Netlink{}, 0), tt, ports)
		})
	}
}

func rulesString(r Rules) string {
	dnat := slices.Clone(r.DNAT)
	slices.SortFunc(dnat, netip.AddrPort.Compare)
	goes := slices.Clone(r.Goes)
	slices.Sort(goes)
	return fmt.Sprintf("rules=%d dnat=%v goes=%v odd=%v", r.Count, dnat, goes, r.Odd)
}

func mapsString(elems []MapElem) string {
	elems = slices.Clone(elems)
	slices.SortFunc(elems, func(a, b MapElem) int {
		return cmp.Or(cmp.Compare(a.Map, b.Map), cmp.Compare(a.Chain, b.Chain), cmp.Compare(a.Protocol, b.Protocol))
	})
	var out []string
	for _, e := range elems {
		out = append(out, e.Map+":"+e.Protocol+":"+e.Chain)
	}
	return strings.Join(out, " ")
}
