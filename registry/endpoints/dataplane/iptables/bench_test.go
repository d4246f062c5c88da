package iptables

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// Benchmark size from issue 13: one check at 5,000 Services / 50,000 endpoints.
const (
	benchServices  = 5000
	benchEndpoints = 10 // per service
)

// BenchmarkCheck parses a generated nat table shaped like kube-proxy's at 5,000 Services and
// 50,000 endpoints (large-cluster mode: no comments on SVC and SEP rules) and decides for
// 1 and 100 draining IPs. It measures the probe alone; iptables-save's own time is not in it.
func BenchmarkCheck(b *testing.B) {
	ruleset := generateRuleset(benchServices, benchEndpoints)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("draining=%d", n), func(b *testing.B) {
			probetest.Bench(b, New(memory(ruleset)), benchDraining(n), len(ruleset))
		})
	}
}

// memory is a Dumper over one IPv4 ruleset held in memory.
type memory []byte

func (m memory) Dump(context.Context, dataplane.Family) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(m)), nil
}

// benchDraining spreads n draining IPs over the generated endpoints.
func benchDraining(n int) []netip.Addr {
	var ips []netip.Addr
	total := benchServices * benchEndpoints
	for i := range n {
		ips = append(ips, benchEndpointIP(i*(total/n)+1))
	}
	return ips
}

func benchEndpointIP(e int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(128 + e>>16), byte(e >> 8), byte(e)})
}

// generateRuleset writes iptables-save output of a nat table as kube-proxy v1.37.0 programs it
// in large-cluster mode: every service has a cluster IP; every 10th a node port (KUBE-EXT with
// masquerade); every 20th a load balancer IP with externalTrafficPolicy Local (KUBE-SVL with the
// node's one local endpoint); every 50th ClientIP session affinity.
func generateRuleset(services, perService int) []byte {
	rules := map[string][]string{}
	add := func(chain, rule string) { rules[chain] = append(rules[chain], "-A "+chain+" "+rule) }
	rules["KUBE-SERVICES"] = nil
	rules["KUBE-NODEPORTS"] = nil
	rules["KUBE-MARK-MASQ"] = []string{"-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"}
	rules["KUBE-POSTROUTING"] = []string{
		"-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
		"-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
		`-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully`,
	}
	for i := range services {
		spn := fmt.Sprintf("ns%d/svc%d:http", i/100, i)
		svc, svl := "KUBE-SVC-"+hash(spn+"tcp"), "KUBE-SVL-"+hash(spn+"tcp")
		ext, clusterIP := "KUBE-EXT-"+hash(spn+"tcp"), fmt.Sprintf("10.96.%d.%d", i>>8, i&255)
		nodePort, lbLocal, affinity := i%10 == 0, i%20 == 5, i%50 == 7
		add("KUBE-SERVICES", fmt.Sprintf(`-d %s/32 -p tcp -m comment --comment "%s cluster IP" -m tcp --dport 80 -j %s`, clusterIP, spn, svc))
		add(svc, fmt.Sprintf(`! -s 10.244.0.0/16 -d %s/32 -p tcp -m comment --comment "%s cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ`, clusterIP, spn))
		if nodePort || lbLocal {
			add("KUBE-NODEPORTS", fmt.Sprintf(`-p tcp -m comment --comment "%s" -m tcp --dport %d -j %s`, spn, 30000+i/5, ext))
		}
		if nodePort {
			add(ext, fmt.Sprintf(`-m comment --comment "masquerade traffic for %s external destinations" -j KUBE-MARK-MASQ`, spn))
			add(ext, "-j "+svc)
		}
		var seps []string
		for j := range perService {
			e := i*perService + j
			ep := netip.AddrPortFrom(benchEndpointIP(e), 8080)
			sep := "KUBE-SEP-" + hash(spn+"tcp"+ep.String())
			seps = append(seps, sep)
			add(sep, fmt.Sprintf("-s %s/32 -j KUBE-MARK-MASQ", ep.Addr()))
			recent := ""
			if affinity {
				recent = " -m recent --set --name " + sep + " --mask 255.255.255.255 --rsource"
			}
			add(sep, fmt.Sprintf("-p tcp%s -m tcp -j DNAT --to-destination %s", recent, ep))
		}
		writeJumps := func(chain string, seps []string) {
			if affinity {
				for _, sep := range seps {
					add(chain, "-m recent --rcheck --seconds 10800 --reap --name "+sep+" --mask 255.255.255.255 --rsource -j "+sep)
				}
			}
			for k, sep := range seps {
				if k < len(seps)-1 {
					add(chain, fmt.Sprintf("-m statistic --mode random --probability %.11f -j %s", probability(len(seps)-k), sep))
				} else {
					add(chain, "-j "+sep)
				}
			}
		}
		writeJumps(svc, seps)
		if lbLocal {
			lbIP := fmt.Sprintf("172.20.%d.%d", i>>8, i&255)
			add("KUBE-SERVICES", fmt.Sprintf(`-d %s/32 -p tcp -m comment --comment "%s loadbalancer IP" -m tcp --dport 80 -j %s`, lbIP, spn, ext))
			add(ext, fmt.Sprintf(`-s 10.244.0.0/16 -m comment --comment "pod traffic for %s external destinations" -j %s`, spn, svc))
			add(ext, fmt.Sprintf(`-m comment --comment "masquerade LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`, spn))
			add(ext, fmt.Sprintf(`-m comment --comment "route LOCAL traffic for %s external destinations" -m addrtype --src-type LOCAL -j %s`, spn, svc))
			add(ext, "-j "+svl)
			writeJumps(svl, seps[:1])
		}
	}
	add("KUBE-SERVICES", `-m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`)

	var buf bytes.Buffer
	buf.WriteString("# Generated by iptables-save v1.8.9 (nf_tables)\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	chains := make([]string, 0, len(rules))
	for c := range rules {
		chains = append(chains, c)
	}
	slices.Sort(chains)
	for _, c := range chains {
		buf.WriteString(":" + c + " - [0:0]\n")
	}
	buf.WriteString(`-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
	buf.WriteString(`-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES` + "\n")
	buf.WriteString(`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING` + "\n")
	for _, c := range chains {
		for _, r := range rules[c] {
			buf.WriteString(r + "\n")
		}
	}
	buf.WriteString("COMMIT\n")
	return buf.Bytes()
}

// hash is kube-proxy's chain name suffix (proxier.go portProtoHash, servicePortEndpointChainName).
func hash(s string) string {
	h := sha256.Sum256([]byte(s))
	return base32.StdEncoding.EncodeToString(h[:])[:16]
}

// probability is 1/n as the kernel stores it (a 31-bit fraction) and iptables-save prints it.
func probability(n int) float64 {
	return float64(int64(float64(1<<31)/float64(n)+0.5)) / float64(1<<31)
}

func TestGeneratedRulesetParses(t *testing.T) {
	ruleset := generateRuleset(100, 10)
	draining := []netip.Addr{benchEndpointIP(50), benchEndpointIP(51)}
	got, err := New(memory(ruleset)).Check(context.Background(), draining)
	if err != nil {
		t.Fatal(err)
	}
	// Service 5 is the load balancer with externalTrafficPolicy Local; endpoint 50 is its local one.
	want := map[netip.Addr]string{
		draining[0]: "Routed: ns0/svc5:http 10.128.0.50:8080; ns0/svc5:http 10.128.0.50:8080 (local, fallback)",
		draining[1]: "Routed: ns0/svc5:http 10.128.0.51:8080",
	}
	for ip, w := range want {
		if s := probetest.Summary(got[ip]); s != w {
			t.Errorf("%s: got %s, want %s", ip, s, w)
		}
	}
	if n := bytes.Count(ruleset, []byte("\n")); n < 2000 {
		t.Errorf("only %d lines", n)
	}
}
