package kubeproxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// fakeProbe finds kube-proxy's rules for the families in rules.
type fakeProbe struct {
	name   string
	rules  map[dataplane.Family]bool
	checks int
}

func (f *fakeProbe) Check(_ context.Context, draining []netip.Addr) (map[netip.Addr]dataplane.Verdict, error) {
	f.checks++
	if !f.rules[dataplane.IPv4] {
		return nil, fmt.Errorf("%s: %w", f.name, dataplane.ErrRulesNotFound)
	}
	out := map[netip.Addr]dataplane.Verdict{}
	for _, ip := range draining {
		out[ip] = dataplane.Verdict{}
	}
	return out, nil
}

func (f *fakeProbe) Ping(_ context.Context, family dataplane.Family) error {
	if !f.rules[family] {
		return fmt.Errorf("%s: %w", f.name, dataplane.ErrRulesNotFound)
	}
	return nil
}

func modeServer(t *testing.T, mode string) *Client {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(mode))
	}))
	t.Cleanup(srv.Close)
	return &Client{URL: srv.URL}
}

func unreachable(t *testing.T) *Client {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return &Client{URL: srv.URL}
}

func TestProbeMode(t *testing.T) {
	v4, v6 := map[dataplane.Family]bool{dataplane.IPv4: true}, map[dataplane.Family]bool{dataplane.IPv6: true}
	tests := []struct {
		name      string
		mode      string
		client    func(*testing.T) *Client
		ipt, nft  map[dataplane.Family]bool
		want, how string
		wantErr   string
		errIs     error
	}{
		{"configured", ModeIPTables, nil, nil, nil, ModeIPTables, "configured", "", nil},
		{"asked", ModeAuto, func(t *testing.T) *Client { return modeServer(t, "nftables") }, v4, v4, ModeNFTables, "kube-proxy /proxyMode", "", nil},
		{"ipvs", ModeAuto, func(t *testing.T) *Client { return modeServer(t, "ipvs") }, v4, nil, "", "",
			`kube-proxy mode not supported: kube-proxy runs in "ipvs" mode; lastcall-node reads iptables and nftables`, ErrUnsupportedMode},
		{"no answer: the rules found", ModeAuto, unreachable, nil, v6, ModeNFTables, "its rules (kube-proxy /proxyMode: Get", "", nil},
		{"no answer, both modes' rules", ModeAuto, unreachable, v4, v4, "", "", "kube-proxy rules of iptables and nftables modes are present", nil},
		{"no answer, no rules", ModeAuto, unreachable, nil, nil, "", "", "kube-proxy rules not found: none of iptables, nftables", dataplane.ErrRulesNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c *Client
			if tt.client != nil {
				c = tt.client(t)
			}
			p, err := NewProbe(tt.mode, c, map[string]ModeProbe{
				ModeIPTables: &fakeProbe{name: "iptables", rules: tt.ipt},
				ModeNFTables: &fakeProbe{name: "nftables", rules: tt.nft},
			})
			if err != nil {
				t.Fatal(err)
			}
			mode, how, err := p.Mode(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || (tt.errIs != nil && !errors.Is(err, tt.errIs)) {
					t.Errorf("got %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || mode != tt.want || !strings.HasPrefix(how, tt.how) {
				t.Errorf("got %q (%s), %v; want %q (%s)", mode, how, err, tt.want, tt.how)
			}
		})
	}
	if _, err := NewProbe("ipvs", nil, map[string]ModeProbe{ModeIPTables: &fakeProbe{}}); err == nil || err.Error() != `mode "ipvs": want auto or one of iptables` {
		t.Errorf("bad mode: %v", err)
	}
}

// Auto mode looks again once the chosen mode has no rules: kube-proxy restarted in the other.
func TestProbeLooksAgain(t *testing.T) {
	ipt := &fakeProbe{name: "iptables", rules: map[dataplane.Family]bool{dataplane.IPv4: true}}
	nft := &fakeProbe{name: "nftables"}
	p, err := NewProbe(ModeAuto, unreachable(t), map[string]ModeProbe{ModeIPTables: ipt, ModeNFTables: nft})
	if err != nil {
		t.Fatal(err)
	}
	ip := []dataplane.Target{{IP: netip.MustParseAddr("10.0.0.1")}}
	if _, err := p.CheckTargets(context.Background(), ip); err != nil || ipt.checks != 1 {
		t.Fatalf("first check: %v, %d iptables checks", err, ipt.checks)
	}
	ipt.rules, nft.rules = nil, map[dataplane.Family]bool{dataplane.IPv4: true}
	if _, err := p.CheckTargets(context.Background(), ip); !errors.Is(err, dataplane.ErrRulesNotFound) {
		t.Fatalf("second check: %v", err)
	}
	res, err := p.CheckTargets(context.Background(), ip)
	if err != nil || nft.checks != 1 || len(res.Verdicts) != 1 {
		t.Fatalf("third check: %v, %d nftables checks", err, nft.checks)
	}
	if mode, _, _ := p.Mode(context.Background()); mode != ModeNFTables {
		t.Errorf("mode %s", mode)
	}
}
