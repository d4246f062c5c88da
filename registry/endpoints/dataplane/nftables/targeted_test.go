package nftables

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/namecheck"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// fixtureReader serves nft JSON listings per family as whole tables (Dumper) and in parts
// (Reader), as nft prints them, recording what was read.
type fixtureReader struct {
	tables map[dataplane.Family][]byte
	// hide lists chains that read as missing.
	hide  map[string]bool
	reads []string
	dumps int
}

func readFixtures(t testing.TB, files probetest.Files) *fixtureReader {
	t.Helper()
	f := &fixtureReader{tables: map[dataplane.Family][]byte{}, hide: map[string]bool{}}
	for fam, name := range files {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		f.tables[fam] = b
	}
	return f
}

func (f *fixtureReader) Dump(_ context.Context, family dataplane.Family) (io.ReadCloser, error) {
	f.dumps++
	table, ok := f.tables[family]
	if !ok {
		return nil, fmt.Errorf("no fixture for %s", family)
	}
	return io.NopCloser(bytes.NewReader(table)), nil
}

func (f *fixtureReader) Chain(_ context.Context, family dataplane.Family, name string) (Rules, error) {
	f.reads = append(f.reads, name)
	if f.hide[name] {
		return Rules{}, nil
	}
	return parseChain(bytes.NewReader(f.tables[family]), name)
}

func (f *fixtureReader) ServiceMaps(_ context.Context, family dataplane.Family) ([]MapElem, error) {
	f.reads = append(f.reads, "maps")
	table := f.tables[family]
	if !bytes.Contains(table, []byte(`"name": "service-ips"`)) {
		return nil, fmt.Errorf("%w: no service-ips map", dataplane.ErrRulesNotFound)
	}
	return parseMaps(bytes.NewReader(table))
}

// slicePorts is what the EndpointSlices of the fixtures' clusters say: the Service ports every
// pod IP is listed under, taken from the service, local and endpoint chains of every fixture,
// plus the IPv6 pod that ipv6.json has already dropped.
func slicePorts(t testing.TB) map[netip.Addr][]dataplane.ServicePort {
	t.Helper()
	out := map[netip.Addr][]dataplane.ServicePort{
		netip.MustParseAddr("fd00:10:244:1::2"): {{Name: "demo/web:http", Protocol: "TCP", Port: 8080}},
	}
	for file, b := range fixtureListings(t) {
		p := newParser(bytes.NewReader(b), dataplane.Draining{})
		p.all = true
		if err := p.walk(p.object); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, n := range p.nodes {
			key, ok := splitName(n.name)
			if !ok || n.kind == kindExternal {
				continue
			}
			key, _, _ = strings.Cut(key, "__")
			parts := strings.Split(key, "/")
			name := parts[0] + "/" + parts[1]
			if parts[3] != "" {
				name += ":" + parts[3]
			}
			for _, ep := range n.selected {
				sp := dataplane.ServicePort{Name: name, Protocol: strings.ToUpper(parts[2]), Port: ep.Port()}
				if !slices.Contains(out[ep.Addr()], sp) {
					out[ep.Addr()] = append(out[ep.Addr()], sp)
				}
			}
		}
	}
	return out
}

// fixtureListings returns every fixture by its path.
func fixtureListings(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		out[file] = b
	}
	return out
}

// Targeted reads give the verdicts of full reads on every shared case and on the rulesets
// captured from kind, and read chains only when every IP has ports.
func TestTargetedMatchesFullReads(t *testing.T) {
	ports := slicePorts(t)
	cases := append(probetest.KubeProxyCases(".json"), capturedCases()...)
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			r := readFixtures(t, tt.Dump)
			if checkTargeted(t, NewTargeted(r, r, 0), tt, ports) && r.dumps > 0 {
				t.Errorf("targeted, yet %d dumps besides reads %v", r.dumps, r.reads)
			}
		})
	}
}

// checkTargeted checks tt's draining IPs with their ports: p's verdicts are tt's, read targeted
// when every IP has ports (targeted then set).
func checkTargeted(t *testing.T, p *Targeted, tt probetest.Case, ports map[netip.Addr][]dataplane.ServicePort) (targeted bool) {
	t.Helper()
	targets := probetest.Targets(t, tt.Draining, ports)
	res, err := p.CheckTargets(context.Background(), targets)
	if err != nil {
		t.Fatal(err)
	}
	probetest.WantVerdicts(t, res.Verdicts, tt.Want)
	targeted = len(targets) > 0 && dataplane.HavePorts(targets)
	if res.Targeted != targeted || res.FullReason != "" {
		t.Errorf("Targeted %v (%q), want %v", res.Targeted, res.FullReason, targeted)
	}
	return targeted
}

func TestTargetedReads(t *testing.T) {
	port := func(svc string) []dataplane.ServicePort {
		return []dataplane.ServicePort{{Name: "demo/" + svc + ":http", Protocol: "TCP", Port: 8080}}
	}
	chains := func(svc string) []string {
		base := nameBase("demo/" + svc + "/tcp/http")
		return []string{"service-" + base, "local-" + base}
	}
	solo := []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.5"), Ports: port("solo")}}
	r := readFixtures(t, probetest.Files{dataplane.IPv4: "terminating.json"})
	p := NewTargeted(r, r, 0)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.names.Now = func() time.Time { return now }
	check := func(targets []dataplane.Target, want []string) dataplane.Result {
		t.Helper()
		r.reads = nil
		res, err := p.CheckTargets(context.Background(), targets)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.reads, want) || res.Reads != len(want)+strings.Count(strings.Join(want, " "), "maps") || !res.Targeted {
			t.Errorf("read %v (%d, targeted %v), want %v", r.reads, res.Reads, res.Targeted, want)
		}
		return res
	}

	// First check: the two chains of the port, then the maps to confirm the names.
	check(solo, append(chains("solo"), "maps"))
	// Then only the chains, until the names are due for another look.
	check(solo, chains("solo"))
	now = now.Add(namecheck.Recheck)
	res := check(solo, append(chains("solo"), "maps"))
	if v := res.Verdicts[solo[0].IP]; v.State != dataplane.LastBackend {
		t.Errorf("got %v", v)
	}

	// Session affinity: the service chain goes to an endpoint chain that is not draining; one
	// read of it confirms the endpoint chain names.
	sticky := []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.8"), Ports: port("sticky")}}
	other := "endpoint-" + nameBase("demo/sticky/tcp/http__10.244.2.8/8080")
	res = check(sticky, append(chains("sticky"), other))
	if v := res.Verdicts[sticky[0].IP]; v.State != dataplane.NotRouted {
		t.Errorf("got %v", v)
	}
	check(sticky, chains("sticky"))

	// A port whose chains are missing is looked up in the maps every time.
	gone := []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.5"), Ports: port("gone")}}
	check(gone, append(chains("gone"), "maps"))
	check(gone, append(chains("gone"), "maps"))
}

func TestTargetedReadsWholeTable(t *testing.T) {
	web := func(ip string) dataplane.Target {
		return dataplane.Target{IP: netip.MustParseAddr(ip), Ports: []dataplane.ServicePort{{Name: "demo/web:http", Protocol: "TCP", Port: 8080}}}
	}
	sticky := dataplane.Target{IP: netip.MustParseAddr("10.244.1.8"), Ports: []dataplane.ServicePort{{Name: "demo/sticky:http", Protocol: "TCP", Port: 8080}}}
	rename := func(old, new string) func(*fixtureReader) {
		return func(r *fixtureReader) {
			r.tables[dataplane.IPv4] = bytes.ReplaceAll(r.tables[dataplane.IPv4], []byte(old), []byte(new))
		}
	}
	webChain := "service-" + nameBase("demo/web/tcp/http")
	otherEndpoint := "endpoint-" + nameBase("demo/sticky/tcp/http__10.244.2.8/8080")
	wrongEndpoint := "endpoint-" + nameBase("demo/sticky/tcp/http__10.244.2.9/8080")
	tests := []struct {
		name     string
		edit     func(*fixtureReader)
		maxReads int
		targets  []dataplane.Target
		want     string // FullReason of two checks in a row
	}{
		{"a target without ports", nil, 0,
			[]dataplane.Target{web("10.244.1.2"), {IP: netip.MustParseAddr("10.244.1.5")}}, ""},
		{"too many reads", nil, 4,
			[]dataplane.Target{web("10.244.1.2")}, "5 chain reads needed, more than the bound of 4"},
		{"service chain names unlike kube-proxy's", rename(webChain, "service-AAAAAAAA-demo/web/tcp/http"), 0,
			[]dataplane.Target{web("10.244.1.2")},
			"kube-proxy names its chains unlike v1.37 (service-ips goes to service-AAAAAAAA-demo/web/tcp/http, which is not named <prefix><hash>-<namespace>/<name>/tcp/<port> as kube-proxy v1.37 hashes it): targeted reads are off"},
		{"protocol unlike the map key's", rename(`"10.96.40.1", "tcp", 80]`, `"10.96.40.1", "udp", 80]`), 0,
			[]dataplane.Target{sticky},
			"kube-proxy names its chains unlike v1.37 (service-ips goes to service-4YTARIRW-demo/sticky/tcp/http, which is not named <prefix><hash>-<namespace>/<name>/udp/<port> as kube-proxy v1.37 hashes it): targeted reads are off"},
		{"endpoint chain name with another hash", rename(otherEndpoint, "endpoint-AAAAAAAA-demo/sticky/tcp/http__10.244.2.8/8080"), 0,
			[]dataplane.Target{sticky},
			"kube-proxy names its chains unlike v1.37 (service chain of demo/sticky:http goes to endpoint-AAAAAAAA-demo/sticky/tcp/http__10.244.2.8/8080, not named endpoint-<hash>-demo/sticky/tcp/http__<ip>/<port>): targeted reads are off"},
		{"endpoint chain named after another endpoint", rename(otherEndpoint, wrongEndpoint), 0,
			[]dataplane.Target{sticky},
			"kube-proxy names its chains unlike v1.37 (endpoint chain " + wrongEndpoint + " of demo/sticky:http DNATs to 10.244.2.8:8080, which kube-proxy v1.37 names " + otherEndpoint + "): targeted reads are off"},
		{"port named in a map but its chains are missing", func(r *fixtureReader) { r.hide[webChain] = true }, 0,
			[]dataplane.Target{web("10.244.1.2")},
			"service-ips names demo/web:http, whose chains were not found: reading the whole table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := readFixtures(t, probetest.Files{dataplane.IPv4: "terminating.json"})
			if tt.edit != nil {
				tt.edit(r)
			}
			p := NewTargeted(r, r, tt.maxReads)
			for i := range 2 {
				res, err := p.CheckTargets(context.Background(), tt.targets)
				if err != nil {
					t.Fatal(err)
				}
				if res.Targeted || res.FullReason != tt.want {
					t.Errorf("check %d: Targeted %v, FullReason %q; want %q", i+1, res.Targeted, res.FullReason, tt.want)
				}
				if r.dumps != i+1 {
					t.Errorf("check %d: %d dumps", i+1, r.dumps)
				}
			}
		})
	}
}

func TestTargetedRejectsBadPorts(t *testing.T) {
	r := readFixtures(t, probetest.Files{dataplane.IPv4: "ready.json"})
	_, err := NewTargeted(r, r, 0).CheckTargets(context.Background(), []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.2"), Ports: []dataplane.ServicePort{{Name: "web:http", Protocol: "TCP", Port: 80}}}})
	if want := `nftables: targets[0].ports[0]: name "web:http": want namespace/name:port`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestTargetedNoRules(t *testing.T) {
	r := &fixtureReader{tables: map[dataplane.Family][]byte{dataplane.IPv4: []byte(`{"nftables": [{"metainfo": {"json_schema_version": 1}}]}`)}}
	_, err := NewTargeted(r, r, 0).CheckTargets(context.Background(), []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.2"), Ports: []dataplane.ServicePort{{Name: "demo/web:http", Protocol: "TCP", Port: 8080}}}})
	if want := "nftables IPv4: kube-proxy rules not found"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

// Chain names as kube-proxy v1.37 writes them: from the captured fixtures and from kube-proxy's
// own tests (pkg/proxy/nftables/proxier_test.go).
func TestChainNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{"service-" + nameBase(portKey(dataplane.ServicePort{Name: "fixture/web:http", Protocol: "TCP", Port: 8080})), "service-AZWIHYO4-fixture/web/tcp/http"},
		{"service-" + nameBase(portKey(dataplane.ServicePort{Name: "ns1/svc1:p80", Protocol: "TCP", Port: 80})), "service-ULMVA6XW-ns1/svc1/tcp/p80"},
		{"service-" + nameBase(portKey(dataplane.ServicePort{Name: "default/kubernetes:https", Protocol: "TCP", Port: 6443})), "service-2QRHZV4L-default/kubernetes/tcp/https"},
		{endpointChain("ns1/svc1/tcp/p80", netip.MustParseAddrPort("10.180.0.1:80")), "endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"},
		{endpointChain("ns5/svc5/tcp/p80", netip.MustParseAddrPort("[fd00:10:180::3]:80")), "endpoint-5HFFSBBM-ns5/svc5/tcp/p80__fd00.10.180..3/80"},
		{portKey(dataplane.ServicePort{Name: "ns/unnamed", Protocol: "UDP", Port: 53}), "ns/unnamed/udp/"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
	long := strings.Repeat("n", 63) + "/" + strings.Repeat("s", 63) + "/tcp/" + strings.Repeat("p", 63) + "__fd00.1234.5678.9abc.def0.1234.5678.9abc/65535"
	if b := nameBase(long); len(b) != nameBaseMax || !strings.HasSuffix(b, "...") {
		t.Errorf("long name not cut: %d %q", len(b), b)
	}
	if key, ok := splitName("endpoint-" + nameBase(long)); !ok || !strings.HasPrefix(long, strings.TrimSuffix(key, "...")) {
		t.Errorf("cut name: %q %v", key, ok)
	}
}
