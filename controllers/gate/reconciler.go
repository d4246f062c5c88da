package gate

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/registry"
)

// Reconciler sets the registration condition on managed pods that carry the readiness gate.
type Reconciler struct {
	Client client.Client
	// Registries by name; a pod that asks for a registry missing here is reported, never passed.
	Registries map[string]registry.Registry
	// Adapters is the table the pod's annotations are read against.
	Adapters []registry.Adapter
	Recorder events.EventRecorder
	// Retry is how soon a pod that is not yet visible is looked at again.
	Retry time.Duration
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the reconciler for pods that carry the gate.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	hasGate := predicate.NewPredicateFuncs(func(o client.Object) bool {
		pod, ok := o.(*corev1.Pod)
		return ok && managed.HasGate(pod)
	})
	return ctrl.NewControllerManagedBy(mgr).Named("registration-gate").
		For(&corev1.Pod{}, builder.WithPredicates(hasGate)).
		// A slice that starts listing a pod is what makes it visible in EndpointSlices.
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(listedPods)).
		WithOptions(controller.Options{ReconciliationTimeout: r.Timeout}).
		Complete(r)
}

// listedPods maps an EndpointSlice to the pods it lists.
func listedPods(_ context.Context, obj client.Object) []reconcile.Request {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, p := range managed.ListedPods(s) {
		out = append(out, reconcile.Request{NamespacedName: p})
	}
	return out
}

// Reconcile fetches the pod, asks the registries, and patches the condition once.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	cond := managed.GateCondition(pod)
	if !managed.HasGate(pod) || (pod.DeletionTimestamp == nil && cond != nil && cond.Status == corev1.ConditionTrue) {
		return ctrl.Result{}, nil // once visible, the gate stays open until deletion
	}
	settings, settingsErr := managed.SettingsOf(pod.Annotations, r.Adapters)
	var checks []Check
	if pod.DeletionTimestamp == nil && settingsErr == nil && pod.Status.PodIP != "" {
		checks = r.check(ctx, pod, settings)
	}
	v := Decide(pod, settingsErr, checks)
	if err := r.patch(ctx, pod, v); err != nil {
		return ctrl.Result{}, err
	}
	if v.Retry {
		return ctrl.Result{RequeueAfter: r.Retry}, nil
	}
	return ctrl.Result{}, nil
}

// unlisting is offered by registries that list only some pods (EndpointSlices list the pods a
// Service selects): it says why the registry will never list a pod, "" when it will.
type unlisting interface {
	Unlisted(ctx context.Context, in registry.Instance) (string, error)
}

func (r *Reconciler) check(ctx context.Context, pod *corev1.Pod, s managed.Settings) []Check {
	checks := make([]Check, 0, len(s.Registries))
	for _, name := range s.Registries {
		checks = append(checks, r.checkOne(ctx, r.Registries[name], name, s.Instance(pod, name)))
	}
	return checks
}

func (r *Reconciler) checkOne(ctx context.Context, reg registry.Registry, name string, in registry.Instance) Check {
	c := Check{Registry: name}
	if reg == nil {
		c.Err = fmt.Errorf("registry %s is not configured in lastcall-controller", name)
		return c
	}
	if c.Visible, c.Err = reg.Visible(ctx, in); c.Err != nil || c.Visible {
		return c
	}
	// Not listed yet: waiting only makes sense if the registry will ever list the pod.
	if u, ok := reg.(unlisting); ok {
		c.Unlisted, c.Err = u.Unlisted(ctx, in)
	}
	return c
}

// patch writes the condition when it changed; a strategic merge keys conditions by type, so the
// kubelet's own conditions are left alone.
func (r *Reconciler) patch(ctx context.Context, pod *corev1.Pod, v Verdict) error {
	old := managed.GateCondition(pod)
	if old != nil && old.Status == v.Status && old.Reason == v.Reason && old.Message == v.Message {
		return nil
	}
	orig := pod.DeepCopy()
	now := metav1.Now()
	next := corev1.PodCondition{Type: managed.Gate, Status: v.Status, Reason: v.Reason, Message: v.Message, LastTransitionTime: now}
	if old != nil {
		if old.Status == v.Status {
			next.LastTransitionTime = old.LastTransitionTime
		}
		*old = next
	} else {
		pod.Status.Conditions = append(pod.Status.Conditions, next)
	}
	if err := r.Client.Status().Patch(ctx, pod, client.StrategicMergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch condition %s: %w", managed.Gate, err)
	}
	log.FromContext(ctx).Info("registration gate", "status", v.Status, "reason", v.Reason, "message", v.Message)
	if r.Recorder != nil && (old == nil || old.Reason != v.Reason) {
		kind := corev1.EventTypeNormal
		if v.Reason == ReasonInvalidSettings || v.Reason == ReasonRegistryError {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(pod, nil, kind, "Gate"+v.Reason, "RegistrationGate", "%s", v.Message)
	}
	return nil
}
