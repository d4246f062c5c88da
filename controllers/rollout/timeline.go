// Package rollout observes how managed pods drain during rolling updates and scale-downs: each
// deleting pod's timeline (deletion → out of each registry the pod uses → containers terminated,
// with what lastcall-prestop reported when it returned) is kept on the pod itself, so a
// restarted controller resumes it, and is published as an Event on the workload and as
// Prometheus histograms once complete.
package rollout

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// Annotation holds the pod's timeline as JSON.
const Annotation = "lastcall.dev/drain-timeline"

// Timeline is one pod's drain. Zero times are stages not yet seen.
type Timeline struct {
	Deleted time.Time `json:"deleted"`
	// Registries are the stages "out of the registry", one per registry the pod is watched in,
	// in the order they were first observed.
	Registries []Stage   `json:"registries,omitempty"`
	Terminated time.Time `json:"terminated,omitzero"`
	ExitCode   *int32    `json:"exitCode,omitempty"`
	// Helpers are what lastcall-prestop reported when it returned, one per container it ran in,
	// from the containers' termination messages. None when the helper predates the report, the
	// app replaced the message, or the message was cut.
	Helpers []Helper `json:"helpers,omitempty"`
	// Reported is set once the Event and metrics went out.
	Reported bool `json:"reported,omitempty"`
}

// Stage is when one registry stopped listing the pod (for EndpointSlices: as ready); the stage
// DataplaneStage is when every node's dataplane stopped routing to it.
type Stage struct {
	Registry string    `json:"registry"`
	Out      time.Time `json:"out,omitzero"`
	// Slowest is the node that stopped routing last (DataplaneStage only).
	Slowest string `json:"slowest,omitempty"`
}

// Helper is one lastcall-prestop's report, from the termination message of the container it ran
// in (the helper writes to its own container's terminationMessagePath; the marker says it was
// the helper).
type Helper struct {
	Container string `json:"container"`
	prestop.Report
}

// DataplaneStage keys the stage "every node stopped routing", from the pod's
// lastcall.dev/dataplane-drained condition (lastcall-node's agents, through the controller).
const DataplaneStage = "dataplane"

// Observation is what one look at the pod and its registries found.
type Observation struct {
	Now time.Time
	// Listed holds, per registry the pod is watched in, whether it still lists the pod; an
	// unanswered question counts as listed.
	Listed map[string]bool
	// Dataplane is the dataplane stage once the pod has the condition (its Out once every
	// node confirmed); nil while the agents are not asked about the pod.
	Dataplane *Stage
}

// legacy is the annotation as lastcall wrote it before stages were keyed by registry name: a
// controller upgraded in the middle of a rollout resumes the drains it had started.
type legacy struct {
	Unready      time.Time `json:"unready,omitzero"`
	Deregistered time.Time `json:"deregistered,omitzero"`
	Consul       bool      `json:"consul,omitempty"`
}

// Parse reads the annotation, in either format; a missing or unreadable one starts a new
// timeline.
func Parse(pod *corev1.Pod) Timeline {
	v := pod.Annotations[Annotation]
	if v == "" {
		return Timeline{}
	}
	var tl Timeline
	if json.Unmarshal([]byte(v), &tl) != nil {
		return Timeline{} // a mangled annotation is restarted, not fatal
	}
	var old legacy
	if tl.Registries == nil && json.Unmarshal([]byte(v), &old) == nil && (!old.Unready.IsZero() || old.Consul) {
		// The old format always watched EndpointSlices, and Consul when the pod had a service;
		// without either field it had seen nothing that the next observation will not see.
		tl.Registries = []Stage{{Registry: "endpoints", Out: old.Unready}}
		if old.Consul {
			tl.Registries = append(tl.Registries, Stage{Registry: "consul", Out: old.Deregistered})
		}
	}
	return tl
}

// Encode writes the annotation value.
func (tl Timeline) Encode() string {
	b, _ := json.Marshal(tl)
	return string(b)
}

// Equal reports whether two timelines say the same.
func (tl Timeline) Equal(other Timeline) bool { return tl.Encode() == other.Encode() }

// Advance records the stages this observation shows for the first time. Pure: the caller
// supplies the pod and what the registries said.
func Advance(tl Timeline, pod *corev1.Pod, o Observation) Timeline {
	tl.Registries = slices.Clone(tl.Registries)
	if tl.Deleted.IsZero() && pod.DeletionTimestamp != nil {
		// deletionTimestamp is when SIGKILL is due; the deletion itself came a grace period earlier.
		grace := time.Duration(0)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		tl.Deleted = pod.DeletionTimestamp.Add(-grace)
	}
	names := make([]string, 0, len(o.Listed))
	for name := range o.Listed {
		names = append(names, name)
	}
	slices.Sort(names) // stages first seen together are kept in a stable order
	for _, name := range names {
		i := slices.IndexFunc(tl.Registries, func(s Stage) bool { return s.Registry == name })
		if i < 0 {
			tl.Registries = append(tl.Registries, Stage{Registry: name})
			i = len(tl.Registries) - 1
		}
		if tl.Registries[i].Out.IsZero() && !o.Listed[name] {
			tl.Registries[i].Out = o.Now
		}
	}
	if d := o.Dataplane; d != nil {
		i := slices.IndexFunc(tl.Registries, func(s Stage) bool { return s.Registry == DataplaneStage })
		if i < 0 {
			tl.Registries = append(tl.Registries, Stage{Registry: DataplaneStage})
			i = len(tl.Registries) - 1
		}
		if tl.Registries[i].Out.IsZero() && !d.Out.IsZero() {
			tl.Registries[i].Out, tl.Registries[i].Slowest = d.Out, d.Slowest
		}
	}
	if tl.Terminated.IsZero() {
		if at, code, ok := terminated(pod); ok {
			tl.Terminated, tl.ExitCode = at, &code
		}
	}
	tl.Helpers = helpers(tl.Helpers, pod)
	return tl
}

// helpers adds the reports of containers that ended since the last look. Only the current
// state counts: lastState is an earlier run of the container (a restart, whose preStop hook
// reported too), not this drain; and each run's message is a new file, so the current one holds
// this drain's report alone.
func helpers(known []Helper, pod *corev1.Pod) []Helper {
	out := slices.Clone(known)
	for _, cs := range pod.Status.ContainerStatuses {
		t := cs.State.Terminated
		if t == nil || slices.ContainsFunc(out, func(h Helper) bool { return h.Container == cs.Name }) {
			continue
		}
		if r, ok := prestop.ParseReport(t.Message); ok {
			out = append(out, Helper{Container: cs.Name, Report: r})
		}
	}
	return out
}

// MaxOpen is the most inbound connections any helper of the pod left open, and whether one
// counted them. The helpers of one pod share its network namespace and, with the default
// --ports, count the same sockets: a sum would count them twice.
func (tl Timeline) MaxOpen() (int, bool) {
	n, known := 0, false
	for _, h := range tl.Helpers {
		if h.Open != nil {
			n, known = max(n, *h.Open), true
		}
	}
	return n, known
}

// Complete reports whether every stage has been seen.
func (tl Timeline) Complete() bool {
	return !tl.Terminated.IsZero() && !slices.ContainsFunc(tl.Registries, func(s Stage) bool { return s.Out.IsZero() })
}

// Summary is the Event text; cause says why the pod went (rolling update, scale-down).
func (tl Timeline) Summary(pod, cause string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s drained (%s):", pod, cause)
	stage := func(name string, at time.Time, note string) {
		if at.IsZero() {
			fmt.Fprintf(&b, " %s not seen;", name)
			return
		}
		fmt.Fprintf(&b, " %s +%s%s;", name, at.Sub(tl.Deleted).Round(10*time.Millisecond), note)
	}
	for _, s := range tl.Registries {
		switch {
		case s.Registry != DataplaneStage:
			stage("out of "+s.Registry, s.Out, "")
		case s.Slowest != "":
			stage("every node stopped routing", s.Out, " (slowest "+s.Slowest+")")
		default:
			stage("every node stopped routing", s.Out, "")
		}
	}
	stage("containers terminated", tl.Terminated, "")
	for _, h := range tl.Helpers {
		fmt.Fprintf(&b, " %s;", h.summary(len(tl.Helpers) > 1))
	}
	if tl.ExitCode != nil {
		fmt.Fprintf(&b, " exit code %d", *tl.ExitCode)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// summary is the helper's part of the Event: "helper returned after 3.2s of its 20s budget,
// quiet for 1.2s (traffic), 2 connections still open".
func (h Helper) summary(named bool) string {
	var b strings.Builder
	b.WriteString("helper")
	if named {
		b.WriteString(" in " + h.Container)
	}
	ms := func(n int64) time.Duration { return (time.Duration(n) * time.Millisecond).Round(10 * time.Millisecond) }
	fmt.Fprintf(&b, " returned after %s of its %s budget", ms(h.TookMs), ms(h.BudgetMs))
	if h.FellBack {
		b.WriteString(", a registry could not confirm: fell back on the --max-wait wait")
	}
	switch {
	case h.QuietWhy == "" || h.QuietWhy == prestop.QuietOff:
	case h.Quiet:
		fmt.Fprintf(&b, ", quiet for %s (%s)", ms(h.QuietMs), h.QuietWhy)
	default:
		fmt.Fprintf(&b, ", not quiet for %s (%s) within the budget", ms(h.QuietMs), h.QuietWhy)
	}
	if h.Open != nil {
		noun := "connections"
		if *h.Open == 1 {
			noun = "connection"
		}
		fmt.Fprintf(&b, ", %d %s still open", *h.Open, noun)
	}
	return b.String()
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
