// Package rollout observes how managed pods drain during rolling updates and scale-downs: each
// deleting pod's timeline (deletion → unready in EndpointSlices → out of Consul → containers
// terminated) is kept on the pod itself, so a restarted controller resumes it, and is published
// as an Event on the workload and as Prometheus histograms once complete.
package rollout

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Annotation holds the pod's timeline as JSON.
const Annotation = "lastcall.dev/drain-timeline"

// Timeline is one pod's drain. Zero times are stages not yet seen.
type Timeline struct {
	Deleted      time.Time `json:"deleted"`
	Unready      time.Time `json:"unready,omitzero"`
	Deregistered time.Time `json:"deregistered,omitzero"`
	Terminated   time.Time `json:"terminated,omitzero"`
	ExitCode     *int32    `json:"exitCode,omitempty"`
	// Consul is true when the pod is registered in Consul, whose removal is then a stage too.
	Consul bool `json:"consul,omitempty"`
	// Reported is set once the Event and metrics went out.
	Reported bool `json:"reported,omitempty"`
}

// Observation is what one look at the pod and its registries found.
type Observation struct {
	Now time.Time
	// ReadyInSlices: an EndpointSlice still lists the pod as ready.
	ReadyInSlices bool
	// InConsul: Consul still lists the pod; nil when Consul is not watched for this pod.
	InConsul *bool
}

// Parse reads the annotation; a missing or unreadable one starts a new timeline.
func Parse(pod *corev1.Pod) Timeline {
	var tl Timeline
	if v := pod.Annotations[Annotation]; v != "" {
		_ = json.Unmarshal([]byte(v), &tl) // a mangled annotation is restarted, not fatal
	}
	return tl
}

// Encode writes the annotation value.
func (tl Timeline) Encode() string {
	b, _ := json.Marshal(tl)
	return string(b)
}

// Advance records the stages this observation shows for the first time. Pure: the caller
// supplies the pod and what the registries said.
func Advance(tl Timeline, pod *corev1.Pod, o Observation) Timeline {
	if tl.Deleted.IsZero() && pod.DeletionTimestamp != nil {
		// deletionTimestamp is when SIGKILL is due; the deletion itself came a grace period earlier.
		grace := time.Duration(0)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		tl.Deleted = pod.DeletionTimestamp.Add(-grace)
	}
	if tl.Unready.IsZero() && !o.ReadyInSlices {
		tl.Unready = o.Now
	}
	tl.Consul = tl.Consul || o.InConsul != nil
	if tl.Deregistered.IsZero() && o.InConsul != nil && !*o.InConsul {
		tl.Deregistered = o.Now
	}
	if tl.Terminated.IsZero() {
		if at, code, ok := terminated(pod); ok {
			tl.Terminated, tl.ExitCode = at, &code
		}
	}
	return tl
}

// Complete reports whether every stage has been seen.
func (tl Timeline) Complete() bool {
	return !tl.Unready.IsZero() && (!tl.Consul || !tl.Deregistered.IsZero()) && !tl.Terminated.IsZero()
}

// Summary is the Event text; cause says why the pod went (rolling update, scale-down).
func (tl Timeline) Summary(pod, cause string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s drained (%s):", pod, cause)
	for _, s := range []struct {
		name string
		at   time.Time
	}{{"unready in EndpointSlices", tl.Unready}, {"out of Consul", tl.Deregistered}, {"containers terminated", tl.Terminated}} {
		if s.name == "out of Consul" && !tl.Consul {
			continue
		}
		if s.at.IsZero() {
			fmt.Fprintf(&b, " %s not seen;", s.name)
			continue
		}
		fmt.Fprintf(&b, " %s +%s;", s.name, s.at.Sub(tl.Deleted).Round(10*time.Millisecond))
	}
	if tl.ExitCode != nil {
		fmt.Fprintf(&b, " exit code %d", *tl.ExitCode)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// terminated returns when the last container ended and the first non-zero exit code (or 0),
// once every container has terminated.
func terminated(pod *corev1.Pod) (time.Time, int32, bool) {
	if len(pod.Status.ContainerStatuses) == 0 {
		return time.Time{}, 0, false
	}
	var last time.Time
	var code int32
	for _, cs := range pod.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil {
			return time.Time{}, 0, false
		}
		if t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
		if code == 0 {
			code = t.ExitCode
		}
	}
	return last, code, true
}

// Causes of a drain, as in the PodDrained Event.
const (
	CauseRollingUpdate = "rolling update"
	CauseScaleDown     = "scale-down"
	CauseOther         = "deletion"
)

// DeploymentCause tells why a Deployment is losing pods: a template change still rolling out, or
// fewer replicas wanted than it has.
func DeploymentCause(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	switch {
	case d.Generation != d.Status.ObservedGeneration || d.Status.UpdatedReplicas < d.Status.Replicas:
		return CauseRollingUpdate
	case want < d.Status.Replicas:
		return CauseScaleDown
	}
	return CauseOther
}

// StatefulSetCause is DeploymentCause for StatefulSets.
func StatefulSetCause(s *appsv1.StatefulSet) string {
	want := int32(1)
	if s.Spec.Replicas != nil {
		want = *s.Spec.Replicas
	}
	switch {
	case s.Status.UpdateRevision != "" && s.Status.CurrentRevision != s.Status.UpdateRevision:
		return CauseRollingUpdate
	case want < s.Status.Replicas:
		return CauseScaleDown
	}
	return CauseOther
}
