package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the agent's Prometheus metrics, in a registry of their own with the Go and
// process collectors.
type Metrics struct {
	Registry *prometheus.Registry

	checks     *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	readErrors *prometheus.CounterVec
	triggers   *prometheus.CounterVec
	readable   prometheus.Gauge
	metricsUp  prometheus.Gauge
	lastSync   prometheus.Gauge
	waits      prometheus.Gauge
	ips        prometheus.Gauge
	verdicts   *prometheus.GaugeVec
}

// NewMetrics registers the agent's metrics in a new registry.
func NewMetrics() *Metrics {
	const ns, sub = "lastcall", "node"
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "checks_total",
			Help: "Reads of the ruleset by result (ok, error) and kind (targeted: only given Service ports; full: the whole ruleset; ping: the health check's)."},
			[]string{"result", "read"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "check_duration_seconds",
			Help:    "Wall time of successful ruleset reads, by kind.",
			Buckets: []float64{.002, .005, .01, .025, .05, .1, .2, .5, 1, 2, 5, 10, 30, 60}},
			[]string{"read"}),
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "ruleset_read_errors_total",
			Help: "Failed ruleset reads by kind: rules_not_found (kube-proxy's rules are not there), timeout, unsupported_mode, command (the command failed)."},
			[]string{"kind"}),
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "check_triggers_total",
			Help: "Why reads started: request (a new wait or check), sync (kube-proxy finished a sync), periodic, fallback (kube-proxy's metrics cannot be read), retry (after a failed read), health (idle ping)."},
			[]string{"trigger"}),
		readable: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ruleset_readable",
			Help: "1 when the last read of the ruleset succeeded."}),
		metricsUp: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "kube_proxy_metrics_up",
			Help: "1 when kube-proxy's metrics could be read at the last try; 0 means reads run at the fallback interval."}),
		lastSync: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "kube_proxy_last_sync_timestamp_seconds",
			Help: "End of kube-proxy's newest rule sync that the agent has seen (kubeproxy_sync_proxy_rules_last_timestamp_seconds)."}),
		waits: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "waits",
			Help: "Open waits and checks."}),
		ips: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "ips",
			Help: "IPs whose verdicts the agent keeps."}),
		verdicts: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "verdicts",
			Help: "IPs by their latest verdict."}, []string{"verdict"}),
	}
	m.Registry.MustRegister(m.checks, m.duration, m.readErrors, m.triggers, m.readable, m.metricsUp, m.lastSync, m.waits, m.ips, m.verdicts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
