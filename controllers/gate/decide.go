// Package gate is the registration gate: a managed pod's condition lastcall.dev/registered turns
// True only once every registry callers use shows the pod, and False once deletion starts. With
// the condition as a readiness gate, a Deployment with maxUnavailable: 0 never retires an old pod
// before its replacement can be called.
package gate

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Reasons of the condition, one per branch.
const (
	ReasonVisible = "Visible"
	// ReasonUnlisted opens the gate for a pod that none of its registries will ever list
	// (EndpointSlices alone, and no Service selects the pod): nothing to wait for.
	ReasonUnlisted        = "Unlisted"
	ReasonNotVisible      = "NotVisible"
	ReasonRegistryError   = "RegistryError"
	ReasonInvalidSettings = "InvalidSettings"
	ReasonNoPodIP         = "NoPodIP"
	ReasonTerminating     = "Terminating"
)

// Check is one registry's answer to Visible.
type Check struct {
	Registry string
	Visible  bool
	Err      error
	// Unlisted says why the registry will never list the pod (EndpointSlices: no Service
	// selects it); such a registry does not hold the gate.
	Unlisted string
}

// Verdict is the condition the pod should carry, and whether to look again later.
type Verdict struct {
	Status  corev1.ConditionStatus
	Reason  string
	Message string
	// Retry asks for another look after a while: registries are not watched by the gate.
	Retry bool
}

// Decide turns the pod's state and the registries' answers into the condition.
func Decide(pod *corev1.Pod, settingsErr error, checks []Check) Verdict {
	switch {
	case pod.DeletionTimestamp != nil:
		return Verdict{corev1.ConditionFalse, ReasonTerminating, "pod is being deleted: callers are being moved away", false}
	case settingsErr != nil:
		return Verdict{corev1.ConditionFalse, ReasonInvalidSettings, settingsErr.Error(), false}
	case pod.Status.PodIP == "":
		return Verdict{corev1.ConditionFalse, ReasonNoPodIP, "pod has no IP yet", false}
	}
	var failed, hidden, shown, unlisted []string
	for _, c := range checks {
		switch {
		case c.Err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", c.Registry, c.Err))
		case c.Unlisted != "":
			unlisted = append(unlisted, fmt.Sprintf("%s: %s", c.Registry, c.Unlisted))
		case !c.Visible:
			hidden = append(hidden, c.Registry)
		default:
			shown = append(shown, c.Registry)
		}
	}
	switch {
	case len(failed) > 0:
		return Verdict{corev1.ConditionFalse, ReasonRegistryError, "cannot tell whether callers can find the pod: " + strings.Join(failed, "; "), true}
	case len(hidden) > 0:
		return Verdict{corev1.ConditionFalse, ReasonNotVisible, "not yet visible in " + strings.Join(hidden, ", "), true}
	case len(shown) == 0 && len(unlisted) > 0:
		return Verdict{corev1.ConditionTrue, ReasonUnlisted, "no registry will list the pod, nothing to wait for (" + strings.Join(unlisted, "; ") + ")", false}
	case len(unlisted) > 0:
		return Verdict{corev1.ConditionTrue, ReasonVisible, "callers can find the pod in " + strings.Join(shown, ", ") + " (" + strings.Join(unlisted, "; ") + ")", false}
	default:
		return Verdict{corev1.ConditionTrue, ReasonVisible, "callers can find the pod in " + strings.Join(shown, ", "), false}
	}
}
