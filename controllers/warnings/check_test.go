package warnings

import (
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// defaults are lastcall-prestop's: 20s budget, 10s reserve.
var defaults = prestop.Drain{MaxWait: prestop.DefaultMaxWait, Reserve: prestop.DefaultReserve}

// safe is a Deployment that passes every check; each case breaks one thing.
func safe() *appsv1.Deployment {
	zero := intstr.FromInt32(0)
	return &appsv1.Deployment{Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](2),
		Strategy: appsv1.DeploymentStrategy{RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero}},
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](40),
			ReadinessGates:                []corev1.PodReadinessGate{{ConditionType: managed.Gate}},
			Containers: []corev1.Container{{Name: "web", Lifecycle: &corev1.Lifecycle{
				PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/lastcall-prestop"}}}}}},
		}},
	}}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *appsv1.Deployment)
		want   []string
	}{
		{"safe", func(*appsv1.Deployment) {}, nil},
		{"default grace 30s holds default budget 20s + reserve 10s", func(d *appsv1.Deployment) { d.Spec.Template.Spec.TerminationGracePeriodSeconds = nil }, nil},
		{"grace too short", func(d *appsv1.Deployment) { d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](15) }, []string{GraceTooShort}},
		{"budget from the workload annotation", func(d *appsv1.Deployment) {
			d.Annotations = map[string]string{managed.DrainBudgetAnnotation: "35s"}
		}, []string{GraceTooShort}},
		{"reserve from the template annotation", func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{managed.ReserveAnnotation: "5s", managed.DrainBudgetAnnotation: "30s"}
		}, nil},
		{"bad annotation", func(d *appsv1.Deployment) { d.Annotations = map[string]string{managed.ReserveAnnotation: "ten"} }, []string{InvalidAnnotation}},
		{"no preStop hook", func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Lifecycle = nil }, []string{NoPreStopHook}},
		{"no readiness gate", func(d *appsv1.Deployment) { d.Spec.Template.Spec.ReadinessGates = nil }, []string{NoReadinessGate}},
		{"default 25% of 2 rounds down to 0", func(d *appsv1.Deployment) { d.Spec.Strategy.RollingUpdate = nil }, nil},
		{"25% of 4 is 1 but 4 is not small", func(d *appsv1.Deployment) {
			d.Spec.Strategy.RollingUpdate = nil
			d.Spec.Replicas = ptr.To[int32](4)
		}, nil},
		{"maxUnavailable 1 of 2", func(d *appsv1.Deployment) {
			one := intstr.FromInt32(1)
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = &one
		}, []string{MaxUnavailableAtSmallScale}},
		{"50% of 3", func(d *appsv1.Deployment) {
			half := intstr.FromString("50%")
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = &half
			d.Spec.Replicas = ptr.To[int32](3)
		}, []string{MaxUnavailableAtSmallScale}},
		{"Recreate is not a rolling update", func(d *appsv1.Deployment) {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := safe()
			tt.change(d)
			var got []string
			for _, f := range Check(FromDeployment(d), defaults) {
				got = append(got, f.Check)
				if f.Message == "" {
					t.Errorf("%s without a message", f.Check)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("findings = %v, want %v", got, tt.want)
			}
		})
	}
}

// A workload the webhook injects gets the hook and the gate in its pods, not in its template;
// the rest is checked as for any other.
func TestCheckInjectedWorkload(t *testing.T) {
	d := safe()
	d.Spec.Template.Spec.ReadinessGates = nil
	d.Spec.Template.Spec.Containers[0].Lifecycle = nil
	w := FromDeployment(d)
	w.Injected = true
	if f := Check(w, defaults); len(f) != 0 {
		t.Errorf("findings = %v, want none: the webhook adds the hook and the gate", f)
	}
	w.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](10)
	if f := Check(w, defaults); len(f) != 1 || f[0].Check != GraceTooShort {
		t.Errorf("findings = %v, want %s", f, GraceTooShort)
	} else if !strings.Contains(f[0].Message, "(drain 6.667s, app 3.333s)") {
		// 10 s for 20 s + 10 s: lastcall-prestop's split, 2:1
		t.Errorf("message %q does not say how lastcall-prestop splits the grace period", f[0].Message)
	}
}

// The cache keeps workloads slimmed (managed.CachedWorkload): the checks find on what it keeps
// what they find on the whole object.
func TestCheckReadsTheCachedWorkloadAsTheWholeOne(t *testing.T) {
	variants := map[string]func(d *appsv1.Deployment){
		"safe": func(*appsv1.Deployment) {},
		"everything": func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
			d.Spec.Template.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/ready"}}
			d.Spec.Template.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"x"}}}}
			d.Spec.Strategy.RollingUpdate = nil
			d.Annotations = map[string]string{managed.ReserveAnnotation: "ten", "other": "x"}
		},
		"hook on the second container": func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers = append([]corev1.Container{{Name: "sidecar"}}, d.Spec.Template.Spec.Containers...)
		},
		"settings on the template": func(d *appsv1.Deployment) {
			d.Spec.Template.Annotations = map[string]string{managed.DrainBudgetAnnotation: "45s", "prometheus.io/scrape": "true"}
		},
		"Recreate": func(d *appsv1.Deployment) {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		},
	}
	for name, change := range variants {
		d := safe()
		change(d)
		cached, err := managed.CachedWorkload(d.DeepCopy())
		if err != nil {
			t.Fatal(err)
		}
		whole, slim := Check(FromDeployment(d), defaults), Check(FromDeployment(cached.(*appsv1.Deployment)), defaults)
		if !slices.Equal(whole, slim) {
			t.Errorf("%s: cached %v, whole %v", name, slim, whole)
		}
		s := &appsv1.StatefulSet{ObjectMeta: d.ObjectMeta, Spec: appsv1.StatefulSetSpec{Replicas: d.Spec.Replicas, Template: d.Spec.Template}}
		cachedSet, _ := managed.CachedWorkload(s.DeepCopy())
		if whole, slim := Check(FromStatefulSet(s), defaults), Check(FromStatefulSet(cachedSet.(*appsv1.StatefulSet)), defaults); !slices.Equal(whole, slim) {
			t.Errorf("%s StatefulSet: cached %v, whole %v", name, slim, whole)
		}
	}
}

func TestNotInjectedMessageSaysHowToInject(t *testing.T) {
	for _, tt := range []struct{ restart, want string }{
		{"kubectl rollout restart -n shop deployment/web", "restart its workload: kubectl rollout restart -n shop deployment/web"},
		{"", "delete the pod and create it again"},
	} {
		if m := message("web-1", tt.restart); !strings.Contains(m, "pod web-1") || !strings.Contains(m, managed.InjectLabel) || !strings.HasSuffix(m, tt.want) {
			t.Errorf("message %q: want the pod, the label and %q", m, tt.want)
		}
	}
}

func TestCheckUsesTheControllersDrainDefaults(t *testing.T) {
	d := safe() // grace 40s
	if f := Check(FromDeployment(d), prestop.Drain{MaxWait: 35 * time.Second, Reserve: 10 * time.Second}); len(f) != 1 || f[0].Check != GraceTooShort {
		t.Errorf("findings with --max-wait=35s = %v, want %s", f, GraceTooShort)
	}
}

func TestCheckStatefulSetHasNoMaxUnavailableFinding(t *testing.T) {
	s := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Template: safe().Spec.Template}}
	if f := Check(FromStatefulSet(s), defaults); len(f) != 0 {
		t.Errorf("findings = %v, want none", f)
	}
}
