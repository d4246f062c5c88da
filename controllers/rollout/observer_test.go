package rollout

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics/metricstest"
)

func TestNextLook(t *testing.T) {
	poll := 250 * time.Millisecond
	tests := []struct {
		age, poll, want time.Duration
	}{
		{0, poll, poll},
		{2 * time.Second, poll, poll},
		{8 * time.Second, poll, time.Second},
		{time.Minute, poll, MaxLook},
		{time.Minute, 10 * time.Second, 10 * time.Second}, // a poll above MaxLook is kept
	}
	for _, tt := range tests {
		if got := NextLook(tt.age, tt.poll); got != tt.want {
			t.Errorf("NextLook(%s, %s) = %s, want %s", tt.age, tt.poll, got, tt.want)
		}
	}
}

// A pod that disappears before its timeline is reported is reported by a reconcile, which
// retries when it cannot read the workload yet (the informer's delete handler did that read
// itself, once, and reported a failed read as a plain deletion on the pod).
func TestAPodThatDisappearedIsReportedByAReconcileThatRetries(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{managed.Label: "true"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Labels: labels, Generation: 2},
		Spec:   appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 1}}
	pod := deletingPod(30)
	pod.Namespace, pod.Name, pod.UID = "shop", "web-abc12-x", "uid-1"
	pod.Labels = map[string]string{managed.Label: "true", appsv1.DefaultDeploymentUniqueLabelKey: "abc12"}
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc12", UID: "rs", Controller: ptr.To(true)}}

	failures := 1
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(d).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*appsv1.Deployment); ok && failures > 0 {
				failures--
				return errors.New("the cache is not reachable")
			}
			return cl.Get(ctx, key, obj, opts...)
		}}).Build()
	rec := events.NewFakeRecorder(10)
	o := &Observer{Client: c, Recorder: rec, Poll: time.Second, Now: func() time.Time { return t0.Add(20 * time.Second) }}

	if !o.deleted(pod) {
		t.Fatal("a managed pod deleted before its report must be kept for a reconcile")
	}
	req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)}
	if _, err := o.Reconcile(context.Background(), req); err == nil {
		t.Fatal("Reconcile with the workload unreadable: no error, so nothing retries it")
	}
	if len(rec.Events) != 0 {
		t.Fatalf("reported before the workload could be read: %s", <-rec.Events)
	}
	if _, err := o.Reconcile(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if len(rec.Events) != 1 {
		t.Fatalf("%d events, want 1", len(rec.Events))
	}
	if ev := <-rec.Events; !strings.Contains(ev, "PodDrained") || !strings.Contains(ev, CauseRollingUpdate) {
		t.Errorf("event %q: want PodDrained for a rolling update", ev)
	}
	if _, err := o.Reconcile(context.Background(), req); err != nil || len(rec.Events) != 0 {
		t.Errorf("a third reconcile reported again (err %v)", err)
	}
	reported := pod.DeepCopy()
	reported.Annotations = map[string]string{Annotation: Timeline{Reported: true}.Encode()}
	if o.deleted(reported) {
		t.Error("a pod whose timeline was reported needs no reconcile")
	}
}

// A drained pod's helper report, read from its container's termination message, goes into the
// annotation, the PodDrained Event and lastcall_prestop_open_connections.
func TestTheHelpersReportReachesTheTimelineTheEventAndTheMetric(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "report", Name: "web", Labels: map[string]string{managed.Label: "true"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](1)}, Status: appsv1.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2}}
	pod := deletingPod(30)
	pod.Namespace, pod.Name, pod.UID = "report", "web-abc12-x", "uid-2"
	pod.Finalizers = []string{"test/keep"} // the fake client keeps no deleting object without one
	pod.Labels = map[string]string{managed.Label: "true", appsv1.DefaultDeploymentUniqueLabelKey: "abc12"}
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-abc12", UID: "rs", Controller: ptr.To(true)}}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{
		{Name: "web", State: ended("app: bye\n" + reportLine(ptr.To(2), 3210))},
		{Name: "sidecar", State: ended("")},
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(d, pod).Build()
	rec := events.NewFakeRecorder(10)
	o := &Observer{Client: c, Recorder: rec, Poll: time.Second, Now: func() time.Time { return t0.Add(6 * time.Second) }}

	if _, err := o.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)}); err != nil {
		t.Fatal(err)
	}
	if len(rec.Events) != 1 {
		t.Fatalf("%d events, want 1", len(rec.Events))
	}
	if ev, want := <-rec.Events, "helper returned after 3.21s of its 20s budget, quiet for 1.2s (traffic), 2 connections still open"; !strings.Contains(ev, want) {
		t.Errorf("event %q lacks %q", ev, want)
	}
	got := &corev1.Pod{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(pod), got); err != nil {
		t.Fatal(err)
	}
	tl := Parse(got)
	if !tl.Reported || len(tl.Helpers) != 1 || tl.Helpers[0].Container != "web" || tl.Helpers[0].Open == nil || *tl.Helpers[0].Open != 2 {
		t.Errorf("annotation %s: want it reported, with web's report of 2 open connections", got.Annotations[Annotation])
	}
	if count, sum := histogram(t, "lastcall_prestop_open_connections", "report", "web"); count != 1 || sum != 2 {
		t.Errorf("lastcall_prestop_open_connections{namespace=report,workload=web}: %d observations summing %g, want 1 of 2", count, sum)
	}
}

// histogram reads a histogram series of the controller's registry.
func histogram(t *testing.T, name, namespace, workload string) (count uint64, sum float64) {
	t.Helper()
	h := metricstest.Find(t, name, map[string]string{"namespace": namespace, "workload": workload}).GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

// A pod that disappears while its report goes out is reported once: the patch that would mark it
// reported finds it gone, and its deletion (seen before or after) must not report it again.
func TestAPodReportedAsItDisappearsIsReportedOnce(t *testing.T) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	newPod := func(uid types.UID) *corev1.Pod {
		pod := deletingPod(30)
		pod.Namespace, pod.Name, pod.UID = "shop", "web-abc12-"+string(uid), uid
		pod.Labels = map[string]string{managed.Label: "true"}
		pod.Finalizers = []string{"test.lastcall.dev/hold"} // the fake client keeps a deleting pod only with one
		terminate(pod, 0, t0.Add(5*time.Second), 0)
		terminate(pod, 1, t0.Add(5*time.Second), 0)
		return pod
	}
	for _, deletionSeen := range []string{"after the report", "before the report"} {
		t.Run("deletion seen "+deletionSeen, func(t *testing.T) {
			pod := newPod(types.UID("uid-" + strings.ReplaceAll(deletionSeen, " ", "-")))
			c := fake.NewClientBuilder().WithScheme(s).WithObjects(pod).WithInterceptorFuncs(interceptor.Funcs{
				Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
					return apierrors.NewNotFound(corev1.Resource("pods"), pod.Name)
				}}).Build()
			rec := events.NewFakeRecorder(10)
			o := &Observer{Client: c, Recorder: rec, Poll: time.Second, Now: func() time.Time { return t0.Add(20 * time.Second) }}
			req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)}
			if deletionSeen == "before the report" {
				// the informer saw the deletion while the reconcile already held the pod
				o.deleted(pod)
			}
			if _, err := o.Reconcile(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			if deletionSeen == "after the report" && o.deleted(pod) {
				t.Error("the deletion of a pod just reported asks for another report")
			}
			gone := pod.DeepCopy()
			gone.Finalizers = nil
			if err := c.Update(context.Background(), gone); err != nil { // the last finalizer goes: the pod is gone
				t.Fatal(err)
			}
			if _, err := o.Reconcile(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			if n := len(rec.Events); n != 1 {
				t.Errorf("%d PodDrained Events, want 1", n)
			}
			if len(o.reported) != 0 {
				t.Errorf("marks left: %v", o.reported)
			}
		})
	}
}
