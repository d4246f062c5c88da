package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

func review(op admissionv1.Operation, kind string, raw string) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Operation: op, Kind: metav1.GroupVersionKind{Version: "v1", Kind: kind},
		Object: runtime.RawExtension{Raw: []byte(raw)},
	}}
}

// Every answer allows the pod; only a pod being created is patched, and the patch never touches
// fields this build does not know (a newer API server's).
func TestInjectorHandle(t *testing.T) {
	const pod = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},
		"spec":{"futureField":{"x":1},"containers":[{"name":"web","image":"web:1","futureContainerField":true}]}}`
	tests := []struct {
		name    string
		req     admission.Request
		patched bool
		warning string
	}{
		{"create", review(admissionv1.Create, "Pod", pod), true, ""},
		{"update", review(admissionv1.Update, "Pod", pod), false, ""},
		{"not a pod", review(admissionv1.Create, "ConfigMap", `{}`), false, ""},
		{"opted out", review(admissionv1.Create, "Pod", strings.Replace(pod, `"generateName":"web-"`, `"generateName":"web-","labels":{"lastcall.dev/inject":"false"}`, 1)), false, ""},
		{"undecodable", review(admissionv1.Create, "Pod", `{"spec":{"containers":"many"}}`), false, "cannot decode"},
		{"bad annotation", review(admissionv1.Create, "Pod", strings.Replace(pod, `"generateName":"web-"`, `"generateName":"web-","annotations":{"lastcall.dev/reserve":"x"}`, 1)), true, `lastcall.dev/reserve="x"`},
	}
	h := &Injector{Options: testInject()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := h.Handle(context.Background(), tt.req)
			if !resp.Allowed {
				t.Fatalf("denied: %+v", resp.Result)
			}
			if (len(resp.Patches) > 0) != tt.patched {
				t.Errorf("%d patch operations, want patched=%v", len(resp.Patches), tt.patched)
			}
			for _, op := range resp.Patches {
				if op.Operation == "remove" || strings.Contains(op.Path, "future") {
					t.Errorf("patch operation %s %s touches what the pod had", op.Operation, op.Path)
				}
			}
			if tt.warning != "" && (len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], tt.warning)) {
				t.Errorf("warnings %q, want one containing %q", resp.Warnings, tt.warning)
			}
			if tt.warning == "" && len(resp.Warnings) > 0 {
				t.Errorf("unexpected warnings %q", resp.Warnings)
			}
		})
	}
}

// A panic while injecting still allows the pod (a denial would block it whatever failurePolicy).
func TestInjectorAllowsOnPanic(t *testing.T) {
	var broken *Injector // reading its options panics once the pod is decoded
	resp := broken.Handle(context.Background(), review(admissionv1.Create, "Pod", `{"spec":{"containers":[{"name":"web"}]}}`))
	if !resp.Allowed || len(resp.Patches) > 0 {
		t.Errorf("a panicking injector answered %+v", resp)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "internal error") {
		t.Errorf("warnings %q, want the internal error named", resp.Warnings)
	}
}
