package iptables

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
	"testing"
	"testing/iotest"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// Fixtures: README.md in testdata. Adding a captured ruleset is one file and one row here.
func TestCheck(t *testing.T) {
	cases := append(probetest.KubeProxyCases(".txt"),
		probetest.Case{Name: "stale SEP chain nobody jumps to", Dump: probetest.Files{dataplane.IPv4: "stale.txt"}, Draining: []string{"10.244.1.2"}, Want: map[string]string{
			"10.244.1.2": "NotRouted",
		}},
		probetest.Case{Name: "large-cluster mode: names from KUBE-SERVICES comments", Dump: probetest.Files{dataplane.IPv4: "stale.txt"}, Draining: []string{"10.244.1.3"}, Want: map[string]string{
			"10.244.1.3": "Routed: demo/web-canary:http 10.244.1.3:8080; demo/web:http 10.244.1.3:8080; demo/web:metrics 10.244.1.3:9090",
		}},
	)
	probetest.Run(t, func(d dataplane.Dumper) dataplane.Probe { return New(d) }, cases)
}

func TestCheckErrors(t *testing.T) {
	tests := []struct {
		name     string
		dump     dataplane.Dumper
		draining []string
		want     string
		is       error
	}{
		{"no kube-proxy chains", probetest.Files{dataplane.IPv4: "none.txt"}, []string{"10.244.1.2"}, "iptables IPv4: kube-proxy rules not found: the nat table has no KUBE-SERVICES chain", dataplane.ErrRulesNotFound},
		{"kube-proxy rules in one family only", probetest.Files{dataplane.IPv4: "terminating.txt", dataplane.IPv6: "none.txt"}, []string{"10.244.1.2", "fd00::2"}, "iptables IPv6: kube-proxy rules not found", dataplane.ErrRulesNotFound},
		{"dump fails", failing{}, []string{"10.244.1.2"}, "iptables IPv4: boom", nil},
		{"dump output fails", failing{late: true}, []string{"10.244.1.2"}, "iptables IPv4: exit status 1", nil},
		{"invalid IP", probetest.Files{}, []string{""}, "iptables: draining[0] is not a valid IP address", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ips []netip.Addr
			for _, s := range tt.draining {
				ip, _ := netip.ParseAddr(s)
				ips = append(ips, ip)
			}
			probetest.CheckError(t, New(tt.dump), ips, tt.want, tt.is)
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
		{"counters of iptables-save -c", "[0:0] -A KUBE-SERVICES -d 10.96.0.5/32 -p tcp -m comment --comment \"a/b:c cluster IP\" -j KUBE-SVC-AAAAAAAAAAAAAAAA\n[1:60] -A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-AAAAAAAAAAAAAAAA\n[0:0] -A KUBE-SEP-AAAAAAAAAAAAAAAA -p tcp -m tcp -j DNAT --to-destination 10.0.0.1:80\n", "a/b:c KUBE-SVC-AAAAAAAAAAAAAAAA 10.0.0.1:80 others=false"},
		{"DNAT to a range counts as another endpoint", "-A KUBE-SERVICES -j KUBE-SVC-AAAAAAAAAAAAAAAA\n-A KUBE-SVC-AAAAAAAAAAAAAAAA -m statistic --mode random --probability 0.5 -j KUBE-SEP-AAAAAAAAAAAAAAAA\n-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-BBBBBBBBBBBBBBBB\n-A KUBE-SEP-AAAAAAAAAAAAAAAA -j DNAT --to-destination 10.0.0.1:80\n-A KUBE-SEP-BBBBBBBBBBBBBBBB -j DNAT --to-destination 10.0.0.2-10.0.0.3:80\n", " KUBE-SVC-AAAAAAAAAAAAAAAA 10.0.0.1:80 others=true"},
		{"chains declared after use, jumps via goto", "-A KUBE-NODEPORTS -p tcp -m comment --comment x/y:z -j KUBE-EXT-AAAAAAAAAAAAAAAA\n-A KUBE-EXT-AAAAAAAAAAAAAAAA -g KUBE-SVL-AAAAAAAAAAAAAAAA\n-A KUBE-SVL-AAAAAAAAAAAAAAAA -j KUBE-SEP-AAAAAAAAAAAAAAAA\n-A KUBE-SEP-AAAAAAAAAAAAAAAA -j DNAT --to-destination 10.0.0.1:80\n", "x/y:z KUBE-SVL-AAAAAAAAAAAAAAAA 10.0.0.1:80 others=false"},
		{"service chain nobody jumps to", "-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-AAAAAAAAAAAAAAAA\n-A KUBE-SEP-AAAAAAAAAAAAAAAA -j DNAT --to-destination 10.0.0.1:80\n", ""},
		{"kube-proxy prefix, other shape", "-A KUBE-SERVICES -j KUBE-SVC-SHORT\n", "error: line 3: chain KUBE-SVC-SHORT is not named like kube-proxy v1.37's KUBE-SVC-<16 characters>"},
		{"rules of other tables ignored", "COMMIT\n*filter\n-A KUBE-SERVICES -j KUBE-SVC-AAAAAAAAAAAAAAAA\n-A KUBE-SVC-AAAAAAAAAAAAAAAA -j KUBE-SEP-AAAAAAAAAAAAAAAA\n-A KUBE-SEP-AAAAAAAAAAAAAAAA -j DNAT --to-destination 10.0.0.1:80\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chains, err := parse(strings.NewReader("*nat\n:KUBE-SERVICES - [0:0]\n"+tt.rules+"COMMIT\n"), d)
			if err != nil {
				if got := "error: " + err.Error(); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				return
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

// The fixtures parse the same whatever sizes the reads of the pipe have.
func TestParseAcrossReadSizes(t *testing.T) {
	d, err := dataplane.NewDraining(probetest.Addrs(t, []string{"10.244.1.3", "10.244.1.5", "10.244.1.7", "fd00:10:244:1::5"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ready.txt", "terminating.txt", "stale.txt", "ipv6.txt"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		want := parsed(t, bytes.NewReader(data), d)
		if got := parsed(t, iotest.OneByteReader(bytes.NewReader(data)), d); got != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
}

func parsed(t *testing.T, r io.Reader, d dataplane.Draining) string {
	t.Helper()
	chains, err := parse(r, d)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(dataplane.Decide(d, chains))
}
