// Package managed says which pods lastcall manages and reads their per-pod settings from
// lastcall.dev/* annotations. Pure functions: no API calls.
package managed

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Names under lastcall.dev/.
const (
	// Label opts a pod (and its workload) in; the controller's caches hold only labelled objects.
	Label = "lastcall.dev/managed"
	// Gate is the readiness gate and the pod condition the registration gate sets.
	Gate corev1.PodConditionType = "lastcall.dev/registered"
	// ConsulServiceAnnotation names the pod's Consul service (needed to check it is visible).
	ConsulServiceAnnotation = "lastcall.dev/consul-service"
	// RegistriesAnnotation lists the registries that must show the pod: consul, endpoints.
	RegistriesAnnotation = "lastcall.dev/registries"
	// DrainBudgetAnnotation is the drain the workload expects from its preStop hook (a Go
	// duration); the unsafe-settings check compares it and the reserve with the grace period.
	DrainBudgetAnnotation = "lastcall.dev/drain-budget"
	// ReserveAnnotation is the time the app needs after SIGTERM (lastcall-prestop --reserve).
	ReserveAnnotation = "lastcall.dev/reserve"
)

// Registry names, as in the annotation.
const (
	Consul    = "consul"
	Endpoints = "endpoints"
)

// IsManaged reports whether lastcall manages the pod.
func IsManaged(pod *corev1.Pod) bool {
	return pod.Labels[Label] == "true" || HasGate(pod)
}

// HasGate reports whether the pod waits for the registration gate.
func HasGate(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.ReadinessGates, func(g corev1.PodReadinessGate) bool {
		return g.ConditionType == Gate
	})
}

// Settings are a pod's lastcall settings.
type Settings struct {
	ConsulService string
	Registries    []string
}

// SettingsOf reads the pod's annotations. Registries default to endpoints, plus consul when a
// Consul service is named. The error names the annotation and what is allowed.
func SettingsOf(annotations map[string]string) (Settings, error) {
	s := Settings{ConsulService: strings.TrimSpace(annotations[ConsulServiceAnnotation])}
	raw, set := annotations[RegistriesAnnotation]
	if !set {
		s.Registries = []string{Endpoints}
		if s.ConsulService != "" {
			s.Registries = append(s.Registries, Consul)
		}
		return s, nil
	}
	for _, r := range strings.Split(raw, ",") {
		r = strings.TrimSpace(r)
		switch {
		case r == "":
			continue
		case r != Consul && r != Endpoints:
			return s, fmt.Errorf("annotation %s=%q: unknown registry %q; want a comma-separated list of consul, endpoints", RegistriesAnnotation, raw, r)
		case !slices.Contains(s.Registries, r):
			s.Registries = append(s.Registries, r)
		}
	}
	if len(s.Registries) == 0 {
		return s, fmt.Errorf("annotation %s is empty; want consul, endpoints or both (or remove it for the default)", RegistriesAnnotation)
	}
	if slices.Contains(s.Registries, Consul) && s.ConsulService == "" {
		return s, fmt.Errorf("annotation %s lists consul but %s is not set; name the pod's Consul service", RegistriesAnnotation, ConsulServiceAnnotation)
	}
	return s, nil
}

// GateCondition returns the pod's registration condition, or nil.
func GateCondition(pod *corev1.Pod) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == Gate {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}
