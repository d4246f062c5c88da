// Package consultest starts a real `consul agent -dev` on free loopback ports for tests, like
// net/http/httptest does for HTTP servers. It lives in the consulwatch module, which needs
// nothing but the Consul API client, so that light modules (graceful/consulpick) can run their
// integration tests without requiring the root module.
package consultest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// BinaryEnv names the consul binary (hack/build-consul.sh builds one).
const BinaryEnv = "LASTCALL_CONSUL_BIN"

// RequireEnv, when "1", turns a missing binary into a failure instead of a skip (make test sets it).
const RequireEnv = "LASTCALL_REQUIRE_INTEGRATION"

// Agent is a running consul dev agent (a single server that is also the local agent).
type Agent struct {
	Addr string // HTTP address, host:port
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan struct{}
}

// Start runs an agent until the test ends. It skips the test when no binary is configured,
// unless RequireEnv is set.
func Start(t testing.TB) *Agent {
	t.Helper()
	a, err := New()
	switch {
	case errors.Is(err, ErrNoBinary) && os.Getenv(RequireEnv) != "1":
		t.Skipf("%s is not set: run `make test` for integration tests against a real Consul agent", BinaryEnv)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Close()
		if t.Failed() {
			t.Logf("consul output:\n%s", a.out.String())
		}
	})
	return a
}

// ErrNoBinary is New's answer when BinaryEnv is not set.
var ErrNoBinary = errors.New(BinaryEnv + " is not set: build consul with hack/build-consul.sh (make test does)")

// New runs an agent until Close, for callers that have no test at hand (TestMain).
func New() (*Agent, error) {
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	return start("127.0.0.1", ports[0], "-dev", "-server-port", strconv.Itoa(ports[1]),
		"-serf-lan-port", strconv.Itoa(ports[2]), "-serf-wan-port", strconv.Itoa(ports[3]),
		"-dns-port", strconv.Itoa(ports[4]))
}

// start runs consul agent with args, bound to ip and serving HTTP on httpPort there, and waits
// until it can serve the catalog.
func start(ip string, httpPort int, args ...string) (*Agent, error) {
	bin := os.Getenv(BinaryEnv)
	if bin == "" {
		return nil, ErrNoBinary
	}
	a := &Agent{Addr: net.JoinHostPort(ip, strconv.Itoa(httpPort)), out: &bytes.Buffer{}, done: make(chan struct{})}
	args = append([]string{"agent", "-bind", ip, "-client", ip, "-http-port", strconv.Itoa(httpPort),
		"-grpc-port", "-1", "-grpc-tls-port", "-1", "-log-level", "warn"}, args...)
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start consul: %w", err)
	}
	go func() { _ = a.cmd.Wait(); close(a.done) }()
	if err := a.awaitLeader(); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

// Close stops the agent and waits for it to exit.
func (a *Agent) Close() {
	_ = a.cmd.Process.Signal(syscall.SIGCONT) // a stopped agent cannot die otherwise
	_ = a.cmd.Process.Kill()
	<-a.done
}

// Client returns an API client for the agent; rt, when set, wraps the transport.
func (a *Agent) Client(t testing.TB, rt func(http.RoundTripper) http.RoundTripper) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.Addr
	if rt != nil {
		cfg.HttpClient = &http.Client{Transport: rt(cfg.Transport)}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Kill ends the agent at once: its port then refuses connections.
func (a *Agent) Kill() { _ = a.cmd.Process.Kill(); <-a.done }

// Freeze stops the agent (SIGSTOP): connections are accepted by the kernel but never answered.
func (a *Agent) Freeze() { _ = a.cmd.Process.Signal(syscall.SIGSTOP) }

// awaitLeader waits until the dev server has elected itself; there is no blocking API for it.
func (a *Agent) awaitLeader() error {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.Addr
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if leader, err := c.Status().Leader(); err == nil && leader != "" {
			// The catalog takes writes once the agent's own node is registered.
			if _, _, err := c.Catalog().Nodes(&api.QueryOptions{RequireConsistent: true}); err == nil {
				return nil
			}
		}
		select {
		case <-a.done:
			return fmt.Errorf("consul exited during start:\n%s", a.out.String())
		case <-ctx.Done():
			return fmt.Errorf("consul elected no leader within 60s:\n%s", a.out.String())
		case <-tick.C:
		}
	}
}

// freePorts reserves n distinct loopback ports and releases them for the agent to bind.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	var ports []int
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	// serf also binds UDP on its ports; a TCP-free port is almost always UDP-free on loopback.
	return ports, nil
}

// String is for test logs.
func (a *Agent) String() string { return fmt.Sprintf("consul dev agent at %s", a.Addr) }
