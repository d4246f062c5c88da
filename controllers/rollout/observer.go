package rollout

import (
	"context"
	"slices"
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

	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

// Ready is offered by registries where being listed is not being sent traffic: EndpointSlices
// list a draining pod as not ready. The observer asks it instead of Visible.
type Ready interface {
	Ready(ctx context.Context, in registry.Instance) (bool, error)
}

// Observer records deleting managed pods' drain timelines.
type Observer struct {
	Client client.Client
	// Registries by name; each pod is watched in those of its settings that are here.
	Registries map[string]registry.Registry
	// Adapters is the table the pod's annotations are read against.
	Adapters []registry.Adapter
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
	if !next.Equal(tl) {
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
	obs := Observation{Now: o.Now(), Listed: map[string]bool{}}
	s, err := managed.SettingsOf(pod.Annotations, o.Adapters)
	if err != nil {
		s, _ = managed.SettingsOf(nil, o.Adapters) // the registries every pod uses
	}
	for _, name := range s.Registries {
		reg := o.Registries[name]
		if reg == nil {
			continue // not configured here: no stage to wait for
		}
		in := s.Instance(pod, name)
		var listed bool
		if r, ok := reg.(Ready); ok {
			listed, err = r.Ready(ctx, in)
		} else {
			listed, err = reg.Visible(ctx, in)
		}
		obs.Listed[name] = listed || err != nil
	}
	obs.Dataplane = dataplaneStage(pod)
	return obs
}

// dataplaneStage reads the dataplane fan-in's condition: no stage without it (no agents), a
// stage not yet seen while it is not True.
func dataplaneStage(pod *corev1.Pod) *Stage {
	i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == endpoints.DataplaneCondition })
	if i < 0 {
		return nil
	}
	st := &Stage{Registry: DataplaneStage}
	if c := pod.Status.Conditions[i]; c.Status == corev1.ConditionTrue {
		st.Out, st.Slowest = dataplane.Confirmed(c)
	}
	return st
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
	for _, s := range tl.Registries {
		if !s.Out.IsZero() {
			metrics.RegistrationLag.WithLabelValues(pod.Namespace, workload, s.Registry).Observe(s.Out.Sub(tl.Deleted).Seconds())
		}
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
