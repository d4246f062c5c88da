// Package metrics holds lastcall-controller's Prometheus metrics, registered with
// controller-runtime's registry so the manager's metrics endpoint serves them.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	// DrainDuration is deletion → container terminated, per drained pod.
	DrainDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lastcall_drain_duration_seconds",
		Help:    "Time from a managed pod's deletion to its containers' termination.",
		Buckets: []float64{0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120},
	}, []string{"namespace", "workload"})
	// RegistrationLag is deletion → the last registry stopped listing the pod.
	RegistrationLag = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lastcall_registration_lag_seconds",
		Help:    "Time from a managed pod's deletion until the registry stopped listing it (EndpointSlices: not ready).",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30},
	}, []string{"namespace", "workload", "registry"})
	// PrestopOpenConnections is, per drained pod, the inbound connections lastcall-prestop left
	// open when it returned (the most any of its helpers reported), from the containers'
	// termination messages.
	PrestopOpenConnections = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "lastcall_prestop_open_connections",
		Help:    "Inbound connections on a drained pod's serving ports still open when lastcall-prestop returned (the app's SIGTERM closes them), per pod that reported them.",
		Buckets: []float64{0, 1, 2, 5, 10, 25, 50, 100, 250, 1000},
	}, []string{"namespace", "workload"})
	// StaleRemoved counts entries removed because their pod no longer exists, per registry.
	StaleRemoved = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lastcall_stale_registrations_removed_total",
		Help: "Registry entries removed by the sweeper because their pod no longer exists.",
	}, []string{"registry"})
	// SweepFailures counts entries of gone pods the sweeper could not remove, and sweeps that could
	// not list the registry; the next sweep retries.
	SweepFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lastcall_sweep_failures_total",
		Help: "Stale registry entries the sweeper failed to remove, and sweeps that failed to list the registry; the next sweep retries.",
	}, []string{"registry"})
	// BackstopDeregistrations counts entries the backstop removed before the preStop hook did.
	BackstopDeregistrations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lastcall_backstop_deregistrations_total",
		Help: "Registry entries of deleting pods that the controller removed because they were still registered.",
	}, []string{"registry"})
	// DataplaneLag is the EndpointSlice change → the last node's dataplane stopped routing to
	// the pod (lastcall-node's NotRoutedAt): per-pod network programming latency.
	DataplaneLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "lastcall_dataplane_lag_seconds",
		Help:    "Time from a draining pod's EndpointSlice change (as the controller saw it) until the last node's dataplane stopped routing new connections to it.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60},
	})
	// UnsafeSettings is 1 per workload and check that currently fails.
	UnsafeSettings = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lastcall_unsafe_settings",
		Help: "1 when a managed workload has the unsafe setting named by check.",
	}, []string{"namespace", "kind", "workload", "check"})
	// UninjectedPods counts, per namespace, the running pods the injection webhook should have
	// injected and did not.
	UninjectedPods = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lastcall_uninjected_pods",
		Help: "Pods that lastcall.dev/inject opts in but that were created without injection (the webhook was down or too slow, or the pod predates the label), by namespace; restart their workloads to inject them.",
	}, []string{"namespace"})
)

func init() {
	crmetrics.Registry.MustRegister(DrainDuration, RegistrationLag, PrestopOpenConnections, StaleRemoved, SweepFailures, BackstopDeregistrations, UnsafeSettings, DataplaneLag, UninjectedPods)
}
