package nftables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// Fixtures: README.md in testdata. Adding a captured ruleset is one file and one row here.
func TestCheck(t *testing.T) {
	cases := probetest.KubeProxyCases(".json")
	probetest.Run(t, func(d dataplane.Dumper) dataplane.Probe { return New(d) }, cases)
}

func TestParse(t *testing.T) {
	d, err := dataplane.NewDraining([]netip.Addr{netip.MustParseAddr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	const head = `{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"chain": {"name": "services"}},`
	tests := []struct {
		name    string
		json    string
		want    string
		wantErr string
	}{
		{"chain that no map reaches", head + `{"rule": {"chain": "service-AAAAAAAA-ns/a/tcp/p", "expr": [{"dnat": {"addr": "10.0.0.1", "port": 80}}]}}]}`, "", ""},
		{"map read after the rules, jump instead of goto", head + `{"rule": {"chain": "service-AAAAAAAA-ns/a/tcp/", "expr": [{"dnat": {"addr": "10.0.0.1", "port": 80}}]}},
			{"map": {"name": "service-ips", "elem": [[{"concat": ["10.96.0.1", "tcp", 80]}, {"jump": {"target": "service-AAAAAAAA-ns/a/tcp/"}}]]}}]}`, "ns/a service-AAAAAAAA-ns/a/tcp/ [10.0.0.1:80] others=false", ""},
		{"node port through external chain, map element with comment", head + `{"map": {"name": "service-nodeports", "elem": [[{"elem": {"val": {"concat": ["tcp", 30080]}, "comment": "x"}}, {"goto": {"target": "external-AAAAAAAA-ns/a/tcp/p"}}]]}},
			{"rule": {"chain": "external-AAAAAAAA-ns/a/tcp/p", "expr": [{"goto": {"target": "local-AAAAAAAA-ns/a/tcp/p"}}]}},
			{"rule": {"chain": "local-AAAAAAAA-ns/a/tcp/p", "expr": [{"dnat": {"family": "ip", "addr": {"map": {"key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}}, "data": {"set": [[0, {"concat": ["10.0.0.1", 80]}], [1, {"concat": ["10.0.0.2", 80]}]]}}}}}]}}]}`,
			"ns/a:p local-AAAAAAAA-ns/a/tcp/p [10.0.0.1:80] others=true", ""},
		{"dnat to something kube-proxy does not write counts as another endpoint", head + `{"map": {"name": "service-ips", "elem": [[0, {"goto": {"target": "service-AAAAAAAA-ns/a/tcp/p"}}]]}},
			{"rule": {"chain": "service-AAAAAAAA-ns/a/tcp/p", "expr": [{"dnat": {"addr": {"map": {"data": {"set": [[0, {"concat": ["10.0.0.1", 80]}], [1, {"concat": [{"range": ["10.0.0.2", "10.0.0.3"]}, 80]}]]}}}}}]}}]}`,
			"ns/a:p service-AAAAAAAA-ns/a/tcp/p [10.0.0.1:80] others=true", ""},
		{"no services chain", `{"nftables": [{"metainfo": {"json_schema_version": 1}}, {"table": {"family": "ip", "name": "kube-proxy"}}]}`, "", "kube-proxy rules not found"},
		{"unknown schema", `{"nftables": [{"metainfo": {"json_schema_version": 2}}, {"chain": {"name": "services"}}]}`, "", "nft JSON schema version 2, want 1"},
		{"not JSON", `Error: syntax error`, "", "read nft JSON"},
		{"truncated", head, "", "read nft JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chains, err := parse(strings.NewReader(tt.json), d)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range chains {
				got = append(got, fmt.Sprintf("%s %s %v others=%v", c.Service, c.Name, c.Selected, c.Others))
			}
			if s := strings.Join(got, "; "); s != tt.want {
				t.Errorf("got %q\nwant %q", s, tt.want)
			}
		})
	}
}

func TestLister(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat in PATH")
	}
	dir := t.TempDir()
	abs, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	// A fake nft: prints the fixture of the family it is asked for, and fails like nft for ip6.
	script := `#!/bin/sh
if [ "$1 $2 $3 $5 $6" = "--json list map kube-proxy service-ips" ]; then
  [ "$4" = ip ] && { echo '{"nftables": []}'; exit 0; }
  printf 'Error: No such file or directory\nlist map ip6 kube-proxy service-ips\n' >&2; exit 1
fi
[ "$1 $2 $3" = "--json list table" ] && [ "$5" = kube-proxy ] || exit 2
case $4 in
ip) exec "` + cat + `" "` + abs + `/ready.json" ;;
ip6) printf 'Error: No such file or directory\nlist table ip6 kube-proxy\n' >&2; exit 1 ;;
esac
exit 2
`
	nft := filepath.Join(dir, "nft")
	if err := os.WriteFile(nft, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	probe := New(Lister{Path: nft})
	got, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"10.244.1.2"}))
	if err != nil {
		t.Fatal(err)
	}
	if v := got[netip.MustParseAddr("10.244.1.2")]; v.State != dataplane.Routed {
		t.Errorf("got %v, want Routed", v)
	}
	probetest.CheckError(t, probe, probetest.Addrs(t, []string{"fd00::2"}),
		"nftables IPv6: kube-proxy rules not found: no kube-proxy table", dataplane.ErrRulesNotFound)
	if err := probe.Ping(context.Background(), dataplane.IPv4); err != nil {
		t.Errorf("Ping IPv4: %v", err)
	}
	if err := probe.Ping(context.Background(), dataplane.IPv6); !errors.Is(err, dataplane.ErrRulesNotFound) {
		t.Errorf("Ping IPv6: %v, want ErrRulesNotFound", err)
	}
}
