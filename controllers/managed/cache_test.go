package managed

import (
	"encoding/json"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestCachedPod(t *testing.T) {
	full := func(labels map[string]string, gates ...corev1.PodConditionType) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", UID: "u1", ResourceVersion: "7", Labels: labels,
				Annotations: map[string]string{"a": "b"}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
			Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "web"}}},
			Status: corev1.PodStatus{PodIP: "10.0.0.1", Phase: corev1.PodRunning},
		}
		for _, g := range gates {
			p.Spec.ReadinessGates = append(p.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: g})
		}
		return p
	}
	tests := []struct {
		name string
		pod  *corev1.Pod
		kept bool
	}{
		{"labelled", full(map[string]string{Label: "true"}), true},
		{"gate alone", full(nil, Gate), true},
		{"neither", full(map[string]string{"app": "web"}, "other.dev/ready"), false},
		{"label false", full(map[string]string{Label: "false"}), false},
		{"opted in, not injected", full(map[string]string{"app": "web", InjectLabel: "true"}), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := CachedPod(tt.pod.DeepCopy())
			if err != nil {
				t.Fatal(err)
			}
			got := out.(*corev1.Pod)
			if got.Name != "web-1" || got.Namespace != "shop" || got.UID != "u1" || got.ResourceVersion != "7" {
				t.Fatalf("identity lost: %+v", got.ObjectMeta)
			}
			if got.ManagedFields != nil {
				t.Error("managed fields kept")
			}
			if kept := got.Status.PodIP != "" && len(got.Spec.Containers) == 1 && got.Annotations["a"] == "b"; kept != tt.kept {
				t.Errorf("pod kept whole = %v, want %v", kept, tt.kept)
			}
			if tt.kept {
				return
			}
			if IsManaged(got) {
				t.Error("a slimmed pod reads as managed")
			}
			// What tells whether the webhook should have injected it survives.
			for _, ns := range []Namespace{{}, {Labelled: true}} {
				if Uninjected(got, ns) != Uninjected(tt.pod, ns) {
					t.Errorf("Uninjected in %+v: %v slimmed, %v whole", ns, Uninjected(got, ns), Uninjected(tt.pod, ns))
				}
			}
			if got.Labels["app"] != "" {
				t.Error("labels other than lastcall.dev/ kept")
			}
		})
	}
	if out, _ := CachedPod("tombstone"); out != "tombstone" {
		t.Error("non-pods must pass through")
	}
}

// bigDeployment is a Deployment as kubectl apply leaves it.
func bigDeployment() *appsv1.Deployment {
	half := intstr.FromString("50%")
	hook := &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/lastcall-prestop"}}},
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/warm-up"}}}}
	d := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u", ResourceVersion: "9", Generation: 4,
			Labels:        map[string]string{"app": "web", Label: "true"},
			Annotations:   map[string]string{DrainBudgetAnnotation: "25s", WarningsAnnotation: "NoReadinessGate", "deployment.kubernetes.io/revision": "3"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &half}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", InjectLabel: "true"}, Annotations: map[string]string{ReserveAnnotation: "5s", "prometheus.io/scrape": "true"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](45), ReadinessGates: []corev1.PodReadinessGate{{ConditionType: Gate}},
					Containers: []corev1.Container{
						{Name: "web", Image: "web:1", Lifecycle: hook, Env: []corev1.EnvVar{{Name: "A", Value: "b"}}},
						{Name: "sidecar", Image: "proxy:1"}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 4, UpdatedReplicas: 2, ReadyReplicas: 4,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}},
	}
	applied, _ := json.Marshal(d)
	d.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = string(applied)
	return d
}

// A cached workload keeps exactly what the checks and the drain timelines read.
func TestCachedWorkload(t *testing.T) {
	d := bigDeployment()
	out, err := CachedWorkload(d.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*appsv1.Deployment)
	want := &appsv1.Deployment{
		TypeMeta: d.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "u", ResourceVersion: "9", Generation: 4,
			Labels: map[string]string{Label: "true"}, Annotations: map[string]string{DrainBudgetAnnotation: "25s", WarningsAnnotation: "NoReadinessGate"}},
		Spec: appsv1.DeploymentSpec{Replicas: d.Spec.Replicas, Strategy: d.Spec.Strategy,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{InjectLabel: "true"}, Annotations: map[string]string{ReserveAnnotation: "5s"}},
				Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](45), ReadinessGates: d.Spec.Template.Spec.ReadinessGates,
					Containers: []corev1.Container{{Name: "web", Lifecycle: &corev1.Lifecycle{PreStop: d.Spec.Template.Spec.Containers[0].Lifecycle.PreStop}}}}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 4, Replicas: 4, UpdatedReplicas: 2},
	}
	if !equality.Semantic.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("cached\n%s\nwant\n%s", g, w)
	}

	s := &appsv1.StatefulSet{ObjectMeta: d.ObjectMeta, Spec: appsv1.StatefulSetSpec{Replicas: d.Spec.Replicas, Template: d.Spec.Template},
		Status: appsv1.StatefulSetStatus{Replicas: 3, CurrentRevision: "a", UpdateRevision: "b", ReadyReplicas: 3}}
	out, _ = CachedWorkload(s)
	gs := out.(*appsv1.StatefulSet)
	if !equality.Semantic.DeepEqual(gs.Status, appsv1.StatefulSetStatus{Replicas: 3, CurrentRevision: "a", UpdateRevision: "b"}) ||
		!equality.Semantic.DeepEqual(gs.Spec.Template, want.Spec.Template) || gs.Annotations["kubectl.kubernetes.io/last-applied-configuration"] != "" {
		t.Errorf("StatefulSet cached as %+v", gs)
	}
	if out, _ := CachedWorkload("tombstone"); out != "tombstone" {
		t.Error("others must pass through")
	}
}

func TestCachedNamespace(t *testing.T) {
	out, _ := CachedNamespace(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u", ResourceVersion: "3",
		Labels: map[string]string{InjectLabel: "true", "kubernetes.io/metadata.name": "shop"}, Annotations: map[string]string{"a": "b"}},
		Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}}})
	want := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", UID: "u", ResourceVersion: "3", Labels: map[string]string{InjectLabel: "true"}}}
	if !equality.Semantic.DeepEqual(out, want) {
		t.Errorf("cached %+v, want %+v", out, want)
	}
}
