package managed

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestSettingsOf(t *testing.T) {
	tests := []struct {
		name    string
		ann     map[string]string
		want    []string
		wantErr string
	}{
		{"default: endpoints", nil, []string{Endpoints}, ""},
		{"consul service adds consul", map[string]string{ConsulServiceAnnotation: "web"}, []string{Endpoints, Consul}, ""},
		{"explicit list", map[string]string{ConsulServiceAnnotation: "web", RegistriesAnnotation: " consul "}, []string{Consul}, ""},
		{"duplicates collapse", map[string]string{RegistriesAnnotation: "endpoints,endpoints"}, []string{Endpoints}, ""},
		{"unknown registry", map[string]string{RegistriesAnnotation: "endpoints,etcd"}, nil, `unknown registry "etcd"`},
		{"empty list", map[string]string{RegistriesAnnotation: " , "}, nil, "is empty"},
		{"consul without service", map[string]string{RegistriesAnnotation: "consul"}, nil, ConsulServiceAnnotation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SettingsOf(tt.ann)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "annotation") {
					t.Fatalf("err = %v, want one naming the annotation and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(s.Registries, tt.want) {
				t.Errorf("registries = %v, %v; want %v", s.Registries, err, tt.want)
			}
		})
	}
}

func TestIsManaged(t *testing.T) {
	gate := corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: Gate}}}
	for _, tt := range []struct {
		name string
		pod  corev1.Pod
		want bool
	}{
		{"label", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{Label: "true"}}}, true},
		{"label false", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{Label: "false"}}}, false},
		{"gate", corev1.Pod{Spec: gate}, true},
		{"other gate", corev1.Pod{Spec: corev1.PodSpec{ReadinessGates: []corev1.PodReadinessGate{{ConditionType: "x"}}}}, false},
		{"neither", corev1.Pod{}, false},
	} {
		if got := IsManaged(&tt.pod); got != tt.want {
			t.Errorf("%s: IsManaged = %v, want %v", tt.name, got, tt.want)
		}
	}
}
