// Package backstop makes sure no deleted pod stays registered in a registry whose entries stay
// until someone removes them (Consul): on deletion it removes the pod's entries (racing the
// preStop hook on purpose, idempotently), and a sweeper removes entries whose pod no longer exists
// (force deletion, lost node). Any registry with the methods below gets both.
package backstop

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
)

// DeregisteredAnnotation records when the backstop confirmed the pod out of the named registry
// (lastcall.dev/consul-deregistered), so a restarted controller does not repeat the work.
func DeregisteredAnnotation(registryName string) string {
	return "lastcall.dev/" + registryName + "-deregistered"
}

// Registry is what the backstop needs: a registry that lists a pod's entries and removes one.
type Registry interface {
	Name() string
	Instances(ctx context.Context, in registry.Instance) ([]registry.Registration, error)
	Remove(ctx context.Context, r registry.Registration) error
}

// Reconciler removes deleting managed pods' entries from one registry.
type Reconciler struct {
	Client   client.Client
	Registry Registry
	// Adapters is the table the pod's annotations are read against.
	Adapters []registry.Adapter
	Recorder events.EventRecorder
	Now      func() time.Time
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration
}

// maxRetry caps the backoff after failures: a deleting pod lives for its grace period only, so
// the backstop must come back soon once the registry answers again.
const maxRetry = 5 * time.Second

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch

// SetupWithManager registers the reconciler for deleting pods, named after its registry.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	deleting := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetDeletionTimestamp() != nil })
	return ctrl.NewControllerManagedBy(mgr).Named(r.Registry.Name()+"-backstop").
		For(&corev1.Pod{}, builder.WithPredicates(deleting)).
		WithOptions(controller.Options{ReconciliationTimeout: r.Timeout,
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, maxRetry)}).
		Complete(r)
}

// Reconcile removes the pod's entries once and records it on the pod.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	name := r.Registry.Name()
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err) // gone: the sweeper covers it
	}
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) || pod.Annotations[DeregisteredAnnotation(name)] != "" {
		return ctrl.Result{}, nil
	}
	s, _ := managed.SettingsOf(pod.Annotations, r.Adapters) // a bad registries list must not stop the backstop
	in := s.Instance(pod, name)
	found, err := r.Registry.Instances(ctx, in)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("backstop: find %s in %s: %w", in, name, err)
	}
	var (
		removed []string
		errs    []error
	)
	for _, reg := range found {
		if err := r.Registry.Remove(ctx, reg); err != nil {
			errs = append(errs, fmt.Errorf("backstop: remove %s from %s: %w", reg.Ref, name, err))
			continue
		}
		removed = append(removed, reg.Ref.String())
	}
	if len(removed) > 0 {
		metrics.BackstopDeregistrations.WithLabelValues(name).Add(float64(len(removed)))
		log.FromContext(ctx).Info("deregistered a deleting pod the hook had not yet removed", "registry", name, "instances", removed)
		if r.Recorder != nil {
			r.Recorder.Eventf(pod, nil, corev1.EventTypeNormal, "BackstopDeregistered", "Deregister", "removed %s entries %s", name, strings.Join(removed, ","))
		}
	}
	if len(errs) > 0 {
		return ctrl.Result{}, errors.Join(errs...) // retried; the pod is not yet recorded as done
	}
	orig := pod.DeepCopy()
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[DeregisteredAnnotation(name)] = r.Now().UTC().Format(time.RFC3339Nano)
	if err := r.Client.Patch(ctx, pod, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	return ctrl.Result{}, nil
}
