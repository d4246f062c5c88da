package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

// The integration tests run the agent against real rules in a network namespace of their own:
// the test binary runs itself again in a new one (CLONE_NEWNET), loads the probe fixtures
// (kube-proxy rulesets) with iptables-restore or nft, and changes them while a wait is open.
// They need root and the commands; they skip without, unless LASTCALL_REQUIRE_INTEGRATION=1.

const netnsChild = "LASTCALL_NODE_NETNS_CHILD"

// inNetns reports whether the test runs in its own network namespace. Outside one it runs the
// test again in a new namespace, reports how it went and returns false.
func inNetns(t *testing.T, commands ...string) bool {
	t.Helper()
	if os.Getenv(netnsChild) == t.Name() {
		must(t, "", "ip", "link", "set", "lo", "up")
		return true
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range append([]string{"ip"}, commands...) {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("LASTCALL_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("LASTCALL_REQUIRE_INTEGRATION=1 but this test needs %s", strings.Join(missing, ", "))
		}
		t.Skipf("needs %s (set LASTCALL_REQUIRE_INTEGRATION=1 to fail instead)", strings.Join(missing, ", "))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), netnsChild+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in a new network namespace: %v\n%s", err, out)
	}
	t.Logf("in a new network namespace:\n%s", out)
	return false
}

// must runs a command that must succeed; stdin is the file at in, if any.
func must(t *testing.T, in, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if in != "" {
		f, err := os.Open(in)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func iptablesFixture(name string) string {
	return filepath.Join("..", "..", "registry", "endpoints", "dataplane", "iptables", "testdata", name)
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
	if !inNetns(t, "iptables-nft-restore", "iptables-nft-save", "iptables-nft") {
		return
	}
	g := NewWithT(t)
	must(t, iptablesFixture("ready.txt"), "iptables-nft-restore")
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
	must(t, iptablesFixture("terminating.txt"), "iptables-nft-restore")
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
	if !inNetns(t, "iptables-legacy-restore", "iptables-legacy-save", "iptables-nft") {
		return
	}
	g := NewWithT(t)
	must(t, iptablesFixture("ready.txt"), "iptables-legacy-restore")
	url := agentProcess(t, "--mode=iptables", "--kube-proxy-metrics=", "--fallback-interval=200ms")
	c := &agent.Client{URL: url}
	wait := waitFor(c, agent.WaitRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2", Ports: []agent.PortJSON{port("demo/web", "http", 8080), port("demo/web", "metrics", 9090)}}}, Timeout: "60s"})
	g.Eventually(func(g Gomega) string { return openWaits(g, url) }).Should(Equal("1"))
	g.Consistently(wait, "500ms").ShouldNot(Receive())
	must(t, iptablesFixture("terminating.txt"), "iptables-legacy-restore")
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
	if !inNetns(t, "nft") {
		return
	}
	g := NewWithT(t)
	loadNFT(t, "ready.json", false)
	kp := &fakeKubeProxy{mode: "nftables"}
	kpSrv := httptest.NewServer(kp)
	defer kpSrv.Close()
	kp.sync()
	url := agentProcess(t, "--kube-proxy-metrics="+kpSrv.URL, "--sync-poll=50ms", "--recheck=1m")
	c := &agent.Client{URL: url}
	wait := waitFor(c, agent.WaitRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2"}, {IP: "10.244.1.5"}}, Timeout: "60s"})
	g.Eventually(func(g Gomega) string { return openWaits(g, url) }).Should(Equal("1"))
	g.Consistently(wait, "300ms").ShouldNot(Receive())
	loadNFT(t, "terminating.json", true)
	kp.sync()
	var ans agent.Answer
	g.Eventually(wait, "10s").Should(Receive(&ans))
	g.Expect(ans.Error).To(BeEmpty())
	g.Expect(ans.Mode).To(Equal("nftables"))
	g.Expect(ans.Done).To(BeTrue())
	g.Expect(verdictsOf(ans)).To(Equal("10.244.1.2=NotRouted 10.244.1.5=LastBackend"))
}

// loadNFT loads an nftables fixture (nft --json list output) into the kernel, replacing the
// kube-proxy table in one transaction when replace is set. A listing names maps before the
// chains their verdicts go to, so objects are added table, chains, sets and maps, then rules.
func loadNFT(t *testing.T, fixture string, replace bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "registry", "endpoints", "dataplane", "nftables", "testdata", fixture))
	if err != nil {
		t.Fatal(err)
	}
	var listing struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(b, &listing); err != nil {
		t.Fatal(err)
	}
	rank := map[string]int{"table": 0, "chain": 1, "set": 2, "map": 2, "rule": 3}
	kind := func(o map[string]json.RawMessage) string {
		for k := range o {
			return k
		}
		return ""
	}
	objects := slices.DeleteFunc(listing.Nftables, func(o map[string]json.RawMessage) bool { return kind(o) == "metainfo" })
	slices.SortStableFunc(objects, func(x, y map[string]json.RawMessage) int { return cmp.Compare(rank[kind(x)], rank[kind(y)]) })
	var cmds []any
	if replace {
		cmds = append(cmds, map[string]any{"delete": map[string]any{"table": map[string]string{"family": "ip", "name": "kube-proxy"}}})
	}
	for _, o := range objects {
		cmds = append(cmds, o)
	}
	in, err := json.Marshal(map[string]any{"nftables": cmds})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "load.json")
	if err := os.WriteFile(file, in, 0o600); err != nil {
		t.Fatal(err)
	}
	must(t, "", "nft", "-j", "-f", file)
}
