package rollout

import (
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	prestop "github.com/lastcall-dev/lastcall/preStop"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func deletingPod(grace int64) *corev1.Pod {
	kill := metav1.NewTime(t0.Add(time.Duration(grace) * time.Second))
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", DeletionTimestamp: &kill, DeletionGracePeriodSeconds: ptr.To(grace)},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "web"}, {Name: "sidecar"}}}}
}

func terminate(pod *corev1.Pod, i int, at time.Time, code int32) {
	pod.Status.ContainerStatuses[i].State.Terminated = &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(at), ExitCode: code}
}

func listed(kv ...any) map[string]bool {
	m := map[string]bool{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(bool)
	}
	return m
}

func TestAdvance(t *testing.T) {
	tests := []struct {
		name     string
		steps    func(pod *corev1.Pod) []Observation
		complete bool
		summary  []string
	}{
		{
			name: "endpoints only, both containers end",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				terminate(pod, 1, t0.Add(4*time.Second), 0)
				return []Observation{{Now: t0.Add(100 * time.Millisecond), Listed: listed("endpoints", false)}}
			},
			complete: true,
			summary:  []string{"out of endpoints +100ms", "containers terminated +4s", "exit code 0"},
		},
		{
			name: "consul still listed: not complete",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				terminate(pod, 1, t0.Add(3*time.Second), 0)
				return []Observation{{Now: t0.Add(time.Second), Listed: listed("endpoints", false, "consul", true)}}
			},
			complete: false,
			summary:  []string{"out of consul not seen"},
		},
		{
			name: "consul removed later; first non-zero exit code wins",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 137)
				terminate(pod, 1, t0.Add(2*time.Second), 1)
				return []Observation{
					{Now: t0.Add(time.Second), Listed: listed("endpoints", true, "consul", true)},
					{Now: t0.Add(2 * time.Second), Listed: listed("endpoints", false, "consul", false)},
				}
			},
			complete: true,
			summary:  []string{"out of consul +2s; out of endpoints +2s", "containers terminated +3s", "exit code 137"},
		},
		{
			name: "any registry by name",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				terminate(pod, 1, t0.Add(3*time.Second), 0)
				return []Observation{{Now: t0.Add(500 * time.Millisecond), Listed: listed("eureka", false)}}
			},
			complete: true,
			summary:  []string{"out of eureka +500ms"},
		},
		{
			name: "every node stopped routing, with the slowest node",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				terminate(pod, 1, t0.Add(3*time.Second), 0)
				return []Observation{
					{Now: t0.Add(100 * time.Millisecond), Listed: listed("endpoints", false), Dataplane: &Stage{Registry: DataplaneStage}},
					{Now: t0.Add(2 * time.Second), Listed: listed("endpoints", false),
						Dataplane: &Stage{Registry: DataplaneStage, Out: t0.Add(1234 * time.Millisecond), Slowest: "node-7"}},
				}
			},
			complete: true,
			summary:  []string{"out of endpoints +100ms; every node stopped routing +1.23s (slowest node-7); containers terminated +3s"},
		},
		{
			name: "nodes unconfirmed: the dataplane stage is not seen",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				terminate(pod, 1, t0.Add(3*time.Second), 0)
				return []Observation{{Now: t0.Add(time.Second), Listed: listed("endpoints", false), Dataplane: &Stage{Registry: DataplaneStage}}}
			},
			complete: false,
			summary:  []string{"every node stopped routing not seen"},
		},
		{
			name: "one container still running",
			steps: func(pod *corev1.Pod) []Observation {
				terminate(pod, 0, t0.Add(3*time.Second), 0)
				return []Observation{{Now: t0.Add(time.Second), Listed: listed("endpoints", false)}}
			},
			complete: false,
			summary:  []string{"containers terminated not seen"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := deletingPod(30)
			var tl Timeline
			for _, o := range tt.steps(pod) {
				tl = Advance(tl, pod, o)
			}
			if !tl.Deleted.Equal(t0) {
				t.Errorf("Deleted = %s, want deletionTimestamp − grace = %s", tl.Deleted, t0)
			}
			if tl.Complete() != tt.complete {
				t.Errorf("Complete = %v, want %v (%+v)", tl.Complete(), tt.complete, tl)
			}
			s := tl.Summary("web-1", CauseScaleDown)
			for _, w := range tt.summary {
				if !strings.Contains(s, w) {
					t.Errorf("summary %q lacks %q", s, w)
				}
			}
			back := Parse(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: tl.Encode()}}})
			if !back.Equal(tl) {
				t.Errorf("annotation round trip: %s != %s", back.Encode(), tl.Encode())
			}
		})
	}
}

// An annotation written before stages were keyed by registry name resumes where it was.
func TestParseLegacyAnnotation(t *testing.T) {
	tests := []struct {
		name   string
		legacy string
		want   []Stage
	}{
		{"endpoints seen, consul awaited", `{"deleted":"2026-11-23T12:00:00Z","unready":"2026-11-23T12:00:01Z","consul":true}`,
			[]Stage{{Registry: "endpoints", Out: t0.Add(time.Second)}, {Registry: "consul"}}},
		{"both seen", `{"deleted":"2026-11-23T12:00:00Z","unready":"2026-11-23T12:00:01Z","deregistered":"2026-11-23T12:00:02Z","consul":true}`,
			[]Stage{{Registry: "endpoints", Out: t0.Add(time.Second)}, {Registry: "consul", Out: t0.Add(2 * time.Second)}}},
		{"nothing seen yet", `{"deleted":"2026-11-23T12:00:00Z"}`, nil},
		{"mangled", `{"deleted":`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := Parse(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: tt.legacy}}})
			if !slices.Equal(tl.Registries, tt.want) {
				t.Errorf("stages = %+v, want %+v", tl.Registries, tt.want)
			}
		})
	}
}

// TestRolloutSequence applies the events of a drain in seeded random orders, with repeated and
// stale observations as a resync or a restarted controller produces, and checks the invariants
// after every step.
func TestRolloutSequence(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 42))
		pod := deletingPod(30)
		type ev func(now time.Time) Observation
		state := map[string]bool{"endpoints": true, "consul": true}
		look := func(now time.Time) Observation { return Observation{Now: now, Listed: maps.Clone(state)} }
		events := []ev{
			func(now time.Time) Observation { state["endpoints"] = false; return look(now) },
			func(now time.Time) Observation { state["consul"] = false; return look(now) },
			func(now time.Time) Observation {
				terminate(pod, 0, now, 0)
				terminate(pod, 1, now, 0)
				return look(now)
			},
		}
		// Duplicates: the same state observed again later.
		for range rng.IntN(4) {
			events = append(events, look)
		}
		rng.Shuffle(len(events), func(i, j int) { events[i], events[j] = events[j], events[i] })

		var tl Timeline
		now := t0
		for step, e := range events {
			now = now.Add(time.Duration(1+rng.IntN(500)) * time.Millisecond)
			prev := tl
			// A restarted controller starts from the annotation, not from memory.
			if rng.IntN(3) == 0 {
				tl = Parse(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: tl.Encode()}}})
			}
			tl = Advance(tl, pod, e(now))
			for _, before := range append(prev.Registries, Stage{Registry: "terminated", Out: prev.Terminated}) {
				after := tl.Terminated
				if i := slices.IndexFunc(tl.Registries, func(s Stage) bool { return s.Registry == before.Registry }); i >= 0 {
					after = tl.Registries[i].Out
				} else if before.Registry != "terminated" {
					t.Fatalf("seed %d step %d: stage %s lost", seed, step, before.Registry)
				}
				if !before.Out.IsZero() && !before.Out.Equal(after) {
					t.Fatalf("seed %d step %d: %s moved from %s to %s", seed, step, before.Registry, before.Out, after)
				}
				if !after.IsZero() && after.Before(tl.Deleted) {
					t.Fatalf("seed %d step %d: %s before the deletion", seed, step, before.Registry)
				}
			}
			seenAll := !state["endpoints"] && !state["consul"] && pod.Status.ContainerStatuses[0].State.Terminated != nil
			if tl.Complete() != seenAll {
				t.Fatalf("seed %d step %d: Complete = %v with state %v, terminated=%v",
					seed, step, tl.Complete(), state, pod.Status.ContainerStatuses[0].State.Terminated != nil)
			}
		}
		if !tl.Complete() {
			t.Fatalf("seed %d: incomplete after every event: %+v", seed, tl)
		}
	}
}

func TestCause(t *testing.T) {
	tests := []struct {
		name string
		d    appsv1.Deployment
		want string
	}{
		{"template change not yet observed", appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Status: appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 3, UpdatedReplicas: 3}}, CauseRollingUpdate},
		{"old pods left", appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3)}, Status: appsv1.DeploymentStatus{Replicas: 4, UpdatedReplicas: 2}}, CauseRollingUpdate},
		{"fewer replicas wanted", appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}, Status: appsv1.DeploymentStatus{Replicas: 6, UpdatedReplicas: 6}}, CauseScaleDown},
		{"steady: a plain deletion", appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3)}, Status: appsv1.DeploymentStatus{Replicas: 3, UpdatedReplicas: 3}}, CauseOther},
	}
	for _, tt := range tests {
		if got := DeploymentCause(&tt.d); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
	s := &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2)}, Status: appsv1.StatefulSetStatus{Replicas: 2, CurrentRevision: "a", UpdateRevision: "b"}}
	if got := StatefulSetCause(s); got != CauseRollingUpdate {
		t.Errorf("StatefulSet revision change: %s", got)
	}
	s.Status.UpdateRevision, s.Status.Replicas = "a", 3
	if got := StatefulSetCause(s); got != CauseScaleDown {
		t.Errorf("StatefulSet scale-down: %s", got)
	}
}

// reportLine is lastcall-prestop's line in a termination message.
func reportLine(open *int, tookMs int64) string {
	return prestop.Report{Open: open, QuietMs: 1200, QuietWhy: prestop.QuietTraffic, Quiet: true, TookMs: tookMs, BudgetMs: 20000}.Line()
}

func ended(message string) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.NewTime(t0.Add(5 * time.Second)), Message: message}}
}

// The helper's report comes from the termination message of the container it ran in, this
// run's only, once that container ended; it is kept in the annotation and said in the Event.
func TestHelpersReportFromTerminationMessages(t *testing.T) {
	tests := []struct {
		name     string
		statuses []corev1.ContainerStatus
		want     []string // containers with a report, in order
		summary  []string
		not      []string
	}{
		{
			name: "the hook's container, after the app's own message",
			statuses: []corev1.ContainerStatus{
				{Name: "web", State: ended("app: bye\n" + reportLine(ptr.To(2), 3210))},
				{Name: "sidecar", State: ended("")},
			},
			want:    []string{"web"},
			summary: []string{"containers terminated +5s; helper returned after 3.21s of its 20s budget, quiet for 1.2s (traffic), 2 connections still open; exit code 0"},
		},
		{
			name: "one connection, open count unknown elsewhere",
			statuses: []corev1.ContainerStatus{
				{Name: "web", State: ended(reportLine(ptr.To(1), 100))},
				{Name: "api", State: ended(reportLine(nil, 200))},
			},
			want:    []string{"web", "api"},
			summary: []string{"helper in web returned after 100ms of its 20s budget, quiet for 1.2s (traffic), 1 connection still open;", "helper in api returned after 200ms of its 20s budget, quiet for 1.2s (traffic);"},
		},
		{
			name:     "a report from an earlier run of the container is not this drain's",
			statuses: []corev1.ContainerStatus{{Name: "web", State: ended("app: bye\n"), LastTerminationState: ended(reportLine(ptr.To(9), 100))}},
			not:      []string{"helper"},
		},
		{
			name:     "the app replaced the message, or the kubelet cut it",
			statuses: []corev1.ContainerStatus{{Name: "web", State: ended("fatal: x\n" + reportLine(ptr.To(2), 100)[:30])}},
			not:      []string{"helper"},
		},
		{
			name:     "still running: no report yet",
			statuses: []corev1.ContainerStatus{{Name: "web"}, {Name: "sidecar", State: ended(reportLine(ptr.To(0), 100))}},
			want:     []string{"sidecar"},
			summary:  []string{"containers terminated not seen; helper returned after 100ms of its 20s budget, quiet for 1.2s (traffic), 0 connections still open"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := deletingPod(30)
			pod.Status.ContainerStatuses = tt.statuses
			tl := Advance(Timeline{}, pod, Observation{Now: t0.Add(time.Second)})
			var got []string
			for _, h := range tl.Helpers {
				got = append(got, h.Container)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("reports from %v, want %v", got, tt.want)
			}
			s := tl.Summary("web-1", CauseRollingUpdate)
			for _, w := range tt.summary {
				if !strings.Contains(s, w) {
					t.Errorf("summary %q lacks %q", s, w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(s, w) {
					t.Errorf("summary %q has %q", s, w)
				}
			}
			back := Parse(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: tl.Encode()}}})
			if !back.Equal(tl) {
				t.Errorf("annotation round trip: %s != %s", back.Encode(), tl.Encode())
			}
			// A later look, the message since changed: the first report stays.
			for i := range pod.Status.ContainerStatuses {
				pod.Status.ContainerStatuses[i].State = ended(reportLine(ptr.To(7), 1))
			}
			again := Advance(back, pod, Observation{Now: t0.Add(2 * time.Second)})
			for i, h := range tl.Helpers {
				if !reflect.DeepEqual(again.Helpers[i], h) {
					t.Errorf("report of %s replaced: %+v, was %+v", h.Container, again.Helpers[i], h)
				}
			}
		})
	}
}

// Annotations written before helpers were reported read as they were, and say the same again:
// no patch for a pod whose drain an older controller started.
func TestParseAnnotationWithoutHelpers(t *testing.T) {
	old := `{"deleted":"2026-11-23T12:00:00Z","registries":[{"registry":"endpoints","out":"2026-11-23T12:00:01Z"}],"terminated":"2026-11-23T12:00:05Z","exitCode":0}`
	tl := Parse(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{Annotation: old}}})
	if !tl.Complete() || tl.Helpers != nil || tl.ExitCode == nil {
		t.Fatalf("parsed %+v", tl)
	}
	if tl.Encode() != old {
		t.Errorf("encoded again as %s, was %s", tl.Encode(), old)
	}
	if n, ok := tl.MaxOpen(); ok {
		t.Errorf("open connections %d known without a report", n)
	}
}

func TestMaxOpen(t *testing.T) {
	tl := Timeline{Helpers: []Helper{{Container: "a", Report: prestop.Report{Open: ptr.To(1)}}, {Container: "b"}, {Container: "c", Report: prestop.Report{Open: ptr.To(3)}}}}
	if n, ok := tl.MaxOpen(); n != 3 || !ok {
		t.Errorf("MaxOpen = %d, %v; want 3, true", n, ok)
	}
}
