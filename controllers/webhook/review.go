package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// maxReviewBytes bounds a review's body, as controller-runtime's admission.Webhook does.
const maxReviewBytes = 7 << 20

// reviewHandler serves AdmissionReviews (admission.k8s.io/v1, the version the configuration
// asks for) with an admission.Handler. controller-runtime's admission.Webhook parses every review
// twice (once to find its kind, once to decode it); with 50 pods created at once that CPU queued
// the last requests of the burst. A request it cannot read gets an HTTP error, never a denial:
// with failurePolicy Ignore the API server then admits the pod as it is.
type reviewHandler struct {
	handler admission.Handler
	log     logr.Logger
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
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		h.fail(w, http.StatusBadRequest, fmt.Errorf("decode the review: %w", err))
		return
	}
	if review.Request == nil {
		h.fail(w, http.StatusBadRequest, fmt.Errorf("the review has no request"))
		return
	}
	req := admission.Request{AdmissionRequest: *review.Request}
	resp := h.handler.Handle(r.Context(), req)
	if err := resp.Complete(req); err != nil {
		h.fail(w, http.StatusInternalServerError, fmt.Errorf("encode the patch: %w", err))
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: &resp.AdmissionResponse}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = admissionv1.SchemeGroupVersion.String(), "AdmissionReview"
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		h.log.Error(err, "write the admission response", "uid", req.UID)
	}
}

func (h reviewHandler) fail(w http.ResponseWriter, code int, err error) {
	h.log.Error(err, "bad admission request", "status", code)
	http.Error(w, err.Error(), code)
}
