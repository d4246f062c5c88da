package rollout

import (
	"context"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
)

// SliceReader tells whether an EndpointSlice still lists the pod as ready.
type SliceReader interface {
	Ready(ctx context.Context, in registry.Instance) (bool, error)
}

// Observer records deleting managed pods' drain timelines.
type Observer struct {
	Client client.Client
	Slices SliceReader
	// Consul, when set, is asked whether pods with a Consul service are still listed.
	Consul   registry.Registry
	Recorder events.EventRecorder
	// Poll is how often a draining pod is looked at again: registries are read, not watched.
	Poll time.Duration
	Now  func() time.Time
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch

// SetupWithManager watches deleting pods, and reports a timeline when its pod disappears.
func (o *Observer) SetupWithManager(mgr ctrl.Manager) error {
	deleting := predicate.NewPredicateFuncs(func(obj client.Object) bool { return obj.GetDeletionTimestamp() != nil })
	gone := handler.Funcs{DeleteFunc: func(ctx context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if pod, ok := e.Object.(*corev1.Pod); ok {
			o.finish(ctx, pod)
		}
	}}
	return ctrl.NewControllerManagedBy(mgr).Named("rollout-observer").
		For(&corev1.Pod{}, builder.WithPredicates(deleting)).
		Watches(&corev1.Pod{}, gone).
		Complete(o)
}

// Reconcile advances the pod's timeline and keeps it on the pod.
func (o *Observer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := o.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) {
		return ctrl.Result{}, nil
	}
	tl := Parse(pod)
	if tl.Reported {
		return ctrl.Result{}, nil
	}
	next := Advance(tl, pod, o.observe(ctx, pod))
	if next.Complete() {
		o.report(ctx, pod, next)
		next.Reported = true
	}
	if next != tl {
		orig := pod.DeepCopy()
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[Annotation] = next.Encode()
		if err := o.Client.Patch(ctx, pod, client.MergeFrom(orig)); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if next.Reported {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: o.Poll}, nil
}

// observe asks the registries; an unanswered question counts as "still listed", so a stage is
// only ever recorded on evidence.
func (o *Observer) observe(ctx context.Context, pod *corev1.Pod) Observation {
	in := registry.Instance{Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), IP: pod.Status.PodIP}
	obs := Observation{Now: o.Now(), ReadyInSlices: true}
	if ready, err := o.Slices.Ready(ctx, in); err == nil {
		obs.ReadyInSlices = ready
	}
	if s, err := managed.SettingsOf(pod.Annotations); err == nil && s.ConsulService != "" && o.Consul != nil {
		in.Service = s.ConsulService
		listed, err := o.Consul.Visible(ctx, in)
		obs.InConsul = &listed
		if err != nil {
			*obs.InConsul = true
		}
	}
	return obs
}

// finish reports a pod that disappeared before its timeline was reported: its containers ended
// by then, so the deletion time bounds their termination.
func (o *Observer) finish(ctx context.Context, pod *corev1.Pod) {
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) {
		return
	}
	tl := Parse(pod)
	if tl.Reported {
		return
	}
	now := o.Now()
	tl = Advance(tl, pod, Observation{Now: now})
	if tl.Terminated.IsZero() {
		tl.Terminated = now
	}
	o.report(ctx, pod, tl)
}

func (o *Observer) report(ctx context.Context, pod *corev1.Pod, tl Timeline) {
	workload, obj, cause := o.workload(ctx, pod)
	metrics.DrainDuration.WithLabelValues(pod.Namespace, workload).Observe(tl.Terminated.Sub(tl.Deleted).Seconds())
	if !tl.Unready.IsZero() {
		metrics.RegistrationLag.WithLabelValues(pod.Namespace, workload, managed.Endpoints).Observe(tl.Unready.Sub(tl.Deleted).Seconds())
	}
	if !tl.Deregistered.IsZero() {
		metrics.RegistrationLag.WithLabelValues(pod.Namespace, workload, managed.Consul).Observe(tl.Deregistered.Sub(tl.Deleted).Seconds())
	}
	kind := corev1.EventTypeNormal
	if tl.ExitCode != nil && *tl.ExitCode != 0 {
		kind = corev1.EventTypeWarning
	}
	if o.Recorder != nil {
		o.Recorder.Eventf(obj, pod, kind, "PodDrained", "Drain", "%s", tl.Summary(pod.Name, cause))
	}
}

// workload finds the Deployment or StatefulSet the pod belongs to, for Events and metric labels,
// and why it is losing pods; the pod itself when there is none lastcall manages.
func (o *Observer) workload(ctx context.Context, pod *corev1.Pod) (string, client.Object, string) {
	owner := metav1.GetControllerOf(pod)
	if owner == nil {
		return pod.Name, pod, CauseOther
	}
	key := types.NamespacedName{Namespace: pod.Namespace, Name: owner.Name}
	var obj client.Object
	switch owner.Kind {
	case "ReplicaSet":
		// A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
		key.Name = strings.TrimSuffix(owner.Name, "-"+pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey])
		obj = &appsv1.Deployment{}
	case "StatefulSet":
		obj = &appsv1.StatefulSet{}
	default:
		return owner.Name, pod, CauseOther
	}
	if err := o.Client.Get(ctx, key, obj); err != nil {
		return key.Name, pod, CauseOther // not labelled, so not cached: the pod carries the Event
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return key.Name, obj, DeploymentCause(w)
	case *appsv1.StatefulSet:
		return key.Name, obj, StatefulSetCause(w)
	}
	return key.Name, obj, CauseOther
}
