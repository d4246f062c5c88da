package controllers_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"
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
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
	"github.com/lastcall-dev/lastcall/registry/envflag"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

// One API server and one Consul agent serve the whole package; each test works in a namespace
// of its own and registers Consul instances under IDs of its own.
func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard()) // the tests assert on the API, not on logs
	code := m.Run()
	consultest.StopShared()
	apitest.StopShared()
	os.Exit(code)
}

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
func eventually(t *testing.T, within time.Duration, what string, cond func(g gomega.Gomega)) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(within).WithPolling(25*time.Millisecond).Should(gomega.Succeed(), what)
}

func newClient(t *testing.T, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
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
	return listedPod(t, c, ns, name, ip, map[string]string{managed.Label: "true", "app": "web"}, finalizers...)
}

// listedPod creates a running pod with the readiness gate and the given labels, and an
// EndpointSlice that lists it.
func listedPod(t *testing.T, c client.Client, ns, name, ip string, labels map[string]string, finalizers ...string) *corev1.Pod {
	t.Helper()
	pod := runningPod(t, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Finalizers: finalizers, Labels: labels,
		Annotations: map[string]string{managed.ServiceAnnotation(consul.Name): "web", managed.ServiceAnnotation("mem"): "web"}}}, ip)
	listInSlice(t, c, pod)
	return pod
}

// runningPod creates pod with one container, the readiness gate and the IP.
func runningPod(t *testing.T, c client.Client, pod *corev1.Pod, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	pod.Spec = corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}},
		ReadinessGates: []corev1.PodReadinessGate{{ConditionType: managed.Gate}}}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	// A patch, not an update: the gate may already have written its condition.
	orig := pod.DeepCopy()
	pod.Status.PodIP = ip
	pod.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	if err := c.Status().Patch(ctx, pod, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	return pod
}

// listInSlice creates an EndpointSlice that lists the pod, not ready, as the EndpointSlice
// controller would (envtest runs none).
func listInSlice(t *testing.T, c client.Client, pod *corev1.Pod) {
	t.Helper()
	ip := pod.Status.PodIP
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name + "-" + strings.ReplaceAll(ip, ".", "-"), Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}}},
	}
	if err := c.Create(context.Background(), slice); err != nil {
		t.Fatal(err)
	}
}

// consulID is the pod's instance ID: unique across the tests that share the agent.
func consulID(pod *corev1.Pod) string { return pod.Namespace + "-" + pod.Name }

func registerInConsul(t *testing.T, c *api.Client, pod *corev1.Pod, checkStatus string) {
	t.Helper()
	id := consulID(pod)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "web", Address: pod.Status.PodIP,
		Meta:  map[string]string{consul.DefaultMetaKey: string(pod.UID), consul.MetaPodName: pod.Name, consul.MetaPodNamespace: pod.Namespace},
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: checkStatus},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Agent().ServiceDeregister(id) })
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
	eventually(t, 15*time.Second, fmt.Sprintf("gate %s/%s", status, reason), func(g gomega.Gomega) {
		cond, err := gateCondition(c, ns, name)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cond).NotTo(gomega.BeNil())
		g.Expect(cond.Status).To(gomega.Equal(status))
		g.Expect(cond.Reason).To(gomega.Equal(reason))
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

// harness is one test's client of the shared control plane, the shared Consul agent when the
// test uses it, and controller settings.
type harness struct {
	cfg    *rest.Config
	k      client.Client
	consul *api.Client
	conf   controllers.Config
}

// configure makes the controllers' registry settings the way lastcall-controller does: from the
// table, through flags.
func configure(t *testing.T, table []registry.Adapter, args ...string) controllers.Config {
	t.Helper()
	conf := controllers.Config{Set: registry.NewSet(registry.Controller, table),
		Drain:     prestop.Drain{MaxWait: prestop.DefaultMaxWait, Reserve: prestop.DefaultReserve},
		GateRetry: 100 * time.Millisecond, SweepInterval: time.Hour, ObservePoll: 50 * time.Millisecond}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	b := envflag.Bind(fs, conf.Set.Vars())
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	var err error
	if conf.Registries, err = conf.Set.Select(registry.Env{Binary: registry.Controller, InCluster: true}); err != nil {
		t.Fatal(err)
	}
	return conf
}

// setup uses the shared API server (and the shared Consul agent when withConsul) and creates ns.
func setup(t *testing.T, ns string, withConsul bool) *harness {
	t.Helper()
	cfg := apitest.Shared(t)
	h := &harness{cfg: cfg, k: newClient(t, cfg), conf: configure(t, adapters.All())}
	if withConsul {
		agent := consultest.Shared(t)
		h.consul = agent.Client(t, nil)
		h.conf = configure(t, adapters.All(), "--consul-addr="+agent.Addr)
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
	gomega.NewWithT(t).Consistently(func(g gomega.Gomega) {
		cond, err := gateCondition(k, "gate", "web-1")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cond.Status).To(gomega.Equal(corev1.ConditionFalse), "gate opened for a critical instance")
	}).WithTimeout(500 * time.Millisecond).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
	passed := time.Now()
	if err := cc.Agent().UpdateTTL("ttl-"+consulID(pod), "", api.HealthPassing); err != nil {
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
	eventually(t, 15*time.Second, "instance deregistered and recorded", func(g gomega.Gomega) {
		p := &corev1.Pod{}
		g.Expect(k.Get(context.Background(), client.ObjectKeyFromObject(pod), p)).To(gomega.Succeed())
		g.Expect(inConsul(t, cc, consulID(pod))).To(gomega.BeFalse())
		g.Expect(p.Annotations).To(gomega.HaveKey(backstop.DeregisteredAnnotation(consul.Name)))
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
	if err := cc.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "sweep-anonymous", Name: "web",
		Meta: map[string]string{consul.DefaultMetaKey: "some-uid"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Agent().ServiceDeregister("sweep-anonymous") })
	for _, p := range []*corev1.Pod{forced, replaced} {
		if err := k.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	// "replaced" comes back under the same name with a new UID.
	_ = managedPod(t, k, "sweep", "replaced", "10.5.0.6")

	regs, err := h.conf.Set.Build(registry.Env{Binary: registry.Controller}, []string{consul.Name})
	if err != nil {
		t.Fatal(err)
	}
	reg := regs[0].(backstop.Catalog)
	if n, err := (&backstop.Sweeper{Registry: reg, Pods: failingReader{}}).Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep with a failing API removed %d (err %v); want 0", n, err)
	}
	n, err := (&backstop.Sweeper{Registry: reg, Pods: k}).Sweep(ctx) // k reads the API directly, uncached
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("removed %d instances, want 2", n)
	}
	for id, want := range map[string]bool{"sweep-alive": true, "sweep-forced": false, "sweep-replaced": false, "sweep-anonymous": true} {
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
	eventually(t, 10*time.Second, "warnings annotation", func(g gomega.Gomega) {
		got := &appsv1.Deployment{}
		g.Expect(k.Get(context.Background(), client.ObjectKeyFromObject(d), got)).To(gomega.Succeed())
		g.Expect(got.Annotations).To(gomega.HaveKeyWithValue(warnings.Annotation, "GraceTooShort,NoPreStopHook,NoReadinessGate,MaxUnavailableAtSmallScale"))
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
	// Nothing to wait for: the events must stay absent while the managed one's came at once.
	gomega.NewWithT(t).Consistently(func() int { return countEvents(t, k, "unsafe", "unmanaged", warnings.NoPreStopHook) }).
		WithTimeout(time.Second).WithPolling(100*time.Millisecond).Should(gomega.BeZero(), "events for an unmanaged Deployment")
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
	eventually(t, 15*time.Second, "event "+reason+" on "+name, func(g gomega.Gomega) {
		g.Expect(countEvents(t, k, ns, name, reason)).To(gomega.BeNumerically(">", 0))
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
	eventually(t, 15*time.Second, "consul deregistration by the backstop", func(g gomega.Gomega) {
		g.Expect(inConsul(t, cc, consulID(pod))).To(gomega.BeFalse())
	})
	update(t, k, pod, func(p *corev1.Pod) {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "web", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, FinishedAt: metav1.Now()}}}}
	})
	p := &corev1.Pod{}
	eventually(t, 15*time.Second, "timeline reported on the pod", func(g gomega.Gomega) {
		g.Expect(k.Get(ctx, client.ObjectKeyFromObject(pod), p)).To(gomega.Succeed())
		g.Expect(p.Annotations["lastcall.dev/drain-timeline"]).To(gomega.ContainSubstring(`"reported":true`))
	})
	awaitEvent(t, k, "observe", d.Name, "PodDrained")
	tl := p.Annotations["lastcall.dev/drain-timeline"]
	for _, stage := range []string{`{"registry":"endpoints","out":`, `{"registry":"consul","out":`} {
		if !strings.Contains(tl, stage) {
			t.Errorf("timeline lacks %s: %s", stage, tl)
		}
	}
	t.Logf("timeline: %s", tl)
	release(t, k, pod)
}

// A registry added to the table goes through the same path as consul and endpoints: configured
// from flags, built by Setup, asked by the gate, given a backstop and a sweeper because it has
// their methods, and a stage of the drain timeline.
func TestARegistryAddedToTheTableServesTheController(t *testing.T) {
	h := setup(t, "inmem", false)
	k := h.k
	mem := memory.New("mem", memory.Hang)
	h.conf = configure(t, append(adapters.All(), memory.Adapter(mem)), "--registries=auto,mem", "--mem-behaviour=immediate")
	h.conf.SweepInterval = 100 * time.Millisecond
	if !slices.Equal(h.conf.Registries, []string{"endpoints", "mem"}) {
		t.Fatalf("registries = %v, want endpoints and mem", h.conf.Registries)
	}
	// A pod that is gone but still registered: the sweeper's.
	mem.Register(registry.Instance{Namespace: "inmem", Pod: "ghost", UID: "ghost-uid", Service: "web"})
	startManager(t, h.cfg, h.conf)
	eventually(t, 15*time.Second, "ghost swept", func(g gomega.Gomega) { g.Expect(mem.Registered("ghost-uid")).To(gomega.BeFalse()) })

	pod := managedPod(t, k, "inmem", "web-1", "10.5.1.1", "test.lastcall.dev/hold")
	update(t, k, pod, func(p *corev1.Pod) { p.Annotations[managed.RegistriesAnnotation] = "endpoints,mem" })
	awaitGate(t, k, "inmem", "web-1", corev1.ConditionFalse, gate.ReasonNotVisible)
	mem.Register(registry.Instance{Namespace: "inmem", Pod: "web-1", UID: string(pod.UID), Service: "web"})
	awaitGate(t, k, "inmem", "web-1", corev1.ConditionTrue, gate.ReasonVisible)

	if err := k.Delete(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{}
	eventually(t, 15*time.Second, "backstop removed the pod and recorded it", func(g gomega.Gomega) {
		g.Expect(mem.Registered(string(pod.UID))).To(gomega.BeFalse())
		g.Expect(k.Get(context.Background(), client.ObjectKeyFromObject(pod), p)).To(gomega.Succeed())
		g.Expect(p.Annotations).To(gomega.HaveKey(backstop.DeregisteredAnnotation("mem")))
		g.Expect(p.Annotations["lastcall.dev/drain-timeline"]).To(gomega.ContainSubstring(`{"registry":"mem","out":`))
	})
	release(t, k, pod)
}
