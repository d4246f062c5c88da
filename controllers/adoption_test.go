package controllers_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/controllers/metrics/metricstest"
	"github.com/lastcall-dev/lastcall/controllers/warnings"
)

// asController returns cfg impersonating a ServiceAccount in ns that has the controller's
// ClusterRole as `make generate` writes it (config/rbac/role.yaml, which the chart's equals): the
// reconcilers must work with that RBAC and no more.
func asController(t *testing.T, cfg *rest.Config, ns string) *rest.Config {
	t.Helper()
	data, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		if err := yaml.Unmarshal([]byte(doc), role); err != nil {
			t.Fatal(err)
		}
		if role.Kind == "ClusterRole" {
			break
		}
	}
	if role.Kind != "ClusterRole" {
		t.Fatal("config/rbac/role.yaml has no ClusterRole")
	}
	k := newClient(t, cfg)
	role.ObjectMeta = metav1.ObjectMeta{Name: "lastcall-controller-" + ns}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "lastcall-controller"}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa.Name}}}
	create(t, k, role, sa, binding)
	t.Cleanup(func() {
		_ = k.Delete(context.Background(), binding)
		_ = k.Delete(context.Background(), role)
	})
	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa.Name}
	return as
}

// labelNamespace sets or removes (value "") the inject label on a namespace.
func labelNamespace(t *testing.T, k client.Client, name, value string) {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := k.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	orig := ns.DeepCopy()
	if value == "" {
		delete(ns.Labels, managed.InjectLabel)
	} else {
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels[managed.InjectLabel] = value
	}
	if err := k.Patch(context.Background(), ns, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
}

// adoptedDeployment is unsafeDeployment without any lastcall label: its template carries
// templateLabels (with app=name).
func adoptedDeployment(ns, name string, templateLabels map[string]string) *appsv1.Deployment {
	d := unsafeDeployment(ns)
	d.Name = name
	d.Labels = map[string]string{"app": name}
	d.Spec.Selector.MatchLabels = map[string]string{"app": name}
	d.Spec.Template.Labels = map[string]string{"app": name}
	for k, v := range templateLabels {
		d.Spec.Template.Labels[k] = v
	}
	return d
}

func create(t *testing.T, k client.Client, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := k.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
}

func noEvents(t *testing.T, k client.Client, ns, name string, reasons ...string) {
	t.Helper()
	gomega.NewWithT(t).Consistently(func() int {
		n := 0
		for _, r := range reasons {
			n += countEvents(t, k, ns, name, r)
		}
		return n
	}).WithTimeout(1500*time.Millisecond).WithPolling(100*time.Millisecond).Should(gomega.BeZero(), "events %v on %s", reasons, name)
}

func warningsRecorded(t *testing.T, k client.Client, obj client.Object) map[string]string {
	t.Helper()
	if err := k.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		t.Fatal(err)
	}
	return obj.GetAnnotations()
}

// With label-only adoption the workload carries no lastcall label: the unsafe-settings check
// still runs on it when its pod template or its namespace opts in, or when it owns managed pods,
// and skips the hook and gate checks for the first two (the webhook adds both to its pods).
func TestUnsafeSettingsOfWorkloadsAdoptedByLabelOnly(t *testing.T) {
	h := setup(t, "adopt", false)
	k := h.k
	namespace(t, k, "adopt-ns")
	labelNamespace(t, k, "adopt-ns", "true")
	namespace(t, k, "adopt-late")
	startManager(t, asController(t, h.cfg, "adopt"), h.conf)

	byTemplate := adoptedDeployment("adopt", "by-template", map[string]string{managed.InjectLabel: "true"})
	byNamespace := adoptedDeployment("adopt-ns", "by-namespace", nil)
	optedOut := adoptedDeployment("adopt-ns", "opted-out", map[string]string{managed.InjectLabel: "false"})
	late := adoptedDeployment("adopt-late", "late", nil)
	// A StatefulSet with neither, but whose pod carries lastcall by hand.
	set := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "adopt", Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "db"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "db:1"}}}}}}
	create(t, k, byTemplate, byNamespace, optedOut, late, set)

	for _, d := range []*appsv1.Deployment{byTemplate, byNamespace} {
		awaitEvent(t, k, d.Namespace, d.Name, warnings.GraceTooShort)
		awaitEvent(t, k, d.Namespace, d.Name, warnings.MaxUnavailableAtSmallScale)
		if got := warningsRecorded(t, k, d)[warnings.Annotation]; got != "GraceTooShort,MaxUnavailableAtSmallScale" {
			t.Errorf("%s: %s = %q, want the grace and maxUnavailable checks only (its pods get the hook and gate)", d.Name, warnings.Annotation, got)
		}
		if v, ok := gauge(t, "lastcall_unsafe_settings", map[string]string{"namespace": d.Namespace, "workload": d.Name, "check": warnings.GraceTooShort}); !ok || v != 1 {
			t.Errorf("%s: lastcall_unsafe_settings{check=GraceTooShort} = %v (present %v), want 1", d.Name, v, ok)
		}
	}
	noEvents(t, k, "adopt", byTemplate.Name, warnings.NoPreStopHook, warnings.NoReadinessGate)
	noEvents(t, k, "adopt-ns", optedOut.Name, warnings.GraceTooShort)
	noEvents(t, k, "adopt-late", late.Name, warnings.GraceTooShort)
	noEvents(t, k, "adopt", set.Name, warnings.NoPreStopHook)

	// The namespace is labelled after its workload exists.
	labelNamespace(t, k, "adopt-late", "true")
	awaitEvent(t, k, "adopt-late", late.Name, warnings.GraceTooShort)
	// And unlabelled: the workload is no longer lastcall's, its warnings and gauge are cleared.
	labelNamespace(t, k, "adopt-late", "")
	eventually(t, 15*time.Second, "warnings cleared", func(g gomega.Gomega) {
		g.Expect(warningsRecorded(t, k, late)).NotTo(gomega.HaveKey(warnings.Annotation))
		_, ok := gauge(t, "lastcall_unsafe_settings", map[string]string{"namespace": "adopt-late", "workload": late.Name, "check": warnings.GraceTooShort})
		g.Expect(ok).To(gomega.BeFalse())
	})

	// A managed pod owned by the StatefulSet makes it lastcall's.
	pod := managedPod(t, k, "adopt", "db-0", "10.5.4.1")
	update(t, k, pod, func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: set.Name, UID: set.UID, Controller: ptr.To(true)}}
	})
	awaitEvent(t, k, "adopt", set.Name, warnings.NoPreStopHook)
	awaitEvent(t, k, "adopt", set.Name, warnings.NoReadinessGate)
}

// The drain of a pod the webhook injected is reported on its Deployment, which carries no
// lastcall label (it was cached only when labelled).
func TestPodDrainedGoesToAWorkloadAdoptedByLabelOnly(t *testing.T) {
	h := setup(t, "adopt-drain", false)
	k := h.k
	ctx := context.Background()
	startManager(t, h.cfg, h.conf)
	d := adoptedDeployment("adopt-drain", "web", map[string]string{managed.InjectLabel: "true"})
	create(t, k, d)
	// As the webhook leaves it: managed label, gate, injected mark; owned by the ReplicaSet.
	pod := managedPod(t, k, "adopt-drain", "web-abc12-x", "10.5.4.2", "test.lastcall.dev/hold")
	update(t, k, pod, func(p *corev1.Pod) {
		p.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = "abc12"
		p.Labels[managed.InjectLabel] = "true"
		p.Annotations[managed.InjectedAnnotation] = "init-container"
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc12", UID: "rs-uid", Controller: ptr.To(true)}}
	})
	// The controller has seen the pod (before it disappears) once the gate answered.
	eventually(t, 15*time.Second, "gate condition", func(g gomega.Gomega) {
		cond, err := gateCondition(k, "adopt-drain", pod.Name)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cond).NotTo(gomega.BeNil())
	})
	if err := k.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	release(t, k, pod) // the pod disappears: its drain is reported
	awaitEvent(t, k, "adopt-drain", d.Name, "PodDrained")
	if n := countEvents(t, k, "adopt-drain", pod.Name, "PodDrained"); n != 0 {
		t.Errorf("%d PodDrained events on the pod, want them on the Deployment", n)
	}
}

// Pods the webhook should have injected and did not (it was down: failurePolicy Ignore) are
// reported once each, on their workload or themselves, and counted per namespace while they run.
func TestUninjectedPodsAreReported(t *testing.T) {
	h := setup(t, "uninj", false)
	k := h.k
	ctx := context.Background()
	labelNamespace(t, k, "uninj", "true")
	namespace(t, k, "uninj-pods")
	controller := asController(t, h.cfg, "uninj")
	stop := startManager(t, controller, h.conf)

	d := adoptedDeployment("uninj", "web", nil)
	create(t, k, d)
	pod := func(ns, name string, labels map[string]string, change func(p *corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}}
		if change != nil {
			change(p)
		}
		create(t, k, p)
		return p
	}
	missed := pod("uninj", "web-abc12-x", map[string]string{"app": "web", appsv1.DefaultDeploymentUniqueLabelKey: "abc12"}, func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc12", UID: "rs-uid", Controller: ptr.To(true)}}
	})
	bare := pod("uninj", "bare", nil, nil)
	pod("uninj", "opted-out", map[string]string{managed.InjectLabel: "false"}, nil)
	pod("uninj", "injected", map[string]string{managed.Label: "true"}, func(p *corev1.Pod) {
		p.Annotations = map[string]string{managed.InjectedAnnotation: "init-container"}
		p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: managed.Gate}}
	})
	optedIn := pod("uninj-pods", "opted-in", map[string]string{managed.InjectLabel: "true"}, nil)
	pod("uninj-pods", "plain", nil, nil)

	awaitEvent(t, k, "uninj", d.Name, warnings.NotInjected)
	awaitEvent(t, k, "uninj", bare.Name, warnings.NotInjected)
	awaitEvent(t, k, "uninj-pods", optedIn.Name, warnings.NotInjected)
	if e := eventOn(t, k, "uninj", d.Name, warnings.NotInjected); e.Type != corev1.EventTypeWarning || e.Related == nil || e.Related.Name != missed.Name {
		t.Errorf("event on the Deployment: %+v; want a Warning related to pod %s", e, missed.Name)
	}
	awaitUninjected(t, "uninj", 2)
	awaitUninjected(t, "uninj-pods", 1)
	for _, name := range []string{"opted-out", "injected"} {
		noEvents(t, k, "uninj", name, warnings.NotInjected)
	}
	noEvents(t, k, "uninj-pods", "plain", warnings.NotInjected)
	if got := warningsRecorded(t, k, missed)[warnings.Annotation]; got != warnings.NotInjected {
		t.Errorf("pod %s: %s = %q, want %s", missed.Name, warnings.Annotation, got, warnings.NotInjected)
	}

	if err := k.Delete(ctx, bare); err != nil {
		t.Fatal(err)
	}
	awaitUninjected(t, "uninj", 1)
	// Opting the pod out later takes it off the count.
	p := &corev1.Pod{}
	if err := k.Get(ctx, client.ObjectKeyFromObject(optedIn), p); err != nil {
		t.Fatal(err)
	}
	orig := p.DeepCopy()
	p.Labels[managed.InjectLabel] = "false"
	if err := k.Patch(ctx, p, client.MergeFrom(orig)); err != nil {
		t.Fatal(err)
	}
	awaitUninjected(t, "uninj-pods", 0)
	// Labelling the namespace later makes its unlabelled pods count; unlabelling it, no more.
	labelNamespace(t, k, "uninj-pods", "true")
	awaitUninjected(t, "uninj-pods", 1)
	awaitEvent(t, k, "uninj-pods", "plain", warnings.NotInjected)
	labelNamespace(t, k, "uninj-pods", "")
	awaitUninjected(t, "uninj-pods", 0)

	// A restarted controller (a new process: no gauge yet) counts again and sends nothing twice.
	stop()
	metrics.UninjectedPods.Reset()
	startManager(t, controller, h.conf)
	awaitUninjected(t, "uninj", 1)
	gomega.NewWithT(t).Consistently(func() int { return countEvents(t, k, "uninj", d.Name, warnings.NotInjected) }).
		WithTimeout(time.Second).WithPolling(100*time.Millisecond).Should(gomega.Equal(1), "NotInjected events on the Deployment after a restart")
}

func eventOn(t *testing.T, k client.Client, ns, name, reason string) eventsv1.Event {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if e.Regarding.Name == name && e.Reason == reason {
			return e
		}
	}
	t.Fatalf("no %s event on %s/%s", reason, ns, name)
	return eventsv1.Event{}
}

func awaitUninjected(t *testing.T, ns string, want float64) {
	t.Helper()
	eventually(t, 15*time.Second, "lastcall_uninjected_pods in "+ns, func(g gomega.Gomega) {
		v, _ := gauge(t, "lastcall_uninjected_pods", map[string]string{"namespace": ns})
		g.Expect(v).To(gomega.Equal(want))
	})
}

// gauge reads the gauge series whose labels include want, as the metrics endpoint serves it.
func gauge(t *testing.T, name string, want map[string]string) (float64, bool) {
	t.Helper()
	m := metricstest.Find(t, name, want)
	return m.GetGauge().GetValue(), m != nil
}
