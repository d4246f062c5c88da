package consultest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Pair is a Consul server and a client agent joined to it, as Consul runs with an agent per
// node: the server on 127.0.0.1 and the client on 127.0.0.2, each the only agent of its node
// (ServerNode, ClientNode), both serving HTTP on the same port as every node's agent serves
// :8500. ACLs are on with the default policy allow, so that ForceSync can work; ManagementToken
// is the management token.
type Pair struct {
	Server, Client         *Agent
	ServerNode, ClientNode string
	// HTTPPort is the agents' HTTP port on both addresses.
	HTTPPort int
	synced   bool
}

// ManagementToken is a Pair's initial management token.
const ManagementToken = "lastcall-test-management"

// StartPair runs a Pair until the test ends. It skips the test without a binary, unless
// RequireEnv is set.
func StartPair(t testing.TB) *Pair {
	t.Helper()
	if os.Getenv(BinaryEnv) == "" && os.Getenv(RequireEnv) != "1" {
		t.Skipf("%s is not set: run `make test` for integration tests against a real Consul agent", BinaryEnv)
	}
	p, err := newPair(t)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newPair(t testing.TB) (*Pair, error) {
	const serverIP, clientIP = "127.0.0.1", "127.0.0.2"
	ports, err := freePortsOn([]string{serverIP, clientIP}, 4)
	if err != nil {
		return nil, err
	}
	httpPort, rpc, lan, wan := ports[0], ports[1], ports[2], ports[3]
	p := &Pair{ServerNode: "lastcall-server", ClientNode: "lastcall-node-b", HTTPPort: httpPort}
	acl := `acl { enabled = true, default_policy = "allow", enable_token_persistence = false`
	p.Server, err = start(serverIP, httpPort, "-server", "-bootstrap-expect", "1", "-node", p.ServerNode,
		"-data-dir", t.TempDir(), "-server-port", strconv.Itoa(rpc), "-serf-lan-port", strconv.Itoa(lan),
		"-serf-wan-port", strconv.Itoa(wan), "-dns-port", "-1",
		"-hcl", acl+`, tokens { initial_management = "`+ManagementToken+`" } }`)
	if err != nil {
		return nil, fmt.Errorf("consul server: %w", err)
	}
	t.Cleanup(func() { closeAndLog(t, p.Server) })
	// A client agent has no server port and no WAN; it joins the server's LAN.
	p.Client, err = start(clientIP, httpPort, "-node", p.ClientNode, "-data-dir", t.TempDir(),
		"-serf-lan-port", strconv.Itoa(lan), "-dns-port", "-1",
		"-retry-join", net.JoinHostPort(serverIP, strconv.Itoa(lan)), "-hcl", acl+` }`)
	if err != nil {
		return nil, fmt.Errorf("consul client agent: %w", err)
	}
	t.Cleanup(func() { closeAndLog(t, p.Client) })
	return p, p.awaitNode()
}

func closeAndLog(t testing.TB, a *Agent) {
	a.Close()
	if t.Failed() {
		t.Logf("%s output:\n%s", a, a.out.String())
	}
}

// awaitNode waits until the client's node is in the server's catalog (its first sync).
func (p *Pair) awaitNode() error {
	c, err := api.NewClient(&api.Config{Address: p.Server.Addr, Token: ManagementToken})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if n, _, err := c.Catalog().Node(p.ClientNode, nil); err == nil && n != nil && n.Node != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("the client agent's node did not reach the catalog within 60s")
		case <-tick.C:
		}
	}
}

// ForceSync makes the client agent run a full anti-entropy sync within about 3 s, instead of
// at its next periodic one (every minute): an agent whose default token changes runs one after
// a stagger of up to 3 s (agent/agent_endpoint.go AgentToken; agent/ae/ae.go serverUpIntv).
func (p *Pair) ForceSync(t testing.TB) {
	t.Helper()
	token := ManagementToken
	if p.synced {
		token = "" // anonymous, which the default policy allows: any change triggers the sync
	}
	p.synced = !p.synced
	c := p.Client.Client(t, nil)
	if _, err := c.Agent().UpdateDefaultACLToken(token, &api.WriteOptions{Token: ManagementToken}); err != nil {
		t.Fatalf("change the client agent's default token: %v", err)
	}
}

// freePortsOn finds n ports free on every ip, for agents that share port numbers on distinct
// addresses.
func freePortsOn(ips []string, n int) ([]int, error) {
	for range 20 {
		ports, err := freePorts(n)
		if err != nil {
			return nil, err
		}
		if freeOnAll(ips, ports) {
			return ports, nil
		}
	}
	return nil, fmt.Errorf("no %d ports free on every one of %v", n, ips)
}

func freeOnAll(ips []string, ports []int) bool {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for _, ip := range ips {
		for _, port := range ports {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				return false
			}
			ls = append(ls, l)
		}
	}
	return true
}
