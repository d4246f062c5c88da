package iptables

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// files is a Dumper over fixtures: IP family → file in testdata.
type files map[dataplane.Family]string

func (f files) Dump(_ context.Context, family dataplane.Family) (io.ReadCloser, error) {
	name, ok := f[family]
	if !ok {
		return nil, fmt.Errorf("no fixture for %s", family)
	}
	return os.Open(filepath.Join("testdata", name))
}

// Fixtures: README.md in testdata. Adding a captured ruleset is one file and one row here.
func TestCheck(t *testing.T) {
	v4 := func(name string) files { return files{dataplane.IPv4: name} }
	tests := []struct {
		name     string
		dump     files
		draining []string
		want     map[string]string // IP → summary()
	}{
		{"ready pod, other endpoints ready: routed on both ports", v4("ready.txt"), []string{"10.244.1.2"}, map[string]string{
			"10.244.1.2": "Routed: demo/web:http 10.244.1.2:8080; demo/web:metrics 10.244.1.2:9090",
		}},
		{"pod in several services", v4("ready.txt"), []string{"10.244.1.3"}, map[string]string{
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
		}},
		{"one of two draining, the other not: routed", v4("ready.txt"), []string{"10.244.2.5"}, map[string]string{
			"10.244.2.5": "Routed: demo/pair:http 10.244.2.5:8080",
		}},
		{"externalTrafficPolicy Local before sync: cluster chain still routes", v4("ready.txt"), []string{"10.244.1.7"}, map[string]string{
			"10.244.1.7": "Routed: demo/edge:http 10.244.1.7:8080; demo/edge:http 10.244.1.7:8080 (local, fallback)",
		}},
		{"session affinity: recent-match rules count", v4("ready.txt"), []string{"10.244.1.8"}, map[string]string{
			"10.244.1.8": "Routed: demo/sticky:http 10.244.1.8:8080",
		}},
		{"internalTrafficPolicy Local, only local endpoint", v4("ready.txt"), []string{"10.244.1.9"}, map[string]string{
			"10.244.1.9": "LastBackend: demo/itp:http 10.244.1.9:8080 (local, fallback)",
		}},
		{"IP in no service", v4("ready.txt"), []string{"10.244.1.99"}, map[string]string{
			"10.244.1.99": "NotRouted",
		}},
		{"terminating with other ready endpoints: not routed", v4("terminating.txt"), []string{"10.244.1.2"}, map[string]string{
			"10.244.1.2": "NotRouted",
		}},
		{"last backend: serving-terminating fallback", v4("terminating.txt"), []string{"10.244.1.5"}, map[string]string{
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"every endpoint draining", v4("terminating.txt"), []string{"10.244.2.5", "10.244.2.6"}, map[string]string{
			"10.244.2.5": "LastBackend: demo/pair:http 10.244.2.5:8080 (fallback)",
			"10.244.2.6": "LastBackend: demo/pair:http 10.244.2.6:8080 (fallback)",
		}},
		{"externalTrafficPolicy Local: local fallback only", v4("terminating.txt"), []string{"10.244.1.7"}, map[string]string{
			"10.244.1.7": "LastBackend: demo/edge:http 10.244.1.7:8080 (local, fallback)",
		}},
		{"session affinity after sync", v4("terminating.txt"), []string{"10.244.1.8"}, map[string]string{
			"10.244.1.8": "NotRouted",
		}},
		{"several IPs at once", v4("terminating.txt"), []string{"10.244.1.2", "10.244.1.3", "10.244.1.5"}, map[string]string{
			"10.244.1.2": "NotRouted",
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"stale SEP chain nobody jumps to", v4("stale.txt"), []string{"10.244.1.2"}, map[string]string{
			"10.244.1.2": "NotRouted",
		}},
		{"large-cluster mode: names from KUBE-SERVICES comments", v4("stale.txt"), []string{"10.244.1.3"}, map[string]string{
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
		}},
		{"IPv6 terminating", files{dataplane.IPv6: "ipv6.txt"}, []string{"fd00:10:244:1::2"}, map[string]string{
			"fd00:10:244:1::2": "NotRouted",
		}},
		{"IPv6 last backend", files{dataplane.IPv6: "ipv6.txt"}, []string{"fd00:10:244:1::5"}, map[string]string{
			"fd00:10:244:1::5": "LastBackend: demo/solo:http [fd00:10:244:1::5]:8080 (fallback)",
		}},
		{"dual stack reads both families", files{dataplane.IPv4: "terminating.txt", dataplane.IPv6: "ipv6.txt"}, []string{"fd00:10:244:1::3", "10.244.1.5"}, map[string]string{
			"fd00:10:244:1::3": "Routed: demo/web:http [fd00:10:244:1::3]:8080",
			"10.244.1.5":       "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"IPv4-mapped address is IPv4", v4("terminating.txt"), []string{"::ffff:10.244.1.5"}, map[string]string{
			"10.244.1.5": "LastBackend: demo/solo:http 10.244.1.5:8080 (fallback)",
		}},
		{"nothing draining reads nothing", files{}, nil, map[string]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := New(tt.dump).Check(context.Background(), addrs(t, tt.draining))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d verdicts, want %d: %v", len(got), len(tt.want), got)
			}
			for ip, want := range tt.want {
				v, ok := got[netip.MustParseAddr(ip)]
				if !ok {
					t.Errorf("%s: no verdict", ip)
					continue
				}
				if s := summary(v); s != want {
					t.Errorf("%s:\n got %s\nwant %s", ip, s, want)
				}
			}
		})
	}
}

func TestCheckErrors(t *testing.T) {
	tests := []struct {
		name     string
		dump     dataplane.Dumper
		draining []string
		want     string
		is       error
	}{
		{"no kube-proxy chains", files{dataplane.IPv4: "none.txt"}, []string{"10.244.1.2"}, "iptables IPv4: kube-proxy rules not found: the nat table has no KUBE-SERVICES chain", dataplane.ErrRulesNotFound},
		{"kube-proxy rules in one family only", files{dataplane.IPv4: "terminating.txt", dataplane.IPv6: "none.txt"}, []string{"10.244.1.2", "fd00::2"}, "iptables IPv6: kube-proxy rules not found", dataplane.ErrRulesNotFound},
		{"dump fails", failing{}, []string{"10.244.1.2"}, "iptables IPv4: boom", nil},
		{"dump output fails", failing{late: true}, []string{"10.244.1.2"}, "iptables IPv4: exit status 1", nil},
		{"invalid IP", files{}, []string{""}, "iptables: draining[0] is not a valid IP address", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ips []netip.Addr
			for _, s := range tt.draining {
				ip, _ := netip.ParseAddr(s)
				ips = append(ips, ip)
			}
			_, err := New(tt.dump).Check(context.Background(), ips)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

type failing struct{ late bool }

func (f failing) Dump(context.Context, dataplane.Family) (io.ReadCloser, error) {
	if !f.late {
		return nil, errors.New("boom")
	}
	return failedOutput{strings.NewReader("*nat\n:KUBE-SERV")}, nil
}

type failedOutput struct{ io.Reader }

func (failedOutput) Close() error { return errors.New("exit status 1") }

func TestParseLines(t *testing.T) {
	d, err := dataplane.NewDraining([]netip.Addr{netip.MustParseAddr("10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		rules string
		want  string
	}{
		{"counters of iptables-save -c", "[0:0] -A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment \"a/b:c cluster IP\" -j KUBE-SVC-A\n[1:60] -A KUBE-SVC-A -j KUBE-SEP-A\n[0:0] -A KUBE-SEP-A -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:80\n", "a/b:c KUBE-SVC-A 10.0.0.1:80 others=false"},
		{"DNAT to a range counts as another endpoint", "-A KUBE-SERVICES -j KUBE-SVC-A\n-A KUBE-SVC-A -m statistic --mode random --probability 0.5 -j KUBE-SEP-A\n-A KUBE-SVC-A -j KUBE-SEP-B\n-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.1:80\n-A KUBE-SEP-B -j DNAT --to-destination 10.0.0.2-10.0.0.3:80\n", " KUBE-SVC-A 10.0.0.1:80 others=true"},
		{"chains declared after use, jumps via goto", "-A KUBE-NODEPORTS -p tcp -m comment --comment x/y:z -j KUBE-EXT-A\n-A KUBE-EXT-A -g KUBE-SVL-A\n-A KUBE-SVL-A -j KUBE-SEP-A\n-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.1:80\n", "x/y:z KUBE-SVL-A 10.0.0.1:80 others=false"},
		{"service chain nobody jumps to", "-A KUBE-SVC-A -j KUBE-SEP-A\n-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.1:80\n", ""},
		{"rules of other tables ignored", "COMMIT\n*filter\n-A KUBE-SERVICES -j KUBE-SVC-A\n-A KUBE-SVC-A -j KUBE-SEP-A\n-A KUBE-SEP-A -j DNAT --to-destination 10.0.0.1:80\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chains, err := parse(strings.NewReader("*nat\n:KUBE-SERVICES - [0:0]\n"+tt.rules+"COMMIT\n"), d)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range chains {
				got = append(got, fmt.Sprintf("%s %s %v others=%v", c.Service, c.Name, strings.Trim(fmt.Sprint(c.Selected), "[]"), c.Others))
			}
			if s := strings.Join(got, "; "); s != tt.want {
				t.Errorf("got %q, want %q", s, tt.want)
			}
		})
	}
}

func TestToken(t *testing.T) {
	line := []byte(`-A X -m comment --comment "a \"quoted\" \\ word" ! -s 10.0.0.0/8 --comment "unterminated`)
	var got []string
	for i := 0; i < len(line); {
		var tok []byte
		tok, i = token(line, i)
		got = append(got, string(tok))
	}
	want := []string{"-A", "X", "-m", "comment", "--comment", `a "quoted" \ word`, "!", "-s", "10.0.0.0/8", "--comment", "unterminated"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
}

func addrs(t *testing.T, ss []string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// summary renders a verdict on one line: "State: service endpoint (local, fallback); …".
func summary(v dataplane.Verdict) string {
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
