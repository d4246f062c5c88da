package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/go-logr/logr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// maxReviewBytes bounds a review's body, as controller-runtime's admission.Webhook does.
const maxReviewBytes = 7 << 20

// reviewHandler serves AdmissionReviews (admission.k8s.io/v1, the version the configuration
// asks for) with the Injector. controller-runtime's admission.Webhook parses every review
// twice (once to find its kind, once to decode it); with 50 pods created at once that CPU queued
// the last requests of the burst. A request it cannot read gets an HTTP error, never a denial:
// with failurePolicy Ignore the API server then admits the pod as it is.
type reviewHandler struct {
	handler podHandler
	log     logr.Logger
}

// podHandler answers admission requests; AdmitPod is Handle with the request's object already
// decoded (its Object.Raw is then empty).
type podHandler interface {
	admission.Handler
	AdmitPod(ctx context.Context, req admission.Request, pod *corev1.Pod) admission.Response
}

func (h reviewHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		h.fail(w, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q, want application/json", ct))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	switch {
	case err != nil:
		h.fail(w, http.StatusBadRequest, fmt.Errorf("read the review: %w", err))
		return
	case len(body) > maxReviewBytes:
		h.fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("review larger than %d bytes", maxReviewBytes))
		return
	}
	typeMeta, req, resp, err := h.admit(r.Context(), body)
	if err != nil {
		h.fail(w, http.StatusBadRequest, err)
		return
	}
	if len(resp.Patches) > 0 {
		if resp.Patch, err = encodePatch(resp.Patches); err != nil {
			h.fail(w, http.StatusInternalServerError, fmt.Errorf("encode the patch: %w", err))
			return
		}
		resp.Patches = nil
	}
	if err := resp.Complete(req); err != nil {
		h.fail(w, http.StatusInternalServerError, fmt.Errorf("complete the answer: %w", err))
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: typeMeta, Response: &resp.AdmissionResponse}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = admissionv1.SchemeGroupVersion.String(), "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		h.log.Error(err, "write the admission response", "uid", req.UID)
	}
}

// podReview is an AdmissionReview whose object is decoded straight into a Pod. The
// configuration sends only pod creations; decoding the object as raw bytes and then as a pod
// scanned every pod twice.
type podReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		admissionv1.AdmissionRequest `json:",inline"`
		// Object shadows the embedded request's (a shallower field wins in encoding/json).
		Object *corev1.Pod `json:"object"`
	} `json:"request"`
}

// admit decodes the review and answers it: in one pass when its object reads as a pod, else
// as controller-runtime does (the handler then says why it cannot inject).
func (h reviewHandler) admit(ctx context.Context, body []byte) (metav1.TypeMeta, admission.Request, admission.Response, error) {
	var pr podReview
	if err := json.Unmarshal(body, &pr); err == nil && pr.Request != nil && pr.Request.Object != nil {
		req := admission.Request{AdmissionRequest: pr.Request.AdmissionRequest}
		return pr.TypeMeta, req, h.handler.AdmitPod(ctx, req, pr.Request.Object), nil
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return review.TypeMeta, admission.Request{}, admission.Response{}, fmt.Errorf("decode the review: %w", err)
	}
	if review.Request == nil {
		return review.TypeMeta, admission.Request{}, admission.Response{}, errors.New("the review has no request")
	}
	req := admission.Request{AdmissionRequest: *review.Request}
	return review.TypeMeta, req, h.handler.Handle(ctx, req), nil
}

// patchOp is how jsonpatch.Operation marshals itself. encoding/json scans and compacts what a
// MarshalJSON method returns; a plain struct skips that second pass over every value.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// encodePatch marshals ops as json.Marshal(ops) does.
func encodePatch(ops []jsonpatch.JsonPatchOperation) ([]byte, error) {
	out := make([]patchOp, len(ops))
	for i, o := range ops {
		out[i] = patchOp{Op: o.Operation, Path: o.Path, Value: o.Value}
		if o.Value == nil && (o.Operation == "add" || o.Operation == "replace") {
			out[i].Value = json.RawMessage("null") // jsonpatch writes "value": null for these
		}
	}
	return json.Marshal(out)
}

func (h reviewHandler) fail(w http.ResponseWriter, code int, err error) {
	h.log.Error(err, "bad admission request", "status", code)
	http.Error(w, err.Error(), code)
}
