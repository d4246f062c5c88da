package consul_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"

	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
	"github.com/lastcall-dev/lastcall/registry/internal/tcpfault"
)

// One agent serves the whole package; each test registers under names of its own.
func TestMain(m *testing.M) { consultest.Main(m) }

// pods returns two pods of one service whose names, UIDs and IPs belong to this test alone.
func pods(t testing.TB) (a, b registry.Instance) {
	n := strconv.FormatInt(nextPod.Add(1), 10)
	svc := "web-" + n
	return registry.Instance{Namespace: "shop", Pod: "web-a", UID: "uid-a-" + n, IP: "10.1.0.1", Service: svc},
		registry.Instance{Namespace: "shop", Pod: "web-b", UID: "uid-b-" + n, IP: "10.1.0.2", Service: svc}
}

var nextPod atomic.Int64

// register adds an instance the way an app does: via its agent, with an HTTP health check,
// and waits (blocking query) until it passes.
func register(t *testing.T, c *api.Client, in registry.Instance, id string, meta bool) {
	t.Helper()
	health := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	t.Cleanup(health.Close)
	reg := &api.AgentServiceRegistration{
		ID: id, Name: in.Service, Address: in.IP, Port: 8080,
		Check: &api.AgentServiceCheck{HTTP: health.URL, Interval: "100ms", Timeout: "1s"},
	}
	if meta {
		reg.Meta = map[string]string{consul.DefaultMetaKey: in.UID}
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Agent().ServiceDeregister(id) })
	awaitPassing(t, c, in.Service, id, true)
}

// awaitPassing follows the service until id is (or is not) listed as passing.
func awaitPassing(t *testing.T, c *api.Client, service, id string, want bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := consulwatch.Watch(ctx, consulwatch.Config{}, consulwatch.Passing(c.Health(), service), func(entries []*api.ServiceEntry, _ *api.QueryMeta) bool {
		return slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool { return e.Service.ID == id }) == want
	})
	if err != nil {
		t.Fatalf("waiting for %s passing=%v: %v", id, want, err)
	}
}

func newRegistry(t *testing.T, c *api.Client, serviceID string) *consul.Registry {
	t.Helper()
	r, err := consul.New(consul.Config{Client: c, ServiceID: serviceID})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func listed(t *testing.T, c *api.Client, service, id string) (agent, catalog, passing bool) {
	t.Helper()
	svcs, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	_, agent = svcs[id]
	cat, _, err := c.Catalog().Service(service, "", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	catalog = slices.ContainsFunc(cat, func(s *api.CatalogService) bool { return s.ServiceID == id })
	h, _, err := c.Health().Service(service, "", true, &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	passing = slices.ContainsFunc(h, func(e *api.ServiceEntry) bool { return e.Service.ID == id })
	return agent, catalog, passing
}

func TestDeregisterRemovesOnlyThePodsInstancesEverywhere(t *testing.T) {
	c := consultest.Shared(t).Client(t, nil)
	tests := []struct {
		name      string
		in        func(a registry.Instance) registry.Instance
		serviceID bool
		meta      bool
	}{
		{"by pod UID in meta", func(a registry.Instance) registry.Instance { return a }, false, true},
		{"by address, no meta", func(a registry.Instance) registry.Instance {
			return registry.Instance{Namespace: "shop", Pod: "web-a", IP: a.IP, Service: a.Service}
		}, false, false},
		{"by explicit service ID", func(registry.Instance) registry.Instance { return registry.Instance{Namespace: "shop", Pod: "web-a"} }, true, false},
		{"without a service name", func(a registry.Instance) registry.Instance { return registry.Instance{UID: a.UID} }, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			podA, podB := pods(t)
			idA, idB := podA.Service+"-a", podA.Service+"-b"
			register(t, c, podA, idA, tt.meta)
			register(t, c, podB, idB, true)
			serviceID := ""
			if tt.serviceID {
				serviceID = idA
			}
			r := newRegistry(t, c, serviceID)
			ctx := context.Background()
			in := tt.in(podA)
			rc, err := r.Deregister(ctx, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(rc.Removed) != 1 || rc.Removed[0] != (registry.Ref{Service: podA.Service, ID: idA}) || rc.Version == "" {
				t.Fatalf("receipt = %+v", rc)
			}
			if err := r.AwaitPropagated(ctx, in, rc); err != nil {
				t.Fatal(err)
			}
			if a, cat, p := listed(t, c, podA.Service, idA); a || cat || p {
				t.Errorf("pod A still listed: agent=%v catalog=%v passing=%v", a, cat, p)
			}
			if a, cat, p := listed(t, c, podB.Service, idB); !a || !cat || !p {
				t.Errorf("pod B lost: agent=%v catalog=%v passing=%v", a, cat, p)
			}
		})
	}
}

// A pod IP is reused: the old pod's instance (its UID in meta) is still registered when a new
// pod with the same IP drains. Neither the new pod's drain nor a drain that knows only the IP
// may take the old pod's instance, and the old pod's drain still finds it.
func TestDeregisterLeavesAnotherPodsInstanceOnAReusedIP(t *testing.T) {
	c := consultest.Shared(t).Client(t, nil)
	ctx := context.Background()
	old, _ := pods(t)
	id := old.Service + "-old"
	register(t, c, old, id, true)
	r := newRegistry(t, c, "")
	reused := registry.Instance{Namespace: "shop", Pod: "web-new", UID: "uid-new-" + old.UID, IP: old.IP, Service: old.Service}
	for _, in := range []registry.Instance{reused, {Namespace: reused.Namespace, Pod: reused.Pod, IP: reused.IP, Service: reused.Service}} {
		rc, err := r.Deregister(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		if len(rc.Removed) != 0 {
			t.Fatalf("draining %s (uid %q, ip %s) removed %v: the instance belongs to uid %s", in.Pod, in.UID, in.IP, rc.Removed, old.UID)
		}
	}
	if a, cat, p := listed(t, c, old.Service, id); !a || !cat || !p {
		t.Fatalf("the old pod's instance is gone: agent=%v catalog=%v passing=%v", a, cat, p)
	}
	rc, err := r.Deregister(ctx, old)
	if err != nil || len(rc.Removed) != 1 {
		t.Fatalf("the old pod's own drain: %+v, %v", rc, err)
	}
}

func TestDeregisterIsIdempotent(t *testing.T) {
	c := consultest.Shared(t).Client(t, nil)
	podA, _ := pods(t)
	id := podA.Service + "-a"
	register(t, c, podA, id, true)
	r := newRegistry(t, c, "")
	ctx := context.Background()
	if _, err := r.Deregister(ctx, podA); err != nil {
		t.Fatal(err)
	}
	rc, err := r.Deregister(ctx, podA)
	if err != nil || len(rc.Removed) != 0 {
		t.Fatalf("second Deregister = %+v, %v; want empty receipt, no error", rc, err)
	}
	if err := r.AwaitPropagated(ctx, podA, rc); err != nil {
		t.Fatal(err)
	}
	// An explicit ID that is already gone is fine too.
	if _, err := newRegistry(t, c, id).Deregister(ctx, podA); err != nil {
		t.Fatal(err)
	}
}

func TestDeregisterCatalogOnlyInstance(t *testing.T) {
	c := consultest.Shared(t).Client(t, nil)
	podA, _ := pods(t)
	id := podA.Service + "-ext"
	_, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: "external-node", Address: "10.9.9.9",
		Service: &api.AgentService{ID: id, Service: podA.Service, Address: podA.IP, Port: 8080,
			Meta: map[string]string{consul.DefaultMetaKey: podA.UID}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRegistry(t, c, "")
	ctx := context.Background()
	rc, err := r.Deregister(ctx, podA)
	if err != nil || len(rc.Removed) != 1 {
		t.Fatalf("Deregister = %+v, %v", rc, err)
	}
	if err := r.AwaitPropagated(ctx, podA, rc); err != nil {
		t.Fatal(err)
	}
	if _, cat, _ := listed(t, c, podA.Service, id); cat {
		t.Error("catalog-only instance still in the catalog")
	}
}

// countingTransport counts requests to one path and records their raw queries.
type countingTransport struct {
	base    http.RoundTripper
	path    string
	mu      sync.Mutex
	queries []string
	sent    chan struct{} // one value per matching request, sent before it goes out
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == c.path {
		c.mu.Lock()
		c.queries = append(c.queries, req.URL.RawQuery)
		c.mu.Unlock()
		c.sent <- struct{}{}
	}
	return c.base.RoundTrip(req)
}

func TestAwaitPropagatedReturnsThroughABlockingQuery(t *testing.T) {
	agent := consultest.Shared(t)
	admin := agent.Client(t, nil)
	podA, _ := pods(t)
	id := podA.Service + "-a"
	register(t, admin, podA, id, true)
	ct := &countingTransport{path: "/v1/health/service/" + podA.Service, sent: make(chan struct{}, 100)}
	watcher := agent.Client(t, func(rt http.RoundTripper) http.RoundTripper { ct.base = rt; return ct })
	r := newRegistry(t, watcher, "")

	// The instance is still registered: AwaitPropagated must wait for the removal, not find it.
	_, meta, err := admin.Health().Service(podA.Service, "", true, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := registry.Receipt{Removed: []registry.Ref{{Service: podA.Service, ID: id}}, Version: consul.Version(meta.LastIndex)}
	returned := make(chan time.Time, 1)
	errc := make(chan error, 1)
	go func() {
		err := r.AwaitPropagated(context.Background(), podA, rc)
		returned <- time.Now()
		errc <- err
	}()
	<-ct.sent // first query: answers at once with the current state
	<-ct.sent // second query: carries the index and blocks on the server
	deregistered := time.Now()
	if err := admin.Agent().ServiceDeregister(id); err != nil {
		t.Fatal(err)
	}
	var at time.Time
	gomega.NewWithT(t).Eventually(returned).WithTimeout(10*time.Second).Should(gomega.Receive(&at), "AwaitPropagated returns after the deregistration")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Logf("returned %s after the deregistration", at.Sub(deregistered))
	ct.mu.Lock()
	defer ct.mu.Unlock()
	// A poll loop would have sent many queries; blocking queries send one per change.
	if len(ct.queries) > 4 {
		t.Errorf("%d queries, want at most 4 (blocking): %v", len(ct.queries), ct.queries)
	}
	for _, q := range ct.queries[1:] {
		if !strings.Contains(q, "index=") || !strings.Contains(q, "stale") || !strings.Contains(q, "passing") {
			t.Errorf("query %q is not a blocking stale passing query", q)
		}
	}
}

func TestVisible(t *testing.T) {
	c := consultest.Shared(t).Client(t, nil)
	podA, _ := pods(t)
	id, check := podA.Service+"-a", "ttl-"+podA.Service
	r := newRegistry(t, c, "")
	ctx := context.Background()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: podA.Service, Address: podA.IP, Meta: map[string]string{consul.DefaultMetaKey: podA.UID},
		Check: &api.AgentServiceCheck{CheckID: check, TTL: "1m"},
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Agent().ServiceDeregister(id) })
	if v, err := r.Visible(ctx, podA); err != nil || v {
		t.Fatalf("Visible before the check passes = %v, %v; want false", v, err)
	}
	if err := c.Agent().UpdateTTL(check, "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	awaitPassing(t, c, podA.Service, id, true)
	if v, err := r.Visible(ctx, podA); err != nil || !v {
		t.Fatalf("Visible once passing = %v, %v; want true", v, err)
	}
	if _, err := r.Visible(ctx, registry.Instance{UID: podA.UID}); err == nil {
		t.Error("Visible without a service name: want an error naming the annotation")
	}
}

// The helper never outlives its budget, whether the agent dies (connections refused) or freezes
// (connections accepted, never answered) in the middle of the drain. The fault is the helper's
// view of the shared agent, through a proxy the test breaks.
func TestDrainSurvivesAgentFailure(t *testing.T) {
	agent := consultest.Shared(t)
	c := agent.Client(t, nil)
	for _, fault := range []string{"kill", "freeze"} {
		t.Run(fault, func(t *testing.T) {
			podA, _ := pods(t)
			register(t, c, podA, podA.Service+"-a", true)
			proxy, err := tcpfault.New(agent.Addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = proxy.Close() })
			var once atomic.Bool
			faulty := clientTo(t, proxy.Addr, func(rt http.RoundTripper) http.RoundTripper {
				return roundTripFunc(func(req *http.Request) (*http.Response, error) {
					if strings.Contains(req.URL.Path, "/deregister/") && once.CompareAndSwap(false, true) {
						if fault == "kill" {
							proxy.Kill()
						} else {
							proxy.Freeze()
						}
					}
					return rt.RoundTrip(req)
				})
			})
			timing := prestop.Timing{MaxWait: 1500 * time.Millisecond, Quiet: 50 * time.Millisecond}
			start := time.Now()
			res := prestop.Run(context.Background(), timing, podA, prestop.Deps{Registries: []registry.Registry{newRegistry(t, faulty, "")}})
			elapsed := time.Since(start)
			if !once.Load() {
				t.Fatal("the fault was never injected")
			}
			if elapsed > res.Budget+500*time.Millisecond {
				t.Errorf("returned after %s; budget %s", elapsed, res.Budget)
			}
			if o := res.Registries[0].Outcome; o == prestop.Confirmed {
				t.Errorf("outcome %s with a dead agent", o)
			}
			t.Logf("%s: outcome %s after %s (%v)", fault, res.Registries[0].Outcome, elapsed, res.Registries[0].Err)
		})
	}
}

// clientTo is a client for addr with a wrapped transport, like consultest.Agent.Client.
func clientTo(t *testing.T, addr string, rt func(http.RoundTripper) http.RoundTripper) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Transport: rt(cfg.Transport)}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// BenchmarkDetectionLag measures deregistration applied → AwaitPropagated returns, against a
// real agent. Reported as p50-ms and max-ms; ns/op includes registering and waiting for health.
func BenchmarkDetectionLag(b *testing.B) {
	agent := consultest.Shared(b)
	c := agent.Client(b, nil)
	podA, _ := pods(b)
	ct := &countingTransport{path: "/v1/health/service/" + podA.Service, sent: make(chan struct{}, 1000)}
	r, err := consul.New(consul.Config{Client: agent.Client(b, func(rt http.RoundTripper) http.RoundTripper { ct.base = rt; return ct })})
	if err != nil {
		b.Fatal(err)
	}
	var lags []time.Duration
	for i := 0; b.Loop(); i++ {
		id := "bench-" + strconv.Itoa(i)
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: podA.Service, Address: podA.IP,
			Check: &api.AgentServiceCheck{CheckID: id, TTL: "1m", Status: api.HealthPassing}}); err != nil {
			b.Fatal(err)
		}
		_, meta, err := c.Health().Service(podA.Service, "", true, &api.QueryOptions{RequireConsistent: true})
		if err != nil {
			b.Fatal(err)
		}
		rc := registry.Receipt{Removed: []registry.Ref{{Service: podA.Service, ID: id}}, Version: consul.Version(meta.LastIndex)}
		returned := make(chan time.Time, 1)
		go func() {
			if err := r.AwaitPropagated(context.Background(), podA, rc); err != nil {
				b.Error(err)
			}
			returned <- time.Now()
		}()
		<-ct.sent
		<-ct.sent          // the blocking query is in flight
		sent := time.Now() // upper bound: the lag includes the deregistration request itself
		if err := c.Agent().ServiceDeregister(id); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, (<-returned).Sub(sent))
		for len(ct.sent) > 0 {
			<-ct.sent
		}
	}
	reportLags(b, lags)
}

func reportLags(b *testing.B, lags []time.Duration) {
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
}
