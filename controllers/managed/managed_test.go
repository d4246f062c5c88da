package managed

import (
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

func TestSettingsOf(t *testing.T) {
	table := append(adapters.All(), memory.Adapter(memory.New("mem", memory.Immediate)))
	consulSvc, memSvc := ServiceAnnotation("consul"), ServiceAnnotation("mem")
	tests := []struct {
		name     string
		ann      map[string]string
		want     []string
		services map[string]string
		wantErr  string
	}{
		{"default: endpoints", nil, []string{"endpoints"}, map[string]string{}, ""},
		{"consul service adds consul", map[string]string{consulSvc: "web"}, []string{"endpoints", "consul"}, map[string]string{"consul": "web"}, ""},
		{"any registry's service adds it", map[string]string{memSvc: " web "}, []string{"endpoints", "mem"}, map[string]string{"mem": "web"}, ""},
		{"explicit list", map[string]string{consulSvc: "web", RegistriesAnnotation: " consul "}, []string{"consul"}, map[string]string{"consul": "web"}, ""},
		{"duplicates collapse", map[string]string{RegistriesAnnotation: "endpoints,endpoints"}, []string{"endpoints"}, map[string]string{}, ""},
		{"unknown registry", map[string]string{RegistriesAnnotation: "endpoints,etcd"}, nil, nil, `unknown registry "etcd"; want a comma-separated list of endpoints, consul, mem`},
		{"empty list", map[string]string{RegistriesAnnotation: " , "}, nil, nil, "is empty"},
		{"consul without service", map[string]string{RegistriesAnnotation: "consul"}, nil, nil, consulSvc},
		{"mem without service", map[string]string{RegistriesAnnotation: "mem"}, nil, nil, memSvc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := SettingsOf(tt.ann, table)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "annotation") {
					t.Fatalf("err = %v, want one naming the annotation and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(s.Registries, tt.want) || !maps.Equal(s.Services, tt.services) {
				t.Errorf("settings = %+v, %v; want %v %v", s, err, tt.want, tt.services)
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
