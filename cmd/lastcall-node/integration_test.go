package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/netnstest"
)

// The integration tests run the agent against real rules in a network namespace of their own:
// the test binary runs itself again in a new one (CLONE_NEWNET), loads the probe fixtures
// (kube-proxy rulesets) with iptables-restore or nft, and changes them while a wait is open.
// They need root and the commands; they skip without, unless LASTCALL_REQUIRE_INTEGRATION=1.

// fixture reads a file of the dataplane packages' testdata: mode's (iptables, nftables).
func fixture(t *testing.T, mode, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "registry", "endpoints", "dataplane", mode, "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// port is one EndpointSlice port of the fixtures' cluster.
func port(service, name string, number int) agent.PortJSON {
	return agent.PortJSON{Service: service, Name: name, Port: number}
}

// waitFor opens a wait and returns where its answer arrives.
func waitFor(c *agent.Client, req agent.WaitRequest) <-chan agent.Answer {
	ch := make(chan agent.Answer, 1)
	go func() {
		ans, err := c.Wait(context.Background(), req)
		if err != nil {
			ans.Error = "client: " + err.Error()
		}
		ch <- ans
	}()
	return ch
}

func verdictsOf(ans agent.Answer) string {
	var out []string
	for _, ip := range ans.IPs {
		out = append(out, ip.IP+"="+ip.Verdict)
	}
	return strings.Join(out, " ")
}

// openWaits is the agent's lastcall_node_waits gauge.
func openWaits(g Gomega, url string) string {
	resp, err := http.Get(url + "/metrics")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	m := regexp.MustCompile(`(?m)^lastcall_node_waits (\S+)$`).FindSubmatch(body)
	g.Expect(m).To(HaveLen(2))
	return string(m[1])
}

// kube-proxy in iptables mode, nf_tables backend: a wait with Service ports reads only their
// chains and ends once the rules stop routing the IP and kube-proxy reports a sync; a check
// without ports reads the whole table.
func TestIntegrationIPTables(t *testing.T) {
	if !netnstest.InNetns(t, nil, "iptables-nft-restore", "iptables-nft-save", "iptables-nft") {
		return
	}
	g := NewWithT(t)
	netnstest.Must(t, fixture(t, "iptables", "ready.txt"), "iptables-nft-restore")
	kp := &fakeKubeProxy{mode: "iptables"}
	kpSrv := httptest.NewServer(kp)
	defer kpSrv.Close()
	kp.sync()
	url := agentProcess(t, "--kube-proxy-metrics="+kpSrv.URL, "--sync-poll=50ms", "--recheck=1m", "--log-level=debug")
	c := &agent.Client{URL: url}
	web := []agent.PortJSON{port("demo/web", "http", 8080), port("demo/web", "metrics", 9090)}

	ans, err := c.Check(context.Background(), agent.CheckRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2", Ports: web}}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ans.Mode).To(Equal("iptables"))
	g.Expect(ans.Read).To(Equal("targeted"))
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.2=Routed"))

	targeted := waitFor(c, agent.WaitRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2", Ports: web}}, Timeout: "60s"})
	g.Eventually(func(g Gomega) string { return openWaits(g, url) }).Should(Equal("1"))
	g.Consistently(targeted, "300ms").ShouldNot(Receive())

	// kube-proxy's next sync: the pods are terminating.
	netnstest.Must(t, fixture(t, "iptables", "terminating.txt"), "iptables-nft-restore")
	synced := time.Now()
	kp.sync()
	var a1 agent.Answer
	g.Eventually(targeted, "10s").Should(Receive(&a1))
	t.Logf("answered %v after the sync", time.Since(synced))
	g.Expect(a1.Error).To(BeEmpty())
	g.Expect(a1.Done).To(BeTrue())
	g.Expect(a1.Read).To(Equal("targeted"))
	g.Expect(verdictsOf(a1)).To(Equal("10.244.1.2=NotRouted"))
	g.Expect(a1.IPs[0].NotRoutedAt).NotTo(BeNil())
	g.Expect(a1.IPs[0].NotRoutedAt.After(synced)).To(BeTrue())

	ans, err = c.Check(context.Background(), agent.CheckRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.8"}, {IP: "10.244.1.3"}}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ans.Read).To(Equal("full"))
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.8=NotRouted 10.244.1.3=Routed"))

	// The last backend of its Service is reported as such, also from its chains alone.
	ans, err = c.Check(context.Background(), agent.CheckRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.5", Ports: []agent.PortJSON{port("demo/solo", "http", 8080)}}}})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(ans.Read).To(Equal("targeted"))
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.5=LastBackend"))
	g.Expect(ans.IPs[0].Routes).To(HaveLen(1))
	g.Expect(ans.IPs[0].Routes[0].Fallback).To(BeTrue())
}

// kube-proxy on the legacy backend, its metrics out of reach: the agent reads the whole table at
// the fallback interval and says why.
func TestIntegrationIPTablesLegacy(t *testing.T) {
	if !netnstest.InNetns(t, nil, "iptables-legacy-restore", "iptables-legacy-save", "iptables-nft") {
		return
	}
	g := NewWithT(t)
	netnstest.Must(t, fixture(t, "iptables", "ready.txt"), "iptables-legacy-restore")
	url := agentProcess(t, "--mode=iptables", "--kube-proxy-metrics=", "--fallback-interval=200ms")
	c := &agent.Client{URL: url}
	wait := waitFor(c, agent.WaitRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2", Ports: []agent.PortJSON{port("demo/web", "http", 8080), port("demo/web", "metrics", 9090)}}}, Timeout: "60s"})
	g.Eventually(func(g Gomega) string { return openWaits(g, url) }).Should(Equal("1"))
	g.Consistently(wait, "500ms").ShouldNot(Receive())
	netnstest.Must(t, fixture(t, "iptables", "terminating.txt"), "iptables-legacy-restore")
	var ans agent.Answer
	g.Eventually(wait, "10s").Should(Receive(&ans))
	g.Expect(ans.Error).To(BeEmpty())
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.2=NotRouted"))
	g.Expect(ans.Read).To(Equal("full"))
	g.Expect(ans.FullReason).To(Equal("legacy iptables reads the whole nat table for every chain"))
	g.Expect(ans.KubeProxy.Metrics).To(Equal("not configured"))
}

// kube-proxy in nftables mode: the whole table is read.
func TestIntegrationNFTables(t *testing.T) {
	if !netnstest.InNetns(t, nil, "nft") {
		return
	}
	g := NewWithT(t)
	netnstest.LoadNFT(t, fixture(t, "nftables", "ready.json"), false)
	kp := &fakeKubeProxy{mode: "nftables"}
	kpSrv := httptest.NewServer(kp)
	defer kpSrv.Close()
	kp.sync()
	url := agentProcess(t, "--kube-proxy-metrics="+kpSrv.URL, "--sync-poll=50ms", "--recheck=1m")
	c := &agent.Client{URL: url}
	wait := waitFor(c, agent.WaitRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2"}, {IP: "10.244.1.5"}}, Timeout: "60s"})
	g.Eventually(func(g Gomega) string { return openWaits(g, url) }).Should(Equal("1"))
	g.Consistently(wait, "300ms").ShouldNot(Receive())
	netnstest.LoadNFT(t, fixture(t, "nftables", "terminating.json"), true)
	kp.sync()
	var ans agent.Answer
	g.Eventually(wait, "10s").Should(Receive(&ans))
	g.Expect(ans.Error).To(BeEmpty())
	g.Expect(ans.Mode).To(Equal("nftables"))
	g.Expect(ans.Done).To(BeTrue())
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.2=NotRouted 10.244.1.5=LastBackend"))
}
