package webhook

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
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
