package webhook

import (
	"encoding/json"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// The patch built from the fields takes every injected pod shape to exactly the injected pod.
func TestPatchOfMatchesTheInjection(t *testing.T) {
	web := func() corev1.Container { return corev1.Container{Name: "web", Image: "web:1"} }
	withAll := web()
	withAll.Env = []corev1.EnvVar{{Name: "MODE", Value: "prod"}}
	withAll.VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	withAll.Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}
	ownHook := web()
	ownHook.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"sleep", "5"}}}}
	always := corev1.ContainerRestartPolicyAlways
	tests := []struct {
		name string
		pod  corev1.Pod
		mode inject.Mode
	}{
		{name: "plain", pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{web()}}}},
		{name: "labels with a slash, annotations, env, mounts, volumes, a postStart hook, a sidecar, a gate", pod: corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "example.com/tier": "front"}, Annotations: map[string]string{"note": "x"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{withAll},
				InitContainers: []corev1.Container{{Name: "proxy", Image: "proxy:1", RestartPolicy: &always}},
				Volumes:        []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
				ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "example.com/ready"}}}}},
		{name: "a preStop hook of its own is kept", pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{ownHook}}}},
		{name: "the second container, by annotation", pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{inject.ContainerAnnotation: "api"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{web(), {Name: "api", Image: "api:1"}}}}},
		{name: "image-volume mode", pod: corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{web()}}}, mode: inject.ModeImageVolume},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := testInject()
			if tt.mode != "" {
				o.Mode = tt.mode
			}
			res := inject.Pod(&tt.pod, o)
			if !res.Changed {
				t.Fatal("not injected")
			}
			ops, ok := patchOf(&tt.pod, res.Pod)
			if !ok {
				t.Fatal("patchOf fell back on an injection")
			}
			got := apply(t, &tt.pod, ops)
			if !equality.Semantic.DeepEqual(got, res.Pod) {
				t.Errorf("patched pod differs from the injected one:\n got %+v\nwant %+v", got.Spec, res.Pod.Spec)
			}
			// injecting the injected pod changes nothing
			again := inject.Pod(res.Pod, o)
			if ops, ok := patchOf(res.Pod, again.Pod); !ok || len(ops) > 0 {
				t.Errorf("re-injection: %d operations (ok %v), want none", len(ops), ok)
			}
		})
	}
}

// Differences the injection never makes fall back to the full diff.
func TestPatchOfFallsBack(t *testing.T) {
	base := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Env: []corev1.EnvVar{{Name: "A", Value: "1"}}}},
			Volumes: []corev1.Volume{{Name: "a"}, {Name: "b"}}}}
	tests := []struct {
		name   string
		change func(p *corev1.Pod)
	}{
		{"another field", func(p *corev1.Pod) { p.Spec.NodeName = "n1" }},
		{"a label removed", func(p *corev1.Pod) { p.Labels = map[string]string{"other": "x"} }},
		{"a volume removed", func(p *corev1.Pod) { p.Spec.Volumes = p.Spec.Volumes[:1] }},
		{"an env value changed", func(p *corev1.Pod) { p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "A", Value: "2"}} }},
		{"a container's image", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "web:2" }},
		{"a container added", func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x"}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			after := base.DeepCopy()
			tt.change(after)
			if _, ok := patchOf(&base, after); ok {
				t.Error("patchOf built a patch for a difference the injection does not make")
			}
		})
	}
}

func apply(t *testing.T, pod *corev1.Pod, ops any) *corev1.Pod {
	t.Helper()
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatchapply.DecodePatch(raw)
	if err != nil {
		t.Fatal(err)
	}
	out, err := patch.Apply(doc)
	if err != nil {
		t.Fatalf("apply %s: %v", raw, err)
	}
	got := &corev1.Pod{}
	if err := json.Unmarshal(out, got); err != nil {
		t.Fatal(err)
	}
	return got
}
