// Package probetest runs table tests of dataplane probes over ruleset fixtures. Only tests
// import it.
package probetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Files is a Dumper over fixtures: IP family → file name in the package's testdata directory.
type Files map[dataplane.Family]string

// Dump implements dataplane.Dumper.
func (f Files) Dump(_ context.Context, family dataplane.Family) (io.ReadCloser, error) {
	name, ok := f[family]
	if !ok {
		return nil, fmt.Errorf("no fixture for %s", family)
	}
	return os.Open(filepath.Join("testdata", name))
}

// Case is one check against fixtures: the draining IPs and the verdict expected for each, as
// Summary renders it.
type Case struct {
	Name     string
	Dump     Files
	Draining []string
	Want     map[string]string
}

// Run checks every case with the probe newProbe builds over the case's fixtures.
func Run(t *testing.T, newProbe func(dataplane.Dumper) dataplane.Probe, cases []Case) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.Name, func(t *testing.T) {
			got, err := newProbe(tt.Dump).Check(context.Background(), Addrs(t, tt.Draining))
			if err != nil {
				t.Fatal(err)
			}
			WantVerdicts(t, got, tt.Want)
		})
	}
}

// WantVerdicts checks that got holds a verdict for each IP of want, as Summary renders it,
// and no other.
func WantVerdicts(t testing.TB, got map[netip.Addr]dataplane.Verdict, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d verdicts, want %d: %v", len(got), len(want), got)
	}
	for ip, w := range want {
		v, ok := got[netip.MustParseAddr(ip)]
		if !ok {
			t.Errorf("%s: no verdict", ip)
			continue
		}
		if s := Summary(v); s != w {
			t.Errorf("%s:\n got %s\nwant %s", ip, s, w)
		}
	}
}

// Targets are the IPs, each with the Service ports that ports lists for it (by its unmapped
// address).
func Targets(t testing.TB, ips []string, ports map[netip.Addr][]dataplane.ServicePort) []dataplane.Target {
	t.Helper()
	var out []dataplane.Target
	for _, ip := range Addrs(t, ips) {
		out = append(out, dataplane.Target{IP: ip, Ports: ports[ip.Unmap()]})
	}
	return out
}

// KubeProxyCases are the cases every kube-proxy mode shares: the fixtures ready, terminating
// and ipv6 (with the extension ext) describe the same cluster in each mode (see
// iptables/testdata/README.md).
func KubeProxyCases(ext string) []Case {
	v4 := func(name string) Files { return Files{dataplane.IPv4: name + ext} }
	return []Case{
		{"ready pod, other endpoints ready: routed on both ports", v4("ready"), []string{"10.244.1.2"}, map[string]string{
			"10.244.1.2": "Routed: demo/web:http 10.244.1.2:8080; demo/web:metrics 10.244.1.2:9090",
		}},
		{"pod in several services", v4("ready"), []string{"10.244.1.3"}, map[string]string{
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
		}},
		{"one of two draining, the other not: routed", v4("ready"), []string{"10.244.2.5"}, map[string]string{
			"10.244.2.5": "Routed: demo/pair:http 10.244.2.5:8080",
		}},
		{"externalTrafficPolicy Local before sync: cluster chain still routes", v4("ready"), []string{"10.244.1.7"}, map[string]string{
			"10.244.1.7": "Routed: demo/edge:http 10.244.1.7:8080; demo/edge:http 10.244.1.7:8080 (local, fallback)",
		}},
		{"session affinity", v4("ready"), []string{"10.244.1.8"}, map[string]string{
			"10.244.1.8": "Routed: demo/sticky:http 10.244.1.8:8080",
		}},
		{"internalTrafficPolicy Local, only local endpoint", v4("ready"), []string{"10.244.1.9"}, map[string]string{
			"10.244.1.9": "LastBackend: demo/itp:http 10.244.1.9:8080 (local, fallback)",
		}},
		{"node port service", v4("ready"), []string{"10.244.1.10"}, map[string]string{
			"10.244.1.10": "Routed: demo/nodeport:http 10.244.1.10:8080",
		}},
		{"IP in no service", v4("ready"), []string{"10.244.1.99"}, map[string]string{
			"10.244.1.99": "NotRouted",
		}},
		{"terminating with other ready endpoints: not routed", v4("terminating"), []string{"10.244.1.2"}, map[string]string{
			"10.244.1.2": "NotRouted",
		}},
		{"last backend: serving-terminating fallback", v4("terminating"), []string{"10.244.1.5"}, map[string]string{
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"every endpoint draining", v4("terminating"), []string{"10.244.2.5", "10.244.2.6"}, map[string]string{
			"10.244.2.5": "LastBackend: demo/pair:http 10.244.2.5:8080 (fallback)",
			"10.244.2.6": "LastBackend: demo/pair:http 10.244.2.6:8080 (fallback)",
		}},
		{"externalTrafficPolicy Local: local fallback only", v4("terminating"), []string{"10.244.1.7"}, map[string]string{
			"10.244.1.7": "LastBackend: demo/edge:http 10.244.1.7:8080 (local, fallback)",
		}},
		{"session affinity after sync", v4("terminating"), []string{"10.244.1.8"}, map[string]string{
			"10.244.1.8": "NotRouted",
		}},
		{"several IPs at once", v4("terminating"), []string{"10.244.1.2", "10.244.1.3", "10.244.1.5"}, map[string]string{
			"10.244.1.2": "NotRouted",
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"IPv6 terminating", Files{dataplane.IPv6: "ipv6" + ext}, []string{"fd00:10:244:1::2"}, map[string]string{
			"fd00:10:244:1::2": "NotRouted",
		}},
		{"IPv6 last backend", Files{dataplane.IPv6: "ipv6" + ext}, []string{"fd00:10:244:1::5"}, map[string]string{
			"fd00:10:244:1::5": "LastBackend: demo/solo:http [fd00:10:244:1::5]:8080 (fallback)",
		}},
		{"dual stack reads both families", Files{dataplane.IPv4: "terminating" + ext, dataplane.IPv6: "ipv6" + ext}, []string{"fd00:10:244:1::3", "10.244.1.5"}, map[string]string{
			"fd00:10:244:1::3": "Routed: demo/web:http [fd00:10:244:1::3]:8080",
			"10.244.1.5":       "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"IPv4-mapped address is IPv4", v4("terminating"), []string{"::ffff:10.244.1.5"}, map[string]string{
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"nothing draining reads nothing", Files{}, nil, map[string]string{}},
	}
}

// Addrs parses IP addresses.
func Addrs(t testing.TB, ss []string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// Summary renders a verdict on one line: "State: service endpoint (local, fallback); …".
func Summary(v dataplane.Verdict) string {
	if len(v.Routes) == 0 {
		return v.State.String()
	}
	var routes []string
	for _, r := range v.Routes {
		s := r.Service + " " + r.Endpoint.String()
		var flags []string
		if r.Local {
			flags = append(flags, "local")
		}
		if r.Fallback {
			flags = append(flags, "fallback")
		}
		if len(flags) > 0 {
			s += " (" + strings.Join(flags, ", ") + ")"
		}
		routes = append(routes, s)
	}
	return v.State.String() + ": " + strings.Join(routes, "; ")
}

// CheckError checks that checking draining fails with an error containing want (and wrapping
// is, unless nil).
func CheckError(t *testing.T, p dataplane.Probe, draining []netip.Addr, want string, is error) {
	t.Helper()
	_, err := p.Check(context.Background(), draining)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got error %v, want %q", err, want)
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("error %v is not %v", err, is)
	}
}

// Bench checks draining with probe b.N times and reports, besides time and allocations, the
// process CPU time per check (cpu-ms/op): the wall time of a benchmark on a busy machine
// overstates the cost, CPU time does not.
// Benchmark size from issue 13: one check at 5,000 Services / 50,000 endpoints.
const (
	BenchServices  = 5000
	BenchEndpoints = 10 // per service
)

// BenchCheck runs Bench on a generated ruleset of BenchServices × BenchEndpoints held in memory,
// for 1 and 100 draining IPs. generate writes the mode's dump; its endpoints are EndpointIP(e).
func BenchCheck(b *testing.B, generate func(services, perService int) []byte, newProbe func(dataplane.Dumper) dataplane.Probe) {
	ruleset := generate(BenchServices, BenchEndpoints)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("draining=%d", n), func(b *testing.B) {
			Bench(b, newProbe(Memory(ruleset)), benchDraining(n), len(ruleset))
		})
	}
}

// Memory is a Dumper over one IPv4 ruleset held in memory.
type Memory []byte

// Dump implements dataplane.Dumper.
func (m Memory) Dump(context.Context, dataplane.Family) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m)), nil
}

// benchDraining spreads n draining IPs over the generated endpoints.
func benchDraining(n int) []netip.Addr {
	return dataplane.TargetIPs(BenchTargets(BenchServices, BenchEndpoints, n))
}

// BenchTargets spreads n draining IPs over the endpoints of a generated ruleset of services ×
// perService, each with the Service port that lists it.
func BenchTargets(services, perService, n int) []dataplane.Target {
	var out []dataplane.Target
	total := services * perService
	for i := range n {
		e := i*(total/n) + 1
		out = append(out, dataplane.Target{IP: EndpointIP(e), Ports: []dataplane.ServicePort{GeneratedPort(e, perService)}})
	}
	return out
}

// EndpointIP is the address of the e-th endpoint of a generated ruleset.
func EndpointIP(e int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(128 + e>>16), byte(e >> 8), byte(e)})
}

func Bench(b *testing.B, probe dataplane.Probe, draining []netip.Addr, size int) {
	b.SetBytes(int64(size))
	b.ReportAllocs()
	before := cpuTime()
	for b.Loop() {
		got, err := probe.Check(context.Background(), draining)
		if err != nil {
			b.Fatal(err)
		}
		if got[draining[0]].State != dataplane.Routed {
			b.Fatalf("%v: %v", draining[0], got[draining[0]])
		}
	}
	b.ReportMetric(float64((cpuTime()-before).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
