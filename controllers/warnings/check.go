// Package warnings reports unsafe drain settings of managed workloads as Events and a metric:
// a grace period that cannot hold the drain, a missing preStop hook or readiness gate, or a
// rollout that may take down too large a share of a small workload.
package warnings

import (
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// Checks, as in Events and the metric's check label.
const (
	GraceTooShort              = "GraceTooShort"
	NoPreStopHook              = "NoPreStopHook"
	NoReadinessGate            = "NoReadinessGate"
	MaxUnavailableAtSmallScale = "MaxUnavailableAtSmallScale"
	InvalidAnnotation          = "InvalidAnnotation"
)

// AllChecks lists every check, so the metric can be reset for those that pass.
var AllChecks = []string{GraceTooShort, NoPreStopHook, NoReadinessGate, MaxUnavailableAtSmallScale, InvalidAnnotation}

// SmallScale is the replica count up to which any maxUnavailable above zero is flagged.
const SmallScale = 3

// Finding is one failed check.
type Finding struct {
	Check   string
	Message string
}

// Workload is what the checks read of a Deployment or StatefulSet.
type Workload struct {
	Replicas int32
	// MaxUnavailable is the Deployment's rolling-update setting; nil for StatefulSets.
	MaxUnavailable *intstr.IntOrString
	Template       corev1.PodTemplateSpec
	Annotations    map[string]string
	// Injected workloads get the preStop hook and the readiness gate from the injection webhook,
	// in their pods: their template needs neither.
	Injected bool
}

// FromDeployment reads a Deployment, applying the API's defaults where fields are unset.
func FromDeployment(d *appsv1.Deployment) Workload {
	w := Workload{Replicas: 1, Template: d.Spec.Template, Annotations: d.Annotations}
	if d.Spec.Replicas != nil {
		w.Replicas = *d.Spec.Replicas
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		mu := intstr.FromString("25%")
		if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
			mu = *ru.MaxUnavailable
		}
		w.MaxUnavailable = &mu
	}
	return w
}

// FromStatefulSet reads a StatefulSet.
func FromStatefulSet(s *appsv1.StatefulSet) Workload {
	w := Workload{Replicas: 1, Template: s.Spec.Template, Annotations: s.Annotations}
	if s.Spec.Replicas != nil {
		w.Replicas = *s.Spec.Replicas
	}
	return w
}

// Check runs every check; settings may sit on the workload or its pod template, and fall back
// to drain (lastcall-controller's --max-wait and --reserve, which mean what they mean to
// lastcall-prestop).
func Check(w Workload, drain prestop.Drain) []Finding {
	var out []Finding
	budget, errB := duration(w, managed.DrainBudgetAnnotation, drain.MaxWait)
	reserve, errR := duration(w, managed.ReserveAnnotation, drain.Reserve)
	for _, err := range []error{errB, errR} {
		if err != nil {
			out = append(out, Finding{InvalidAnnotation, err.Error()})
		}
	}
	grace := 30 * time.Second
	if g := w.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < budget+reserve {
		// what lastcall-prestop will do with it: the same function, from the deletion
		var t0 time.Time
		drainShare, _ := prestop.Budget(t0, &prestop.Deletion{KillAt: t0.Add(grace), Grace: grace}, reserve, budget)
		out = append(out, Finding{GraceTooShort, fmt.Sprintf(
			"terminationGracePeriodSeconds is %s, shorter than the drain budget %s plus the reserve %s: lastcall-prestop shares it in proportion (drain %s, app %s), which may cut either short; raise it to at least %d",
			grace, budget, reserve, drainShare, grace-drainShare, int((budget+reserve+time.Second-1)/time.Second))})
	}
	hook := w.Injected
	for _, c := range w.Template.Spec.Containers {
		hook = hook || (c.Lifecycle != nil && c.Lifecycle.PreStop != nil)
	}
	if !hook {
		out = append(out, Finding{NoPreStopHook, "no container has a preStop hook: the pod gets SIGTERM while callers still send to it; add lifecycle.preStop.exec running lastcall-prestop"})
	}
	if !w.Injected && !managed.HasGate(&corev1.Pod{Spec: w.Template.Spec}) {
		out = append(out, Finding{NoReadinessGate, fmt.Sprintf("the pod template has no readiness gate %s: new pods count as available before callers can find them", managed.Gate)})
	}
	if w.MaxUnavailable != nil && w.Replicas <= SmallScale {
		n, err := intstr.GetScaledValueFromIntOrPercent(w.MaxUnavailable, int(w.Replicas), false)
		if err == nil && n > 0 {
			out = append(out, Finding{MaxUnavailableAtSmallScale, fmt.Sprintf(
				"maxUnavailable %s lets a rollout take down %d of %d replicas at once; set maxUnavailable: 0 and maxSurge ≥ 1", w.MaxUnavailable.String(), n, w.Replicas)})
		}
	}
	return out
}

func duration(w Workload, key string, def time.Duration) (time.Duration, error) {
	v, ok := w.Annotations[key]
	if !ok {
		v, ok = w.Template.Annotations[key]
	}
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return def, fmt.Errorf("annotation %s=%q: want a duration such as 20s", key, v)
	}
	return d, nil
}
