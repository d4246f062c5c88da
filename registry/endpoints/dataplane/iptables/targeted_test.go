package iptables

import (
	"bytes"
	"context"
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

// tableCommands serves iptables-save text per family as both a dump and chain by chain, counting
// the chain reads.
type tableCommands struct {
	tables   map[dataplane.Family][]byte
	legacy   bool
	listed   []string
	dumps    int
	failList error
}

func fixtureCommands(t testing.TB, files probetest.Files) *tableCommands {
	t.Helper()
	c := &tableCommands{tables: map[dataplane.Family][]byte{}}
	for fam, name := range files {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		c.tables[fam] = b
	}
	return c
}

func (c *tableCommands) Dump(_ context.Context, family dataplane.Family) (io.ReadCloser, error) {
	c.dumps++
	return io.NopCloser(bytes.NewReader(c.tables[family])), nil
}

func (c *tableCommands) ListChain(_ context.Context, family dataplane.Family, chain string) ([]byte, bool, error) {
	c.listed = append(c.listed, chain)
	if c.failList != nil {
		return nil, false, c.failList
	}
	table := c.tables[family]
	if !bytes.Contains(table, []byte("\n:"+chain+" ")) {
		return nil, false, nil
	}
	out := []byte("-N " + chain + "\n")
	for line := range bytes.Lines(table) {
		if bytes.HasPrefix(line, []byte("-A "+chain+" ")) {
			out = append(out, line...)
		}
	}
	return out, true, nil
}

func (c *tableCommands) ReadsOneChain(context.Context, dataplane.Family) (bool, error) {
	return !c.legacy, nil
}

// slicePorts is what the EndpointSlices of the fixtures' cluster say: the Service ports every
// pod IP is listed under, taken from the endpoint chains (and their comments) of ready.txt and
// ipv6.txt, plus the IPv6 pod that ipv6.txt has already dropped.
func slicePorts(t testing.TB) map[netip.Addr][]dataplane.ServicePort {
	t.Helper()
	out := map[netip.Addr][]dataplane.ServicePort{
		netip.MustParseAddr("fd00:10:244:1::2"): {{Name: "demo/web:http", Protocol: "TCP", Port: 8080}},
	}
	for _, name := range []string{"ready.txt", "ipv6.txt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		for line := range bytes.Lines(b) {
			line = bytes.TrimSpace(line)
			if !bytes.HasPrefix(line, []byte("-A KUBE-SEP-")) || !bytes.Contains(line, []byte("DNAT")) {
				continue
			}
			var comment, proto, dest []byte
			for i := 0; i < len(line); {
				var tok []byte
				tok, i = token(line, i)
				switch string(tok) {
				case "--comment":
					comment, i = token(line, i)
				case "-p":
					proto, i = token(line, i)
				case "--to-destination":
					dest, i = token(line, i)
				}
			}
			ap := netip.MustParseAddrPort(string(dest))
			out[ap.Addr()] = append(out[ap.Addr()], dataplane.ServicePort{Name: string(comment), Protocol: strings.ToUpper(string(proto)), Port: ap.Port()})
		}
	}
	return out
}

// Targeted reads give the verdicts of full reads on every shared case, and read chains only when
// every IP has ports.
func TestTargetedMatchesFullReads(t *testing.T) {
	ports := slicePorts(t)
	cases := append(probetest.KubeProxyCases(".txt"),
		probetest.Case{Name: "stale endpoint chain: not routed", Dump: probetest.Files{dataplane.IPv4: "stale.txt"}, Draining: []string{"10.244.1.2"}, Want: map[string]string{"10.244.1.2": "NotRouted"}},
		probetest.Case{Name: "stale, last backend", Dump: probetest.Files{dataplane.IPv4: "stale.txt"}, Draining: []string{"10.244.1.5"}, Want: map[string]string{"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)"}},
	)
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			cmds := fixtureCommands(t, tt.Dump)
			targets := probetest.Targets(t, tt.Draining, ports)
			res, err := NewTargeted(cmds, 0).CheckTargets(context.Background(), targets)
			if err != nil {
				t.Fatal(err)
			}
			probetest.WantVerdicts(t, res.Verdicts, tt.Want)
			targeted := len(targets) > 0 && dataplane.HavePorts(targets)
			if res.Targeted != targeted || (targeted && cmds.dumps > 0) {
				t.Errorf("Targeted %v after %d dumps and reads %v; want targeted %v", res.Targeted, cmds.dumps, cmds.listed, targeted)
			}
		})
	}
}

func TestTargetedReads(t *testing.T) {
	solo := []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.5"), Ports: []dataplane.ServicePort{{Name: "demo/solo:http", Protocol: "TCP", Port: 8080}}}}
	svc, svl := "KUBE-SVC-"+portProtoHash(portKey{"demo/solo:http", "tcp"}), "KUBE-SVL-"+portProtoHash(portKey{"demo/solo:http", "tcp"})
	cmds := fixtureCommands(t, probetest.Files{dataplane.IPv4: "ready.txt"})
	p := NewTargeted(cmds, 0)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p.names.Now = func() time.Time { return now }

	// First check: the two service chains, then KUBE-SERVICES to confirm the names. The
	// endpoint chain was found by its computed name, which confirms that formula.
	res, err := p.CheckTargets(context.Background(), solo)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{svc, svl, servicesChain}; !slices.Equal(cmds.listed, want) || res.Reads != 3 || !res.Targeted {
		t.Errorf("read %v (%d), want %v", cmds.listed, res.Reads, want)
	}
	// Then only the service chains, until the names are due for another look.
	cmds.listed = nil
	if res, err = p.CheckTargets(context.Background(), solo); err != nil || res.Reads != 2 {
		t.Errorf("second check: %d reads %v, %v", res.Reads, cmds.listed, err)
	}
	now = now.Add(namecheck.Recheck)
	cmds.listed = nil
	if res, err = p.CheckTargets(context.Background(), solo); err != nil || res.Reads != 3 {
		t.Errorf("after %v: %d reads %v, %v", namecheck.Recheck, res.Reads, cmds.listed, err)
	}
	if v := res.Verdicts[solo[0].IP]; v.State != dataplane.LastBackend {
		t.Errorf("got %v", v)
	}
}

func TestTargetedReadsWholeTable(t *testing.T) {
	web := func(ip string) dataplane.Target {
		return dataplane.Target{IP: netip.MustParseAddr(ip), Ports: []dataplane.ServicePort{{Name: "demo/web:http", Protocol: "TCP", Port: 8080}}}
	}
	rename := func(old, new string) func([]byte) []byte {
		return func(b []byte) []byte { return bytes.ReplaceAll(b, []byte(old), []byte(new)) }
	}
	tests := []struct {
		name     string
		fixture  string
		edit     func([]byte) []byte
		legacy   bool
		maxReads int
		targets  []dataplane.Target
		want     string // FullReason
		want2    string // FullReason of a second check
	}{
		{"a target without ports", "terminating.txt", nil, false, 0,
			[]dataplane.Target{web("10.244.1.2"), {IP: netip.MustParseAddr("10.244.1.5")}}, "", ""},
		{"legacy backend", "terminating.txt", nil, true, 0,
			[]dataplane.Target{web("10.244.1.2")}, "legacy iptables reads the whole nat table for every chain", "legacy iptables reads the whole nat table for every chain"},
		{"too many reads", "terminating.txt", nil, false, 4,
			[]dataplane.Target{web("10.244.1.2")}, "5 chain reads needed, more than the bound of 4", "5 chain reads needed, more than the bound of 4"},
		{"service chain names unlike kube-proxy's", "terminating.txt", rename(`"demo/web:http cluster IP"`, `"demo/web:web cluster IP"`), false, 0,
			[]dataplane.Target{web("10.244.1.2")},
			"kube-proxy names its chains unlike v1.37 (KUBE-SERVICES rule for demo/web:web tcp jumps to KUBE-SVC-XRY76EGRC3BSCIIJ): targeted reads are off",
			"kube-proxy names its chains unlike v1.37 (KUBE-SERVICES rule for demo/web:web tcp jumps to KUBE-SVC-XRY76EGRC3BSCIIJ): targeted reads are off"},
		{"endpoint chain names unlike kube-proxy's", "terminating.txt", rename("KUBE-SEP-42676UCKGIO5SMC6", "KUBE-SEP-AAAAAAAAAAAAAAAA"), false, 0,
			[]dataplane.Target{web("10.244.1.2")},
			"kube-proxy names its chains unlike v1.37 (endpoint chain KUBE-SEP-AAAAAAAAAAAAAAAA of demo/web:http DNATs to 10.244.1.3:8080, which kube-proxy v1.37 names KUBE-SEP-42676UCKGIO5SMC6): targeted reads are off",
			"kube-proxy names its chains unlike v1.37 (endpoint chain KUBE-SEP-AAAAAAAAAAAAAAAA of demo/web:http DNATs to 10.244.1.3:8080, which kube-proxy v1.37 names KUBE-SEP-42676UCKGIO5SMC6): targeted reads are off"},
		{"service named in KUBE-SERVICES but its chain is missing", "terminating.txt", rename(":KUBE-SVC-XRY76EGRC3BSCIIJ ", ":KUBE-SVC-GONE "), false, 0,
			[]dataplane.Target{web("10.244.1.2")},
			"KUBE-SERVICES names demo/web:http, whose chains were not found: reading the whole table",
			"KUBE-SERVICES names demo/web:http, whose chains were not found: reading the whole table"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmds := fixtureCommands(t, probetest.Files{dataplane.IPv4: tt.fixture})
			if tt.edit != nil {
				cmds.tables[dataplane.IPv4] = tt.edit(cmds.tables[dataplane.IPv4])
			}
			cmds.legacy = tt.legacy
			p := NewTargeted(cmds, tt.maxReads)
			for i, want := range []string{tt.want, tt.want2} {
				res, err := p.CheckTargets(context.Background(), tt.targets)
				if err != nil {
					t.Fatal(err)
				}
				if res.Targeted || res.FullReason != want {
					t.Errorf("check %d: Targeted %v, FullReason %q; want %q", i+1, res.Targeted, res.FullReason, want)
				}
				if cmds.dumps != i+1 {
					t.Errorf("check %d: %d dumps", i+1, cmds.dumps)
				}
			}
		})
	}
}

func TestTargetedRejectsBadPorts(t *testing.T) {
	tests := []struct {
		port dataplane.ServicePort
		want string
	}{
		{dataplane.ServicePort{Name: "web:http", Protocol: "TCP", Port: 80}, `targets[0].ports[0]: name "web:http": want namespace/name:port`},
		{dataplane.ServicePort{Name: "demo/web:http", Protocol: "tcp", Port: 80}, `targets[0].ports[0]: protocol "tcp": want TCP, UDP or SCTP`},
		{dataplane.ServicePort{Name: "demo/web:http", Protocol: "TCP"}, `targets[0].ports[0]: port 0: want the EndpointSlice port's number`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			cmds := fixtureCommands(t, probetest.Files{dataplane.IPv4: "ready.txt"})
			_, err := NewTargeted(cmds, 0).CheckTargets(context.Background(), []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.2"), Ports: []dataplane.ServicePort{tt.port}}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v", err)
			}
		})
	}
}

func TestTargetedNoRules(t *testing.T) {
	cmds := fixtureCommands(t, probetest.Files{dataplane.IPv4: "none.txt"})
	_, err := NewTargeted(cmds, 0).CheckTargets(context.Background(), []dataplane.Target{{IP: netip.MustParseAddr("10.244.1.2"), Ports: []dataplane.ServicePort{{Name: "demo/web:http", Protocol: "TCP", Port: 8080}}}})
	if err == nil || !strings.Contains(err.Error(), "kube-proxy rules not found") {
		t.Errorf("got %v", err)
	}
}

// The chain names computed here are those of the fixtures, which were computed as kube-proxy does.
func TestChainNames(t *testing.T) {
	if got := "KUBE-SVC-" + portProtoHash(portKey{"demo/web:http", "tcp"}); got != "KUBE-SVC-XRY76EGRC3BSCIIJ" {
		t.Errorf("service chain %s", got)
	}
	if got := endpointChain(portKey{"demo/solo:http", "tcp"}, netip.MustParseAddrPort("[fd00:10:244:1::5]:8080")); got != "KUBE-SEP-5YTG57DRYMTJAP4S" {
		t.Errorf("IPv6 endpoint chain %s", got)
	}
	if got := endpointChain(portKey{"demo/solo:http", "tcp"}, netip.AddrPortFrom(netip.MustParseAddr("10.244.1.5"), 8080)); got != "KUBE-SEP-WFEC3JTZ532M6WVF" {
		t.Errorf("endpoint chain %s", got)
	}
}
