package dataplane_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/rollout"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	apitest.Main(m)
}

// fakeAgent is lastcall-node's HTTP API over verdicts the test sets; unknown IPs are Routed.
type fakeAgent struct {
	node     string
	close    func() // stops serving: polls fail as when the agent's pod is gone
	mu       sync.Mutex
	verdicts map[string]string
	stopped  map[string]time.Time
	asked    []agent.WaitRequest
}

func (a *fakeAgent) set(ip, verdict string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.verdicts[ip] = verdict
	if verdict == "NotRouted" {
		a.stopped[ip] = time.Now()
	}
}

func (a *fakeAgent) stoppedAt(ip string) time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopped[ip]
}

// requests returns the wait requests that asked for ip.
func (a *fakeAgent) requests(ip string) []agent.WaitRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []agent.WaitRequest
	for _, r := range a.asked {
		for _, t := range r.IPs {
			if t.IP == ip {
				out = append(out, r)
			}
		}
	}
	return out
}

func (a *fakeAgent) answer(req agent.WaitRequest) (agent.Answer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := time.Now()
	ans := agent.Answer{Node: a.node, Mode: "iptables", CheckedAt: &now}
	done, anyDone := true, false
	for _, t := range req.IPs {
		v := a.verdicts[t.IP]
		if v == "" {
			v = "Routed"
		}
		ip := agent.IPAnswer{IP: t.IP, Verdict: v, CheckedAt: &now}
		if v == "NotRouted" {
			at := a.stopped[t.IP]
			ip.NotRoutedAt = &at
		}
		final := v == "NotRouted" || v == "LastBackend"
		done, anyDone = done && final, anyDone || final
		ans.IPs = append(ans.IPs, ip)
	}
	ans.Done = done
	if req.Until == agent.UntilAny {
		return ans, anyDone
	}
	return ans, done
}

// ServeHTTP long-polls as the real agent does, looking again every 20ms.
func (a *fakeAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != agent.PathWait {
		http.NotFound(w, r)
		return
	}
	var req agent.WaitRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.mu.Lock()
	a.asked = append(a.asked, req)
	a.mu.Unlock()
	timeout, err := time.ParseDuration(req.Timeout)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	deadline := time.Now().Add(timeout)
	for {
		ans, ok := a.answer(req)
		if !ok && time.Now().Before(deadline) {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(20 * time.Millisecond):
				continue
			}
		}
		ans.TimedOut = !ok
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
		return
	}
}

// startAgents serves one fake agent per node on loopback, and dials them at the node IPs
// 198.51.100.1, .2, ... that the agents' EndpointSlice lists (it may not list loopback).
func startAgents(t *testing.T, nodes ...string) (agents []*fakeAgent, nodeIPs []string, dial func(context.Context, string, string) (net.Conn, error)) {
	t.Helper()
	route := map[string]string{}
	for i, name := range nodes {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := &fakeAgent{node: name, verdicts: map[string]string{}, stopped: map[string]time.Time{}}
		srv := &http.Server{Handler: a, ReadHeaderTimeout: time.Second}
		go func() {
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("fake agent %s: %v", name, err)
			}
		}()
		a.close = func() { _ = srv.Close() }
		t.Cleanup(a.close)
		ip := fmt.Sprintf("198.51.100.%d", i+1)
		route[ip] = l.Addr().String()
		agents, nodeIPs = append(agents, a), append(nodeIPs, ip)
	}
	var d net.Dialer
	dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		to, ok := route[host]
		if !ok {
			return nil, fmt.Errorf("no fake agent at %s", addr)
		}
		return d.DialContext(ctx, network, to)
	}
	return agents, nodeIPs, dial
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

type env struct {
	t  *testing.T
	k  client.Client
	ns string
}

func (e env) create(obj client.Object) {
	e.t.Helper()
	if err := e.k.Create(context.Background(), obj); err != nil {
		e.t.Fatal(err)
	}
}

func (e env) node(name string, ready bool) {
	e.t.Helper()
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	e.create(n)
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
	if err := e.k.Status().Update(context.Background(), n); err != nil {
		e.t.Fatal(err)
	}
}

// pod creates a managed pod held by a finalizer, so that it stays while being deleted.
func (e env) pod(name, ip string) *corev1.Pod {
	e.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name, Finalizers: []string{"lastcall.dev/test-hold"},
			Labels: map[string]string{managed.Label: "true"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}
	e.create(p)
	p.Status.PodIP, p.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if err := e.k.Status().Update(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// slice lists pods of a Service as the EndpointSlice controller does; ready says which are.
func (e env) slice(service string, pods []*corev1.Pod, ready []bool) {
	e.t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: e.ns, Name: service + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: service}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](8080)}},
	}
	for i, p := range pods {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{p.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready[i]), Serving: ptr.To(true), Terminating: ptr.To(!ready[i])},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: e.ns, Name: p.Name, UID: p.UID}})
	}
	e.create(s)
}

func (e env) condition(g gomega.Gomega, name string) *corev1.PodCondition {
	p := &corev1.Pod{}
	g.Expect(e.k.Get(context.Background(), types.NamespacedName{Namespace: e.ns, Name: name}, p)).To(gomega.Succeed())
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == endpoints.DataplaneCondition {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// await waits for the pod's condition to have status and reason, and returns it.
func (e env) await(name string, status corev1.ConditionStatus, reason string) corev1.PodCondition {
	e.t.Helper()
	var got corev1.PodCondition
	gomega.NewWithT(e.t).Eventually(func(g gomega.Gomega) {
		c := e.condition(g, name)
		g.Expect(c).NotTo(gomega.BeNil())
		g.Expect(c.Status).To(gomega.Equal(status), c.Message)
		g.Expect(c.Reason).To(gomega.Equal(reason), c.Message)
		got = *c
	}).WithTimeout(15*time.Second).WithPolling(25*time.Millisecond).Should(gomega.Succeed(), "%s %s/%s", name, status, reason)
	return got
}

func (e env) delete(p *corev1.Pod) {
	e.t.Helper()
	if err := e.k.Delete(context.Background(), p); err != nil {
		e.t.Fatal(err)
	}
}

// The nodes are cluster-wide, so the cases run in order in one test: first every node has an
// agent, then a node without one and a NotReady node join.
func TestConditionFromRealAgentAPI(t *testing.T) {
	cfg := apitest.Shared(t)
	k, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	e := env{t: t, k: k, ns: "dp"}
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dp"}})
	e.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "dp-agents"}})

	agents, addrs, dial := startAgents(t, "dp-fast", "dp-slow")
	fast, slow := agents[0], agents[1]
	e.node("dp-fast", true)
	e.node("dp-slow", true)
	agentSlice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "dp-agents", Name: "lastcall-node-x", Labels: map[string]string{discoveryv1.LabelServiceName: "lastcall-node"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, a := range agents {
		agentSlice.Endpoints = append(agentSlice.Endpoints, discoveryv1.Endpoint{Addresses: []string{addrs[i]}, NodeName: ptr.To(a.node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	e.create(agentSlice)

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: controllers.CacheOptions()})
	if err != nil {
		t.Fatal(err)
	}
	conf := controllers.Config{Set: registry.NewSet(registry.Controller, adapters.All()), ObservePoll: time.Hour, GateRetry: time.Hour, SweepInterval: time.Hour,
		Dataplane: dataplane.Options{Enabled: true, Port: dataplane.DefaultPort, Service: "lastcall-node", Namespace: "dp-agents", NodeTimeout: time.Second, Dial: dial}}
	if err := controllers.Setup(mgr, conf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	t.Run("a deleting pod still ready in its slices is marked Waiting at once", func(t *testing.T) {
		// lastcall-prestop reads a pod without the condition --settle after its slices changed as
		// one without agents: the condition must be there before the slices change.
		e := env{t: t, k: k, ns: "dp"}
		early := e.pod("web-early", "10.6.0.9")
		e.slice("early", []*corev1.Pod{early}, []bool{true})
		e.delete(early)
		c := e.await("web-early", corev1.ConditionFalse, endpoints.ReasonWaiting)
		if c.Message != "waiting for the EndpointSlices to show the pod not ready" {
			t.Errorf("message %q", c.Message)
		}
	})

	t.Run("a slow node keeps the drain waiting, then every node stopped", func(t *testing.T) {
		e := env{t: t, k: k, ns: "dp"}
		web1, web2 := e.pod("web-1", "10.6.0.1"), e.pod("web-2", "10.6.0.2")
		e.slice("web", []*corev1.Pod{web1, web2}, []bool{false, true})
		fast.set("10.6.0.1", "NotRouted")
		e.delete(web1)
		// The drain start is written at once ("0 of 2"), the fast node's answer within a second.
		e.await("web-1", corev1.ConditionFalse, endpoints.ReasonWaiting)
		gomega.NewWithT(t).Eventually(func(g gomega.Gomega) string { return e.condition(g, "web-1").Message }).
			WithTimeout(5 * time.Second).WithPolling(25 * time.Millisecond).Should(gomega.Equal("1 of 2 nodes stopped routing; waiting for dp-slow"))
		reqs := slow.requests("10.6.0.1")
		if len(reqs) == 0 {
			t.Fatal("the slow node was never asked")
		}
		want := agent.PortJSON{Service: "dp/web", Name: "http", Protocol: "TCP", Port: 8080}
		if got := reqs[0].IPs[0].Ports; len(got) != 1 || got[0] != want || reqs[0].Until != agent.UntilAny {
			t.Errorf("request %+v, want the Service port %+v and until any", reqs[0], want)
		}
		slow.set("10.6.0.1", "NotRouted")
		c := e.await("web-1", corev1.ConditionTrue, endpoints.ReasonAllNodesStopped)
		at := slow.stoppedAt("10.6.0.1")
		if !strings.HasPrefix(c.Message, "2 of 2 nodes stopped routing at "+at.UTC().Format(time.RFC3339Nano)+"; slowest dp-slow (+") {
			t.Errorf("message %q, want the slow node's time %s", c.Message, at.UTC().Format(time.RFC3339Nano))
		}
		if !c.LastTransitionTime.Time.Equal(at.Truncate(time.Second)) {
			t.Errorf("lastTransitionTime %s, want the slowest node's %s", c.LastTransitionTime, at)
		}
		// The drain timeline gets the stage, from the condition, with the slowest node.
		gomega.NewWithT(t).Eventually(func(g gomega.Gomega) {
			p := &corev1.Pod{}
			g.Expect(k.Get(context.Background(), types.NamespacedName{Namespace: "dp", Name: "web-1"}, p)).To(gomega.Succeed())
			g.Expect(rollout.Parse(p).Registries).To(gomega.ContainElement(rollout.Stage{Registry: rollout.DataplaneStage, Out: at.UTC(), Slowest: "dp-slow"}))
		}).WithTimeout(5 * time.Second).WithPolling(25 * time.Millisecond).Should(gomega.Succeed())
	})

	t.Run("the last backend ends the wait once no ready endpoint is left", func(t *testing.T) {
		e := env{t: t, k: k, ns: "dp"}
		solo := e.pod("solo-1", "10.6.0.5")
		e.slice("solo", []*corev1.Pod{solo}, []bool{false})
		fast.set("10.6.0.5", "LastBackend")
		slow.set("10.6.0.5", "NotRouted")
		e.delete(solo)
		c := e.await("solo-1", corev1.ConditionTrue, endpoints.ReasonLastBackend)
		t.Log(c.Message)
	})

	t.Run("nodes without an agent or NotReady are named", func(t *testing.T) {
		e := env{t: t, k: k, ns: "dp"}
		e.node("dp-bare", true)
		e.node("dp-down", false)
		web3, web4 := e.pod("web-3", "10.6.0.3"), e.pod("web-4", "10.6.0.4")
		e.slice("web3", []*corev1.Pod{web3, web4}, []bool{false, true})
		fast.set("10.6.0.3", "NotRouted")
		slow.set("10.6.0.3", "NotRouted")
		e.delete(web3)
		c := e.await("web-3", corev1.ConditionUnknown, endpoints.ReasonNodesUnconfirmed)
		at := slow.stoppedAt("10.6.0.3")
		if fa := fast.stoppedAt("10.6.0.3"); fa.After(at) {
			at = fa
		}
		want := "2 of 4 nodes confirmed at " + at.UTC().Format(time.RFC3339Nano) + "; no answer from dp-bare (no agent), dp-down (NotReady)"
		if c.Message != want {
			t.Errorf("message %q\nwant    %q", c.Message, want)
		}
	})

	t.Run("an agent that stops answering is named after the node timeout", func(t *testing.T) {
		e := env{t: t, k: k, ns: "dp"}
		fast.close()
		web5, web6 := e.pod("web-5", "10.6.0.7"), e.pod("web-6", "10.6.0.8")
		e.slice("web5", []*corev1.Pod{web5, web6}, []bool{false, true})
		slow.set("10.6.0.7", "NotRouted")
		deleted := time.Now()
		e.delete(web5)
		c := e.await("web-5", corev1.ConditionUnknown, endpoints.ReasonNodesUnconfirmed)
		if waited := time.Since(deleted); waited < time.Second {
			t.Errorf("unconfirmed after %s, before the 1s node timeout", waited)
		}
		if !strings.Contains(c.Message, "1 of 4 nodes confirmed at ") || !strings.Contains(c.Message, "dp-fast (error: ") {
			t.Errorf("message %q does not name the failing agent", c.Message)
		}
	})
}
