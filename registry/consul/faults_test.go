package consul_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
)

// build makes a registry the way both binaries do, from Options; logs go to the returned buffer.
func build(t *testing.T, o consul.Options) (*consul.Registry, *syncBuffer) {
	t.Helper()
	if o.MetaKey == "" {
		o.MetaKey = consul.DefaultMetaKey
	}
	if o.AgentPort == 0 {
		o.AgentPort = consul.DefaultAgentPort
	}
	logs := &syncBuffer{}
	r, err := o.New(registry.Env{Binary: registry.Controller, Log: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return r.(*consul.Registry), logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// notConsul answers every request with 404 and an empty body, as a server that is not Consul
// (or a proxy whose route is gone) does: what the controller read as `404 ()`.
func notConsul(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNotFound) }))
	t.Cleanup(s.Close)
	return s
}

// Consul answers 404 for an instance an agent does not hold; any other 404 is not that answer
// and must not pass for "already deregistered".
func TestRemoveTellsAnUnknownInstanceFromAWrongServer(t *testing.T) {
	agent := consultest.Shared(t)
	tests := []struct {
		name    string
		addr    string
		wantErr bool
	}{
		{"Consul's agent, instance unknown", "http://" + agent.Addr, false},
		{"a server that is not Consul", notConsul(t).URL, true},
		{"Consul, under a path it does not serve", "http://" + agent.Addr + "/not-consul", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := build(t, consul.Options{Addr: tt.addr})
			err := r.Remove(context.Background(), registry.Registration{Ref: registry.Ref{Service: "web", ID: "never-registered"}})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Remove = %v, want error %v", err, tt.wantErr)
			}
			t.Logf("Remove: %v", err)
		})
	}
}

// After Consul is recreated at a new address behind the same name, the connection the client
// kept alive still reaches something that answers 404 (what the e2e's controller saw until
// restarted). The client must neither count that as a removal nor stay on that connection:
// once the name leads to the new Consul, removing the instance removes it there.
func TestRemoveFollowsConsulToItsNewAddressBehindTheSameName(t *testing.T) {
	consulB := consultest.Shared(t)
	admin := consulB.Client(t, nil)
	pod, _ := pods(t)
	id := pod.Service + "-a"
	register(t, admin, pod, id, true)

	front := consultest.NewFront(t, notConsul(t).Listener.Addr().String())
	r, _ := build(t, consul.Options{Addr: "http://" + front.Addr, Timeout: time.Second})
	ctx := context.Background()
	reg := registry.Registration{Ref: registry.Ref{Service: pod.Service, ID: id}}
	if err := r.Remove(ctx, reg); err == nil {
		t.Fatal("Remove answered by a server that is not Consul: no error")
	}
	front.Switch(consulB.Addr)
	gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
		g.Expect(r.Remove(ctx, reg)).To(gomega.Succeed())
		a, cat, _ := listed(t, admin, pod.Service, id)
		g.Expect(a || cat).To(gomega.BeFalse(), "instance still registered in the new Consul")
	}).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
}

// A request the server never answers ends at --consul-timeout, and the next one dials again.
func TestRequestsEndAtTheTimeoutAndReconnect(t *testing.T) {
	consulA := consultest.Start(t)
	pod, _ := pods(t)
	id := pod.Service + "-a"
	register(t, consultest.Shared(t).Client(t, nil), pod, id, true) // only the new Consul knows the instance
	front := consultest.NewFront(t, consulA.Addr)
	r, _ := build(t, consul.Options{Addr: "http://" + front.Addr, Timeout: 500 * time.Millisecond})
	ctx := context.Background()
	if v, err := r.Visible(ctx, pod); err != nil || v {
		t.Fatalf("Visible through the old Consul = %v, %v; want false, nil", v, err)
	}
	// Consul recreated: the old one is gone (its flows now silent), the name leads to the new one.
	consulA.Kill()
	front.Switch(consultest.Shared(t).Addr)
	start := time.Now()
	bounded, cancel := context.WithTimeout(ctx, 5*time.Second) // what the old client needed
	defer cancel()
	_, err := r.Visible(bounded, pod)
	if took := time.Since(start); err == nil || took > 2*time.Second {
		t.Fatalf("Visible over a silent connection = %v after %s; want an error within the timeout", err, took)
	}
	if v, err := r.Visible(ctx, pod); err != nil || !v {
		t.Fatalf("Visible after reconnecting = %v, %v; want true from the new Consul", v, err)
	}
}

// With an agent per node, an instance that a node's agent registered comes back after a removal
// through the catalog: the agent's anti-entropy restores it at its next full sync. The backstop
// (Instances, then Remove) and the sweeper (Registrations, then Remove) talk to a server, so
// they must remove it through the node's agent; a canary removed through the catalog shows that
// a full sync ran.
func TestRemoveOutlastsAntiEntropy(t *testing.T) {
	pair := consultest.StartPair(t)
	node := pair.Client.Client(t, nil)
	server := pair.Server.Client(t, nil)
	r, logs := build(t, consul.Options{Addr: "http://" + pair.Server.Addr, AgentPort: pair.HTTPPort, Timeout: 2 * time.Second})
	ctx := context.Background()

	backstopped, swept := pods(t)
	ids := map[string]registry.Instance{"backstopped": backstopped, "swept": swept}
	for id, in := range ids {
		registerOn(t, node, in, id)
	}
	registerOn(t, node, registry.Instance{Service: "canary"}, "canary")

	found, err := r.Instances(ctx, backstopped)
	if err != nil || len(found) != 1 || found[0].Where != pair.ClientNode {
		t.Fatalf("Instances = %+v, %v; want the instance on node %s", found, err, pair.ClientNode)
	}
	all, err := r.Registrations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(all, func(reg registry.Registration) bool { return reg.Ref.ID == "swept" })
	if i < 0 {
		t.Fatalf("Registrations lacks the swept instance: %+v", all)
	}
	for _, reg := range []registry.Registration{found[0], all[i]} {
		if err := r.Remove(ctx, reg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := server.Catalog().Deregister(&api.CatalogDeregistration{Node: pair.ClientNode, ServiceID: "canary"}, nil); err != nil {
		t.Fatal(err)
	}
	g := gomega.NewWithT(t)
	g.Expect(inCatalog(t, server, "canary", "canary")).To(gomega.BeFalse())

	pair.ForceSync(t)
	g.Eventually(func() bool { return inCatalog(t, server, "canary", "canary") }).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).
		Should(gomega.BeTrue(), "the canary is restored by the agent's anti-entropy")
	// The sync writes instance by instance: give it the time to write any other.
	g.Consistently(func(g gomega.Gomega) {
		for id := range ids {
			g.Expect(inCatalog(t, server, backstopped.Service, id)).To(gomega.BeFalse(), "%s restored by anti-entropy", id)
		}
	}).WithTimeout(2 * time.Second).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
	if strings.Contains(logs.String(), "removing through the catalog") {
		t.Errorf("removed through the catalog although the owning agent answers:\n%s", logs)
	}

	// The node is lost: its agent cannot be reached, so the catalog is the only way left.
	lost := registry.Instance{Service: backstopped.Service, UID: "uid-lost", IP: "10.1.0.9"}
	registerOn(t, node, lost, "lost")
	pair.Client.Kill()
	if err := r.Remove(ctx, registry.Registration{Ref: registry.Ref{Service: lost.Service, ID: "lost"}, Where: pair.ClientNode}); err != nil {
		t.Fatal(err)
	}
	if inCatalog(t, server, lost.Service, "lost") {
		t.Error("the lost node's instance is still in the catalog")
	}
	if !strings.Contains(logs.String(), "removing through the catalog") {
		t.Errorf("no warning that the catalog was used:\n%s", logs)
	}
}

// registerOn registers an instance with the pod's meta on an agent, without a check.
func registerOn(t *testing.T, agent *api.Client, in registry.Instance, id string) {
	t.Helper()
	err := agent.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: in.Service, Address: in.IP,
		Meta: map[string]string{consul.DefaultMetaKey: in.UID, consul.MetaPodName: "pod-" + id, consul.MetaPodNamespace: "shop"}})
	if err != nil {
		t.Fatal(err)
	}
}

func inCatalog(t *testing.T, c *api.Client, service, id string) bool {
	t.Helper()
	cat, _, err := c.Catalog().Service(service, "", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(cat, func(s *api.CatalogService) bool { return s.ServiceID == id })
}
