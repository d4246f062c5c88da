package managed

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var (
	labelled   = Namespace{Labelled: true}
	unlabelled = Namespace{}
	excluded   = Namespace{Labelled: true, Excluded: true}
)

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// Injects answers as the chart's two webhook entries select and as inject.Pod skips.
func TestInjects(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		ns     Namespace
		want   bool
	}{
		{"labelled namespace, pod unlabelled", nil, labelled, true},
		{"labelled namespace, pod opted out", lbl(InjectLabel, "false"), labelled, false},
		{"labelled namespace, pod label not false", lbl(InjectLabel, "yes"), labelled, true},
		{"pod opted in elsewhere", lbl(InjectLabel, "true"), unlabelled, true},
		{"pod label other than true elsewhere", lbl(InjectLabel, "yes"), unlabelled, false},
		{"neither", lbl("app", "web"), unlabelled, false},
		{"excluded namespace", lbl(InjectLabel, "true"), excluded, false},
		{"managed label false: the webhook skips", lbl(InjectLabel, "true", Label, "false"), labelled, false},
		{"managed label true: injected too", lbl(InjectLabel, "true", Label, "true"), unlabelled, true},
	}
	for _, tt := range tests {
		if got := Injects(tt.labels, tt.ns); got != tt.want {
			t.Errorf("%s: Injects = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestUninjected(t *testing.T) {
	pod := func(change func(p *corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: lbl(InjectLabel, "true")}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		change(p)
		return p
	}
	now := metav1.Now()
	tests := []struct {
		name string
		pod  *corev1.Pod
		ns   Namespace
		want bool
	}{
		{"opted in, not injected", pod(func(*corev1.Pod) {}), unlabelled, true},
		{"pending counts", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), unlabelled, true},
		{"injected", pod(func(p *corev1.Pod) {
			p.Annotations = lbl(InjectedAnnotation, "init-container")
			p.Labels[Label] = "true"
		}), unlabelled, false},
		{"injected mark alone", pod(func(p *corev1.Pod) { p.Annotations = lbl(InjectedAnnotation, "image-volume") }), unlabelled, false},
		{"lastcall by hand: the gate", pod(func(p *corev1.Pod) { p.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: Gate}} }), unlabelled, false},
		{"lastcall by hand: the label", pod(func(p *corev1.Pod) { p.Labels[Label] = "true" }), unlabelled, false},
		{"in a labelled namespace", pod(func(p *corev1.Pod) { p.Labels = nil }), labelled, true},
		{"opted out of a labelled namespace", pod(func(p *corev1.Pod) { p.Labels[InjectLabel] = "false" }), labelled, false},
		{"not opted in", pod(func(p *corev1.Pod) { p.Labels = nil }), unlabelled, false},
		{"excluded namespace", pod(func(*corev1.Pod) {}), excluded, false},
		{"succeeded", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), unlabelled, false},
		{"failed", pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), unlabelled, false},
		{"being deleted", pod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), unlabelled, false},
	}
	for _, tt := range tests {
		if got := Uninjected(tt.pod, tt.ns); got != tt.want {
			t.Errorf("%s: Uninjected = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestAdopt(t *testing.T) {
	tmpl := func(labels map[string]string, gates ...corev1.PodConditionType) *corev1.PodTemplateSpec {
		t := &corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
		for _, g := range gates {
			t.Spec.ReadinessGates = append(t.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: g})
		}
		return t
	}
	tests := []struct {
		name     string
		labels   map[string]string
		template *corev1.PodTemplateSpec
		ns       Namespace
		want     Adoption
	}{
		{"template opted in", nil, tmpl(lbl(InjectLabel, "true")), unlabelled, Injected},
		{"labelled namespace", nil, tmpl(lbl("app", "web")), labelled, Injected},
		{"template opted out of a labelled namespace", nil, tmpl(lbl(InjectLabel, "false")), labelled, NotManaged},
		{"opted out but labelled by hand", lbl(Label, "true"), tmpl(lbl(InjectLabel, "false")), labelled, Labelled},
		{"workload label", lbl(Label, "true"), tmpl(nil), unlabelled, Labelled},
		{"template label", nil, tmpl(lbl(Label, "true")), unlabelled, Labelled},
		{"template gate", nil, tmpl(nil, Gate), unlabelled, Labelled},
		{"other gate", nil, tmpl(nil, "example.com/ready"), unlabelled, NotManaged},
		{"labelled and opted in: injected wins (hook and gate come from the webhook)", lbl(Label, "true"), tmpl(lbl(InjectLabel, "true", Label, "true")), unlabelled, Injected},
		{"excluded namespace", nil, tmpl(lbl(InjectLabel, "true")), excluded, NotManaged},
		{"nothing", lbl("app", "web"), tmpl(lbl("app", "web")), unlabelled, NotManaged},
	}
	for _, tt := range tests {
		if got := Adopt(tt.labels, tt.template, tt.ns); got != tt.want {
			t.Errorf("%s: Adopt = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOwnerOf(t *testing.T) {
	owned := func(apiVersion, kind, name, hash string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", OwnerReferences: []metav1.OwnerReference{
			{APIVersion: "v1", Kind: "Node", Name: "n1"}, // not the controller
			{APIVersion: apiVersion, Kind: kind, Name: name, Controller: ptr.To(true)}}}}
		if hash != "" {
			p.Labels = lbl(appsv1.DefaultDeploymentUniqueLabelKey, hash)
		}
		return p
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		want Workload
		ok   bool
	}{
		{"Deployment through its ReplicaSet", owned("apps/v1", "ReplicaSet", "web-7d9f8", "7d9f8"), Workload{Deployment, "web"}, true},
		{"hyphenated Deployment", owned("apps/v1", "ReplicaSet", "my-web-7d9f8", "7d9f8"), Workload{Deployment, "my-web"}, true},
		{"StatefulSet", owned("apps/v1", "StatefulSet", "db", ""), Workload{StatefulSet, "db"}, true},
		{"ReplicaSet of its own", owned("apps/v1", "ReplicaSet", "web", ""), Workload{}, false},
		{"hash that is not the name's suffix", owned("apps/v1", "ReplicaSet", "web", "7d9f8"), Workload{}, false},
		{"Job", owned("batch/v1", "Job", "backup", ""), Workload{}, false},
		{"another group's StatefulSet", owned("apps.kruise.io/v1beta1", "StatefulSet", "db", ""), Workload{}, false},
		{"no controller", &corev1.Pod{}, Workload{}, false},
	}
	for _, tt := range tests {
		got, ok := OwnerOf(tt.pod)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: OwnerOf = %v, %v; want %v, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestWorkloadObject(t *testing.T) {
	if _, ok := (Workload{StatefulSet, "db"}).Object().(*appsv1.StatefulSet); !ok {
		t.Error("a StatefulSet is not read into a StatefulSet")
	}
	if _, ok := (Workload{Deployment, "web"}).Object().(*appsv1.Deployment); !ok {
		t.Error("a Deployment is not read into a Deployment")
	}
}

func TestIndexOwner(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f8-x", Labels: lbl(appsv1.DefaultDeploymentUniqueLabelKey, "7d9f8"),
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8", Controller: ptr.To(true)}}}}
	if got := IndexOwner(pod); got != nil {
		t.Errorf("a pod lastcall does not manage is indexed: %v", got)
	}
	pod.Labels[Label] = "true"
	if got := IndexOwner(pod); !slices.Equal(got, []string{"Deployment/web"}) {
		t.Errorf("IndexOwner = %v, want Deployment/web", got)
	}
	pod.OwnerReferences = nil
	if got := IndexOwner(pod); got != nil {
		t.Errorf("a managed pod of no workload is indexed: %v", got)
	}
}
