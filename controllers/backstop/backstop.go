// Package backstop makes sure no deleted pod stays registered in Consul: on deletion it
// deregisters the pod (racing the preStop hook on purpose, idempotently), and a sweeper removes
// instances whose pod no longer exists (force deletion, lost node).
package backstop

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
)

// DeregisteredAnnotation records when the backstop confirmed the pod out of Consul, so a
// restarted controller does not repeat the work and the rollout observer can time it.
const DeregisteredAnnotation = "lastcall.dev/consul-deregistered"

// Consul is what the backstop needs of the Consul registry.
type Consul interface {
	Deregister(ctx context.Context, in registry.Instance) (registry.Receipt, error)
}

// Reconciler deregisters deleting managed pods from Consul.
type Reconciler struct {
	Client   client.Client
	Consul   Consul
	Recorder events.EventRecorder
	Now      func() time.Time
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch

// SetupWithManager registers the reconciler for deleting pods.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	deleting := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetDeletionTimestamp() != nil })
	return ctrl.NewControllerManagedBy(mgr).Named("consul-backstop").
		For(&corev1.Pod{}, builder.WithPredicates(deleting)).
		Complete(r)
}

// Reconcile deregisters once and records it on the pod.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // gone: the sweeper covers it
	}
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) || pod.Annotations[DeregisteredAnnotation] != "" {
		return ctrl.Result{}, nil
	}
	s, _ := managed.SettingsOf(pod.Annotations) // a bad registries list must not stop the backstop
	in := registry.Instance{Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), IP: pod.Status.PodIP, Service: s.ConsulService}
	rc, err := r.Consul.Deregister(ctx, in)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("backstop deregistration of %s: %w", in, err)
	}
	if n := len(rc.Removed); n > 0 {
		metrics.BackstopDeregistrations.Add(float64(n))
		log.FromContext(ctx).Info("deregistered a deleting pod the hook had not yet removed", "instances", rc.Names())
		if r.Recorder != nil {
			r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, "BackstopDeregistered", "Deregister", "removed Consul instances %s", rc.Names())
		}
	}
	orig := pod.DeepCopy()
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[DeregisteredAnnotation] = r.Now().UTC().Format(time.RFC3339Nano)
	if err := r.Client.Patch(ctx, pod, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{}, nil
}
