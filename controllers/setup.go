// Package controllers wires lastcall-controller's reconcilers into a controller-runtime manager.
// Each concern lives in its own package: gate (registration gate), backstop (Consul backstop and
// sweeper), rollout (drain timelines), warnings (unsafe settings); managed holds the opt-in rules
// they share.
package controllers

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/backstop"
	"github.com/lastcall-dev/lastcall/controllers/gate"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/rollout"
	"github.com/lastcall-dev/lastcall/controllers/warnings"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

// Config selects what the manager runs.
type Config struct {
	// Consul, when set, enables the Consul gate check, the backstop and the sweeper.
	Consul        *consul.Registry
	SweepInterval time.Duration
	GateRetry     time.Duration
	// ObservePoll is how often a draining pod's registries are read for its timeline.
	ObservePoll time.Duration
}

// CacheOptions caches only opted-in objects, so memory follows what lastcall manages, not the
// size of the cluster.
func CacheOptions() cache.Options {
	selector := labels.SelectorFromSet(labels.Set{managed.Label: "true"})
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:         {Label: selector},
			&appsv1.Deployment{}:  {Label: selector},
			&appsv1.StatefulSet{}: {Label: selector},
			// Slices cannot be selected by the pods they list: all are cached, slimmed.
			&discoveryv1.EndpointSlice{}: {Transform: slimSlice},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

// Leader election, in the controller's own namespace:
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=lastcall-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Setup adds every reconciler (and the sweeper) to mgr.
func Setup(mgr ctrl.Manager, cfg Config) error {
	rec := mgr.GetEventRecorder("lastcall-controller")
	eps, err := endpoints.New(endpoints.Config{Client: cachedSlices{mgr.GetClient()}})
	if err != nil {
		return err
	}
	regs := map[string]registry.Registry{managed.Endpoints: eps}
	observer := &rollout.Observer{Client: mgr.GetClient(), Slices: eps, Recorder: rec, Poll: cfg.ObservePoll, Now: time.Now}
	if cfg.Consul != nil {
		regs[managed.Consul] = cfg.Consul
		observer.Consul = cfg.Consul
		if err := (&backstop.Reconciler{Client: mgr.GetClient(), Consul: cfg.Consul, Recorder: rec, Now: time.Now}).SetupWithManager(mgr); err != nil {
			return err
		}
		sw := &backstop.Sweeper{Consul: cfg.Consul, Pods: mgr.GetAPIReader(), Interval: cfg.SweepInterval, Log: ctrl.Log.WithName("sweeper")}
		if err := mgr.Add(sw); err != nil {
			return err
		}
	}
	if err := (&gate.Reconciler{Client: mgr.GetClient(), Registries: regs, Recorder: rec, Retry: cfg.GateRetry}).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := observer.SetupWithManager(mgr); err != nil {
		return err
	}
	for _, r := range []*warnings.Reconciler{warnings.ForDeployments(mgr.GetClient(), rec), warnings.ForStatefulSets(mgr.GetClient(), rec)} {
		if err := r.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	return nil
}
