// Package controllers wires lastcall-controller's reconcilers into a controller-runtime manager.
// Each concern lives in its own package: gate (registration gate), backstop (backstop and
// sweeper for registries that keep entries until removed), rollout (drain timelines), warnings
// (unsafe settings, and pods the injection webhook missed), dataplane (the lastcall-node agents' fan-in, when configured); managed
// holds the opt-in rules they share.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/backstop"
	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/gate"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/controllers/rollout"
	"github.com/lastcall-dev/lastcall/controllers/warnings"
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

// Config selects what the manager runs.
type Config struct {
	// Set holds every known registry's options (from the adapters table); Registries names the
	// ones to build. A registry gets a backstop and a sweeper when it has their methods.
	Set        *registry.Set
	Registries []string
	// Drain is the budget assumed for workloads without drain annotations.
	Drain         prestop.Drain
	SweepInterval time.Duration
	GateRetry     time.Duration
	// ObservePoll is how often a draining pod's registries are read for its timeline, when they
	// can only be polled.
	ObservePoll time.Duration
	// ReconcileTimeout bounds each reconcile of the gate, backstop, observer and warnings.
	ReconcileTimeout time.Duration
	// Log is the logr sink registries log to through slog (see Slog); ctrl.Log when unset.
	Log logr.Logger
	// Dataplane configures the fan-in of the lastcall-node agents; off unless Enabled.
	Dataplane dataplane.Options
	// InjectExcluded are the namespaces the injection webhook never selects besides kube-system
	// (lastcall's own): their pods and workloads are never taken as opted in by lastcall.dev/inject.
	InjectExcluded []string
}

// CacheOptions keeps memory following what lastcall manages, not the size of the cluster. No
// selector can pick what lastcall manages: the readiness gate alone opts a pod in, and the
// injection webhook's opt-in (a namespace label, a pod template label) leaves no label on a
// Deployment or StatefulSet. So every pod, workload and namespace is watched and cut at once to
// what the controller reads (managed.CachedPod, CachedWorkload, CachedNamespace): a pod lastcall
// does not manage is its identity, a workload about a tenth of itself. Resolving workloads on
// demand from managed pods instead would miss a workload whose pods were all created while the
// webhook was down, and would read the API server once per workload and event.
func CacheOptions() cache.Options {
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:         {Transform: managed.CachedPod},
			&appsv1.Deployment{}:  {Transform: managed.CachedWorkload},
			&appsv1.StatefulSet{}: {Transform: managed.CachedWorkload},
			&corev1.Namespace{}:   {Transform: managed.CachedNamespace},
			// Slices cannot be selected by the pods they list: all are cached, slimmed.
			&discoveryv1.EndpointSlice{}: {Transform: slimSlice},
			// Services tell the gate which pods EndpointSlices will list: selector and type only.
			&corev1.Service{}: {Transform: slimService},
			// Nodes are read (with the dataplane fan-in) to name the nodes that have no agent, and
			// (in image-volume mode) by the webhook for their runtimes: name, Ready, runtime only.
			&corev1.Node{}: {Transform: dataplane.SlimNode},
		},
		DefaultTransform: cache.TransformStripManagedFields(),
	}
}

// managerKube offers registries the manager's API access and its cache of EndpointSlices and
// Services.
type managerKube struct{ mgr ctrl.Manager }

func (k managerKube) RESTConfig() *rest.Config { return k.mgr.GetConfig() }

func (k managerKube) EndpointSlices() endpoints.Slices { return cachedSlices{k.mgr.GetClient()} }

func (k managerKube) Services() endpoints.Services { return cachedServices{k.mgr.GetClient()} }

// Leader election, in the controller's own namespace:
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=lastcall-system,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Setup builds the configured registries and adds every reconciler (and the sweepers) to mgr.
func Setup(mgr ctrl.Manager, cfg Config) error {
	if cfg.Set == nil {
		return errors.New("controllers: Config.Set is nil: make it with registry.NewSet from the adapters table")
	}
	log := cfg.Log
	if log.GetSink() == nil {
		log = ctrl.Log
	}
	env := registry.Env{Binary: registry.Controller, InCluster: true, Kube: managerKube{mgr}, Log: Slog(log.WithName("registry"))}
	regs, err := cfg.Set.Build(env, cfg.Registries)
	if err != nil {
		return err
	}
	byName := map[string]registry.Registry{}
	rec := mgr.GetEventRecorder("lastcall-controller")
	table := cfg.Set.Adapters()
	for _, reg := range regs {
		byName[reg.Name()] = reg
		if b, ok := reg.(backstop.Registry); ok {
			metrics.BackstopDeregistrations.WithLabelValues(reg.Name())
			r := &backstop.Reconciler{Client: mgr.GetClient(), Registry: b, Adapters: table, Recorder: rec, Now: time.Now, Timeout: cfg.ReconcileTimeout}
			if err := r.SetupWithManager(mgr); err != nil {
				return fmt.Errorf("%s backstop: %w", reg.Name(), err)
			}
		}
		if c, ok := reg.(backstop.Catalog); ok {
			metrics.StaleRemoved.WithLabelValues(reg.Name())
			metrics.SweepFailures.WithLabelValues(reg.Name())
			sw := &backstop.Sweeper{Registry: c, Pods: mgr.GetClient(), API: mgr.GetAPIReader(), Interval: cfg.SweepInterval, Log: log.WithName("sweeper").WithValues("registry", reg.Name())}
			if err := mgr.Add(sw); err != nil {
				return fmt.Errorf("%s sweeper: %w", reg.Name(), err)
			}
		}
	}
	if err := (&gate.Reconciler{Client: mgr.GetClient(), Registries: byName, Adapters: table, Recorder: rec, Retry: cfg.GateRetry, Timeout: cfg.ReconcileTimeout}).SetupWithManager(mgr); err != nil {
		return err
	}
	observer := &rollout.Observer{Client: mgr.GetClient(), Registries: byName, Adapters: table, Recorder: rec, Poll: cfg.ObservePoll, Now: time.Now, Timeout: cfg.ReconcileTimeout}
	if err := observer.SetupWithManager(mgr); err != nil {
		return err
	}
	if cfg.Dataplane.Enabled {
		if err := dataplane.New(mgr.GetClient(), cfg.Dataplane).SetupWithManager(mgr); err != nil {
			return err
		}
	}
	excluded := func(ns string) bool { return ns == metav1.NamespaceSystem || slices.Contains(cfg.InjectExcluded, ns) }
	if err := warnings.IndexPods(context.Background(), mgr); err != nil {
		return err
	}
	for _, r := range []*warnings.Reconciler{warnings.ForDeployments(mgr.GetClient(), rec, cfg.Drain), warnings.ForStatefulSets(mgr.GetClient(), rec, cfg.Drain)} {
		r.Timeout, r.Excluded = cfg.ReconcileTimeout, excluded
		if err := r.SetupWithManager(mgr); err != nil {
			return err
		}
	}
	uninjected := &warnings.Uninjected{Client: mgr.GetClient(), API: mgr.GetAPIReader(), Recorder: rec, Excluded: excluded, Timeout: cfg.ReconcileTimeout}
	return uninjected.SetupWithManager(mgr)
}
