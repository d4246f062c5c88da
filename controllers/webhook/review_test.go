package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The API server's review gets its UID back with the patch; a request that cannot be read gets an
// HTTP error, which failurePolicy Ignore turns into an admitted pod, never a denial.
func TestReviewHandler(t *testing.T) {
	const review = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"CREATE",
		"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
		"object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"web","image":"web:1"}]}}}}`
	h := reviewHandler{handler: &Injector{Options: testInject()}, log: logr.Discard()}
	tests := []struct {
		name        string
		contentType string
		body        string
		code        int
	}{
		{"a pod creation", "application/json", review, http.StatusOK},
		{"not JSON", "application/json", "{", http.StatusBadRequest},
		{"no request", "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"another content type", "text/plain", review, http.StatusUnsupportedMediaType},
		{"too large", "application/json", `{"x":"` + strings.Repeat("a", maxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.contentType)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.code {
				t.Fatalf("HTTP %d, want %d: %s", w.Code, tt.code, w.Body)
			}
			if tt.code != http.StatusOK {
				return
			}
			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
				t.Fatal(err)
			}
			resp := out.Response
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || resp == nil || resp.UID != "u-1" || !resp.Allowed {
				t.Fatalf("answer %s", w.Body)
			}
			if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch || !strings.Contains(string(resp.Patch), `"/spec/containers/0/lifecycle"`) {
				t.Errorf("patch %s (type %v), want the injection", resp.Patch, resp.PatchType)
			}
		})
	}
}

// encodePatch writes what json.Marshal writes for jsonpatch's operations, byte for byte.
func TestEncodePatch(t *testing.T) {
	ops := []jsonpatch.JsonPatchOperation{
		{Operation: "add", Path: "/metadata/labels", Value: map[string]string{"a": "b", "lastcall.dev/managed": "true"}},
		{Operation: "add", Path: "/spec/containers/0/env/-", Value: corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
		{Operation: "add", Path: "/metadata/annotations/x", Value: ""},
		{Operation: "add", Path: "/spec/x", Value: nil},
		{Operation: "replace", Path: "/spec/y", Value: nil},
		{Operation: "remove", Path: "/spec/z"},
		{Operation: "replace", Path: "/spec/n", Value: 3},
	}
	want, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	got, err := encodePatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("encodePatch:\n%s\nwant json.Marshal's:\n%s", got, want)
	}
}

// A review as the API server sends it is answered in one decoding pass with what Handle answers;
// one whose object does not read as a pod is answered the slow way, with Handle's warning.
func TestReviewDecodesOnce(t *testing.T) {
	body, err := os.ReadFile("testdata/review-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	inj := &Injector{Options: testInject()}
	spy := &countingHandler{Injector: inj}
	serve := func(body []byte) admissionv1.AdmissionResponse {
		t.Helper()
		r := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		reviewHandler{handler: spy, log: logr.Discard()}.ServeHTTP(w, r)
		var out admissionv1.AdmissionReview
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &out) != nil || out.Response == nil {
			t.Fatalf("HTTP %d: %s", w.Code, w.Body)
		}
		return *out.Response
	}

	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		t.Fatal(err)
	}
	want := inj.Handle(t.Context(), admission.Request{AdmissionRequest: *review.Request})
	wantPatch, err := json.Marshal(want.Patches)
	if err != nil {
		t.Fatal(err)
	}
	got := serve(body)
	if spy.decoded != 1 || spy.raw != 0 {
		t.Errorf("AdmitPod called %d times, Handle %d: want the decoded pod handed over once", spy.decoded, spy.raw)
	}
	if string(got.Patch) != string(wantPatch) || got.UID != review.Request.UID || !got.Allowed {
		t.Errorf("one pass answered uid %s allowed %v patch\n%s\nHandle's patch:\n%s", got.UID, got.Allowed, got.Patch, wantPatch)
	}

	notAPod := bytes.Replace(body, []byte(`"spec":{`), []byte(`"spec":{"containers":"web",`), 1)
	got = serve(notAPod)
	if spy.raw != 1 {
		t.Errorf("Handle called %d times for an object that is not a pod, want once", spy.raw)
	}
	if !got.Allowed || len(got.Patch) != 0 || len(got.Warnings) != 1 || !strings.Contains(got.Warnings[0], "cannot decode") {
		t.Errorf("object not a pod: allowed %v, patch %s, warnings %q: want allowed unchanged with Handle's warning", got.Allowed, got.Patch, got.Warnings)
	}
}

// countingHandler counts which of the Injector's two entries the review handler used.
type countingHandler struct {
	*Injector
	decoded, raw int
}

func (c *countingHandler) Handle(ctx context.Context, req admission.Request) admission.Response {
	c.raw++
	return c.Injector.Handle(ctx, req)
}

func (c *countingHandler) AdmitPod(ctx context.Context, req admission.Request, pod *corev1.Pod) admission.Response {
	c.decoded++
	return c.Injector.AdmitPod(ctx, req, pod)
}
