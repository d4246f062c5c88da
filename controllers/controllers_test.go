package controllers_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/consul/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/backstop"
	"github.com/lastcall-dev/lastcall/controllers/gate"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/warnings"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

func init() { ctrl.SetLogger(logr.Discard()) } // the tests assert on the API, not on logs

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// startManager runs the controllers until the returned stop is called (or the test ends).
func startManager(t *testing.T, cfg *rest.Config, cc controllers.Config) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Cache: controllers.CacheOptions(),
		// Each test starts its own manager in one process: controller names repeat.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controllers.Setup(mgr, cc); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// eventually waits until cond holds; the registries are real, so their timing is not ours.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		<-tick.C
	}
	t.Fatalf("%s: not within %s (last error: %v)", what, within, last)
}

func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func consulRegistry(t *testing.T, agent *consultest.Agent) *consul.Registry {
	t.Helper()
	r, err := consul.New(consul.Config{Client: agent.Client(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func namespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
}

// managedPod creates a running, labelled pod with the readiness gate, and an EndpointSlice that
// lists it, as the EndpointSlice controller would.
func managedPod(t *testing.T, c client.Client, ns, name, ip string, finalizers ...string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Finalizers: finalizers,
			Labels:      map[string]string{managed.Label: "true", "app": "web"},
			Annotations: map[string]string{managed.ConsulServiceAnnotation: "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: managed.Gate}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-" + strings.ReplaceAll(ip, ".", "-"), Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name, UID: pod.UID}}},
	}
	if err := c.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
	return pod
}

func registerInConsul(t *testing.T, c *api.Client, pod *corev1.Pod, checkStatus string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: pod.Name, Name: "web", Address: pod.Status.PodIP,
		Meta:  map[string]string{consul.DefaultMetaKey: string(pod.UID), consul.MetaPodName: pod.Name, consul.MetaPodNamespace: pod.Namespace},
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + pod.Name, TTL: "10m", Status: checkStatus},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func gateCondition(c client.Client, ns, name string) (*corev1.PodCondition, error) {
	pod := &corev1.Pod{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, pod); err != nil {
		return nil, err
	}
	return managed.GateCondition(pod), nil
}

func awaitGate(t *testing.T, c client.Client, ns, name string, status corev1.ConditionStatus, reason string) {
	t.Helper()
	eventually(t, 15*time.Second, fmt.Sprintf("gate %s/%s", status, reason), func() (bool, error) {
		cond, err := gateCondition(c, ns, name)
		return err == nil && cond != nil && cond.Status == status && cond.Reason == reason, err
	})
}

func inConsul(t *testing.T, c *api.Client, id string) bool {
	t.Helper()
	svcs, _, err := c.Catalog().Service("web", "", &api.QueryOptions{RequireConsistent: true})
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(svcs, func(s *api.CatalogService) bool { return s.ServiceID == id })
}

// harness is one test's control plane, optional Consul agent, and controller settings.
type harness struct {
	cfg    *rest.Config
	k      client.Client
	agent  *consultest.Agent
	consul *api.Client
	conf   controllers.Config
}

// setup starts a real API server (and a real Consul agent when withConsul) and creates ns.
func setup(t *testing.T, ns string, withConsul bool) *harness {
	t.Helper()
	_, cfg := apitest.Start(t)
	h := &harness{cfg: cfg, k: newClient(t, cfg),
		conf: controllers.Config{GateRetry: 100 * time.Millisecond, SweepInterval: time.Hour, ObservePoll: 50 * time.Millisecond}}
	if withConsul {
		h.agent = consultest.Start(t)
		h.consul = h.agent.Client(t, nil)
		h.conf.Consul = consulRegistry(t, h.agent)
	}
	namespace(t, h.k, ns)
	return h
}

func TestGateOpensOnlyOnceConsulPasses(t *testing.T) {
	h := setup(t, "gate", true)
	k := h.k
	cc := h.consul
	startManager(t, h.cfg, h.conf)

	pod := managedPod(t, k, "gate", "web-1", "10.5.0.1")
	awaitGate(t, k, "gate", "web-1", corev1.ConditionFalse, gate.ReasonNotVisible)

	registerInConsul(t, cc, pod, api.HealthCritical)
	// Registered but failing its check: callers reading health/service?passing cannot find it,
	// so the gate stays shut through several retries.
	for range 5 {
		time.Sleep(100 * time.Millisecond) // one gate retry
		cond, err := gateCondition(k, "gate", "web-1")
		if err != nil || cond.Status != corev1.ConditionFalse {
			t.Fatalf("gate opened for a critical instance: %+v, %v", cond, err)
		}
	}
	passed := time.Now()
	if err := cc.Agent().UpdateTTL("ttl-web-1", "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	awaitGate(t, k, "gate", "web-1", corev1.ConditionTrue, gate.ReasonVisible)
	t.Logf("gate opened %s after the Consul check passed", time.Since(passed))
}

func TestGateReportsBadAnnotations(t *testing.T) {
	h := setup(t, "bad", false)
	k := h.k
	startManager(t, h.cfg, h.conf)
	pod := managedPod(t, k, "bad", "web-1", "10.5.0.9")
	pod.Annotations[managed.RegistriesAnnotation] = "dns"
	if err := k.Update(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	awaitGate(t, k, "bad", "web-1", corev1.ConditionFalse, gate.ReasonInvalidSettings)
	awaitEvent(t, k, "bad", "web-1", "Gate"+gate.ReasonInvalidSettings)
}

func TestBackstopDeregistersADeletingPod(t *testing.T) {
	h := setup(t, "backstop", true)
	k := h.k
	cc := h.consul
	startManager(t, h.cfg, h.conf)

	// A test finalizer keeps the deleting pod around, as a running container would.
	pod := managedPod(t, k, "backstop", "web-1", "10.5.0.2", "test.lastcall.dev/hold")
	registerInConsul(t, cc, pod, api.HealthPassing)
	awaitGate(t, k, "backstop", "web-1", corev1.ConditionTrue, gate.ReasonVisible)
	if err := k.Delete(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "instance deregistered and recorded", func() (bool, error) {
		p := &corev1.Pod{}
		err := k.Get(context.Background(), client.ObjectKeyFromObject(pod), p)
		return err == nil && !inConsul(t, cc, "web-1") && p.Annotations[backstop.DeregisteredAnnotation] != "", err
	})
	awaitGate(t, k, "backstop", "web-1", corev1.ConditionFalse, gate.ReasonTerminating)
	awaitEvent(t, k, "backstop", "web-1", "BackstopDeregistered")
	release(t, k, pod)
}

func release(t *testing.T, k client.Client, pod *corev1.Pod) {
	t.Helper()
	update(t, k, pod, func(p *corev1.Pod) { p.Finalizers = nil })
}

// update changes the pod (metadata and spec, or status when only status changed) and retries
// on conflicts with the controllers' own writes.
func update(t *testing.T, k client.Client, pod *corev1.Pod, change func(*corev1.Pod)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p := &corev1.Pod{}
		if err := k.Get(context.Background(), client.ObjectKeyFromObject(pod), p); err != nil {
			return err
		}
		before := p.Status.DeepCopy()
		change(p)
		if !equality.Semantic.DeepEqual(before, &p.Status) {
			return k.Status().Update(context.Background(), p)
		}
		return k.Update(context.Background(), p)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// failingReader answers every Get with a server error: the sweeper must keep every instance.
type failingReader struct{ client.Reader }

func (failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return fmt.Errorf("etcdserver: request timed out")
}

func TestSweeperRemovesOnlyInstancesOfGonePods(t *testing.T) {
	h := setup(t, "sweep", true)
	k := h.k
	cc := h.consul
	ctx := context.Background()

	alive := managedPod(t, k, "sweep", "alive", "10.5.0.3")
	forced := managedPod(t, k, "sweep", "forced", "10.5.0.4")
	replaced := managedPod(t, k, "sweep", "replaced", "10.5.0.5")
	for _, p := range []*corev1.Pod{alive, forced, replaced} {
		registerInConsul(t, cc, p, api.HealthPassing)
	}
	// An instance without pod name/namespace meta: the sweeper cannot tell, so it stays.
	if err := cc.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "anonymous", Name: "web",
		Meta: map[string]string{consul.DefaultMetaKey: "some-uid"}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{forced, replaced} {
		if err := k.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	// "replaced" comes back under the same name with a new UID.
	_ = managedPod(t, k, "sweep", "replaced", "10.5.0.6")

	reg := h.conf.Consul
	if n, err := (&backstop.Sweeper{Consul: reg, Pods: failingReader{}}).Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep with a failing API removed %d (err %v); want 0", n, err)
	}
	n, err := (&backstop.Sweeper{Consul: reg, Pods: k}).Sweep(ctx) // k reads the API directly, uncached
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d instances, want 2", n)
	}
	for id, want := range map[string]bool{"alive": true, "forced": false, "replaced": false, "anonymous": true} {
		if got := inConsul(t, cc, id); got != want {
			t.Errorf("%s in Consul = %v, want %v", id, got, want)
		}
	}
}

func TestRestartedControllerResumesFromAPIState(t *testing.T) {
	h := setup(t, "restart", true)
	k := h.k
	cc := h.consul

	stopA := startManager(t, h.cfg, h.conf)
	pod := managedPod(t, k, "restart", "web-1", "10.5.0.7")
	d := unsafeDeployment("restart")
	if err := k.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	awaitGate(t, k, "restart", "web-1", corev1.ConditionFalse, gate.ReasonNotVisible)
	awaitEvent(t, k, "restart", d.Name, warnings.NoPreStopHook)
	stopA()

	// While no controller runs, the pod becomes callable.
	registerInConsul(t, cc, pod, api.HealthPassing)
	startManager(t, h.cfg, h.conf)
	awaitGate(t, k, "restart", "web-1", corev1.ConditionTrue, gate.ReasonVisible)
	// The warnings it already sent are recorded on the Deployment: none is sent twice.
	if n := countEvents(t, k, "restart", d.Name, warnings.NoPreStopHook); n != 1 {
		t.Errorf("%d %s events after the restart, want 1", n, warnings.NoPreStopHook)
	}
}

func unsafeDeployment(ns string) *appsv1.Deployment {
	one := intstr.FromInt32(1)
	labels := map[string]string{managed.Label: "true", "app": "risky"}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "risky", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &one}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}},
		},
	}
}

func TestUnsafeSettingsProduceEvents(t *testing.T) {
	h := setup(t, "unsafe", false)
	k := h.k
	startManager(t, h.cfg, h.conf)
	d := unsafeDeployment("unsafe")
	if err := k.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{warnings.GraceTooShort, warnings.NoPreStopHook, warnings.NoReadinessGate, warnings.MaxUnavailableAtSmallScale} {
		awaitEvent(t, k, "unsafe", d.Name, reason)
	}
	eventually(t, 10*time.Second, "warnings annotation", func() (bool, error) {
		got := &appsv1.Deployment{}
		err := k.Get(context.Background(), client.ObjectKeyFromObject(d), got)
		return err == nil && got.Annotations[warnings.Annotation] == "GraceTooShort,NoPreStopHook,NoReadinessGate,MaxUnavailableAtSmallScale", err
	})
	// An unlabelled Deployment is not lastcall's business: no events.
	other := unsafeDeployment("unsafe")
	other.Name = "unmanaged"
	delete(other.Labels, managed.Label)
	other.Spec.Selector.MatchLabels = map[string]string{"app": "risky"}
	other.Spec.Template.Labels = map[string]string{"app": "risky"}
	if err := k.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // nothing to wait for: absence of events
	if n := countEvents(t, k, "unsafe", "unmanaged", warnings.NoPreStopHook); n != 0 {
		t.Errorf("%d events for an unmanaged Deployment", n)
	}
}

func countEvents(t *testing.T, k client.Client, ns, name, reason string) int {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			n++
		}
	}
	return n
}

func awaitEvent(t *testing.T, k client.Client, ns, name, reason string) {
	t.Helper()
	eventually(t, 15*time.Second, "event "+reason+" on "+name, func() (bool, error) {
		return countEvents(t, k, ns, name, reason) > 0, nil
	})
}

func TestObserverPublishesTheDrainTimeline(t *testing.T) {
	h := setup(t, "observe", true)
	k := h.k
	cc := h.consul
	ctx := context.Background()
	startManager(t, h.cfg, h.conf)

	d := unsafeDeployment("observe")
	if err := k.Create(ctx, d); err != nil {
		t.Fatal(err)
	}
	pod := managedPod(t, k, "observe", "risky-abc12-x", "10.5.0.8", "test.lastcall.dev/hold")
	// Owned by the Deployment's ReplicaSet, as the Deployment controller would make it.
	update(t, k, pod, func(p *corev1.Pod) {
		p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = "abc12"
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "risky-abc12", UID: "rs-uid", Controller: ptr.To(true)}}
	})
	registerInConsul(t, cc, pod, api.HealthPassing)
	slice := &discoveryv1.EndpointSlice{}
	if err := k.Get(ctx, types.NamespacedName{Namespace: "observe", Name: "risky-abc12-x-10-5-0-8"}, slice); err != nil {
		t.Fatal(err)
	}
	slice.Endpoints[0].Conditions.Ready = ptr.To(true)
	if err := k.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}

	if err := k.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// The EndpointSlice controller and the kubelet, played by the test.
	slice.Endpoints[0].Conditions.Ready = ptr.To(false)
	if err := k.Update(ctx, slice); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "consul deregistration by the backstop", func() (bool, error) { return !inConsul(t, cc, pod.Name), nil })
	update(t, k, pod, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "web", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, FinishedAt: metav1.Now()}}}}
	})
	p := &corev1.Pod{}
	eventually(t, 15*time.Second, "timeline reported on the pod", func() (bool, error) {
		err := k.Get(ctx, client.ObjectKeyFromObject(pod), p)
		return err == nil && strings.Contains(p.Annotations["lastcall.dev/drain-timeline"], `"reported":true`), err
	})
	awaitEvent(t, k, "observe", d.Name, "PodDrained")
	t.Logf("timeline: %s", p.Annotations["lastcall.dev/drain-timeline"])
	release(t, k, pod)
}
