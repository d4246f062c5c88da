package gate

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	running := &corev1.Pod{Status: corev1.PodStatus{PodIP: "10.0.0.1"}}
	now := metav1.Now()
	deleting := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}, Status: corev1.PodStatus{PodIP: "10.0.0.1"}}
	tests := []struct {
		name        string
		pod         *corev1.Pod
		settingsErr error
		checks      []Check
		status      corev1.ConditionStatus
		reason      string
		retry       bool
		mention     string
	}{
		{"all visible", running, nil, []Check{{Registry: "endpoints", Visible: true}, {Registry: "consul", Visible: true}}, corev1.ConditionTrue, ReasonVisible, false, "endpoints, consul"},
		{"consul not passing yet", running, nil, []Check{{Registry: "endpoints", Visible: true}, {Registry: "consul"}}, corev1.ConditionFalse, ReasonNotVisible, true, "consul"},
		{"error wins over hidden", running, nil, []Check{{Registry: "endpoints"}, {Registry: "consul", Err: errors.New("connection refused")}}, corev1.ConditionFalse, ReasonRegistryError, true, "connection refused"},
		{"deleting closes the gate whatever the registries say", deleting, nil, []Check{{Registry: "endpoints", Visible: true}}, corev1.ConditionFalse, ReasonTerminating, false, "deleted"},
		{"no Service selects the pod: nothing to wait for", running, nil, []Check{{Registry: "endpoints", Unlisted: "no Service selects the pod"}}, corev1.ConditionTrue, ReasonUnlisted, false, "no Service selects"},
		{"an unlisted registry leaves the gate to the others", running, nil, []Check{{Registry: "endpoints", Unlisted: "no Service selects the pod"}, {Registry: "consul"}}, corev1.ConditionFalse, ReasonNotVisible, true, "consul"},
		{"visible where listed, unlisted named", running, nil, []Check{{Registry: "endpoints", Unlisted: "no Service selects the pod"}, {Registry: "consul", Visible: true}}, corev1.ConditionTrue, ReasonVisible, false, "no Service selects"},
		{"bad settings", running, errors.New("annotation lastcall.dev/registries: bad"), nil, corev1.ConditionFalse, ReasonInvalidSettings, false, "lastcall.dev/registries"},
		{"no IP yet", &corev1.Pod{}, nil, nil, corev1.ConditionFalse, ReasonNoPodIP, false, "no IP"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Decide(tt.pod, tt.settingsErr, tt.checks)
			if v.Status != tt.status || v.Reason != tt.reason || v.Retry != tt.retry {
				t.Errorf("Decide = %+v, want %s/%s retry=%v", v, tt.status, tt.reason, tt.retry)
			}
			if !strings.Contains(v.Message, tt.mention) {
				t.Errorf("message %q does not mention %q", v.Message, tt.mention)
			}
		})
	}
}
