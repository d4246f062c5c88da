// Package managed says which pods lastcall manages and reads their per-pod settings from
// lastcall.dev/* annotations. Pure functions: no API calls.
package managed

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall-dev/lastcall/registry"
)

// Names under lastcall.dev/.
const (
	// Label opts a pod (and its workload) in; so do the Gate, and the injection webhook's
	// InjectLabel (see Adopt).
	Label = "lastcall.dev/managed"
	// Gate is the readiness gate and the pod condition the registration gate sets.
	Gate corev1.PodConditionType = "lastcall.dev/registered"
	// RegistriesAnnotation lists the registries that must show the pod (endpoints, consul).
	RegistriesAnnotation = "lastcall.dev/registries"
	// DrainBudgetAnnotation is the drain the workload expects from its preStop hook (a Go
	// duration); the unsafe-settings check compares it and the reserve with the grace period.
	DrainBudgetAnnotation = "lastcall.dev/drain-budget"
	// ReserveAnnotation is the time the app needs after SIGTERM (lastcall-prestop --reserve).
	ReserveAnnotation = "lastcall.dev/reserve"
)

// ServiceAnnotation names the pod's service in a registry whose adapter has PodService:
// lastcall.dev/consul-service for Consul.
func ServiceAnnotation(registry string) string { return "lastcall.dev/" + registry + "-service" }

// IsManaged reports whether lastcall manages the pod.
func IsManaged(pod *corev1.Pod) bool {
	return pod.Labels[Label] == "true" || HasGate(pod)
}

// HasGate reports whether the pod waits for the registration gate.
func HasGate(pod *corev1.Pod) bool { return hasGate(pod.Spec.ReadinessGates) }

func hasGate(gates []corev1.PodReadinessGate) bool {
	return slices.ContainsFunc(gates, func(g corev1.PodReadinessGate) bool { return g.ConditionType == Gate })
}

// Settings are a pod's lastcall settings.
type Settings struct {
	// Registries that must show the pod, by name.
	Registries []string
	// Services are the pod's service names by registry, from ServiceAnnotation.
	Services map[string]string
}

// SettingsOf reads the pod's annotations against the registries the table knows. Registries
// default to those that need no service name (endpoints), plus each one the pod names its service
// in. The error names the annotation and what is allowed.
func SettingsOf(annotations map[string]string, table []registry.Adapter) (Settings, error) {
	s := Settings{Services: map[string]string{}}
	var names []string
	for _, a := range table {
		names = append(names, a.Name)
		if svc := strings.TrimSpace(annotations[ServiceAnnotation(a.Name)]); svc != "" {
			s.Services[a.Name] = svc
		}
	}
	raw, set := annotations[RegistriesAnnotation]
	if !set {
		for _, a := range table {
			if !a.PodService || s.Services[a.Name] != "" {
				s.Registries = append(s.Registries, a.Name)
			}
		}
		return s, nil
	}
	for _, r := range strings.Split(raw, ",") {
		r = strings.TrimSpace(r)
		i := slices.IndexFunc(table, func(a registry.Adapter) bool { return a.Name == r })
		switch {
		case r == "":
			continue
		case i < 0:
			return s, fmt.Errorf("annotation %s=%q: unknown registry %q; want a comma-separated list of %s", RegistriesAnnotation, raw, r, strings.Join(names, ", "))
		case table[i].PodService && s.Services[r] == "":
			return s, fmt.Errorf("annotation %s lists %s but %s is not set; name the pod's service in %s", RegistriesAnnotation, r, ServiceAnnotation(r), r)
		case !slices.Contains(s.Registries, r):
			s.Registries = append(s.Registries, r)
		}
	}
	if len(s.Registries) == 0 {
		return s, fmt.Errorf("annotation %s is empty; want one or more of %s (or remove it for the default)", RegistriesAnnotation, strings.Join(names, ", "))
	}
	return s, nil
}

// Instance is the pod as the named registry knows it.
func (s Settings) Instance(pod *corev1.Pod, registryName string) registry.Instance {
	return registry.Instance{Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), IP: pod.Status.PodIP, Service: s.Services[registryName], Labels: pod.Labels}
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

// ListedPods names the pods an EndpointSlice lists, for reconcilers that follow slices.
func ListedPods(s *discoveryv1.EndpointSlice) []types.NamespacedName {
	var out []types.NamespacedName
	for _, ep := range s.Endpoints {
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
			out = append(out, types.NamespacedName{Namespace: s.Namespace, Name: ep.TargetRef.Name})
		}
	}
	return out
}
