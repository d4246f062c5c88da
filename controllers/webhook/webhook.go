// Package webhook serves the mutating admission webhook that injects lastcall into pods labelled
// lastcall.dev/inject (controllers/inject decides what), and keeps its serving certificate: a CA
// and a certificate it signs, made and renewed by the leader, kept in a Secret that every
// replica serves from, with the CA in the MutatingWebhookConfiguration's caBundle.
package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// Path is where the API server sends pods to inject.
const Path = "/inject"

// Config is the webhook's: where it listens, its certificate, what it injects.
type Config struct {
	// Port of the HTTPS server; Host is empty for every address.
	Port int
	Host string
	// Namespace and SecretName locate the certificate Secret.
	Namespace  string
	SecretName string
	// ConfigName is the MutatingWebhookConfiguration whose caBundle is kept current.
	ConfigName string
	// ManageCert makes and rotates the certificate; false only serves what the Secret holds
	// (cert-manager writes it and injects the caBundle).
	ManageCert bool
	Cert       CertOptions
	// Resync bounds how long a changed caBundle or Secret goes unnoticed if a watch missed it.
	Resync time.Duration
	Inject inject.Options
}

// Webhook is the server and what keeps its certificate.
type Webhook struct {
	cfg      Config
	certs    *Certs
	server   webhook.Server
	injector *Injector
}

// New builds the webhook; pass Server() as the manager's WebhookServer, then call Setup.
func New(client kubernetes.Interface, cfg Config, log logr.Logger) (*Webhook, error) {
	return newWebhook(client, cfg, log, nil)
}

// newWebhook is New with the HTTP handler wrapped by wrap, when set (the benchmark times it).
func newWebhook(client kubernetes.Interface, cfg Config, log logr.Logger, wrap func(http.Handler) http.Handler) (*Webhook, error) {
	if cfg.ManageCert {
		if err := cfg.Cert.Check(); err != nil {
			return nil, err
		}
	}
	certs := NewCerts(&Certs{Client: client, Namespace: cfg.Namespace, SecretName: cfg.SecretName, ConfigName: cfg.ConfigName,
		Options: cfg.Cert, Resync: cfg.Resync, Log: log.WithName("certs")})
	server := webhook.NewServer(webhook.Options{
		Host: cfg.Host, Port: cfg.Port,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = certs.GetCertificate
			c.MinVersion = tls.VersionTLS12
		}},
	})
	injector := &Injector{Options: cfg.Inject}
	var h http.Handler = reviewHandler{handler: injector, log: log.WithName("inject")}
	if wrap != nil {
		h = wrap(h)
	}
	server.Register(Path, h)
	return &Webhook{cfg: cfg, certs: certs, server: server, injector: injector}, nil
}

// Server is the HTTPS server, for ctrl.Options.WebhookServer.
func (w *Webhook) Server() webhook.Server { return w.server }

// Setup adds the certificate's runnables and a readiness check: a replica is ready once it
// serves a certificate, so the Service sends the API server only to replicas that can answer.
func (w *Webhook) Setup(mgr ctrl.Manager) error {
	if err := mgr.Add(w.certs.Serving()); err != nil {
		return err
	}
	if w.cfg.ManageCert {
		if err := mgr.Add(w.certs.Rotator()); err != nil {
			return err
		}
	}
	// the manager runs its webhook server only once asked for it
	if w.cfg.Inject.Mode == inject.ModeImageVolume {
		// set before the manager starts the server: no admission reads it earlier
		w.injector.Runtimes = &nodeRuntimes{reader: mgr.GetClient(), now: time.Now}
	}
	if mgr.GetWebhookServer() != w.server {
		return errors.New("the manager's WebhookServer is not this webhook's: pass Server() in ctrl.Options")
	}
	if err := mgr.AddReadyzCheck("webhook", w.server.StartedChecker()); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("webhook-certificate", w.certs.Trusted)
}

// Outcomes of an admission request, as in lastcall_webhook_admissions_total.
const (
	outcomeInjected  = "injected"
	outcomeUnchanged = "unchanged"
	outcomeIgnored   = "ignored"
)

var fallbacks = func() prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "lastcall_webhook_image_volume_fallbacks_total",
		Help: "Pods injected with the init container although --inject-mode is image-volume, because a node's container runtime cannot mount image volumes (or the nodes could not be read).",
	})
	metrics.Registry.MustRegister(c)
	return c
}()

var admissions = func() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "lastcall_webhook_admissions_total",
		Help: "Pods the injection webhook saw, by outcome: injected, unchanged (opted out, already injected, or not injectable: see the admission warnings), ignored (not a pod creation, or not decodable).",
	}, []string{"outcome"})
	metrics.Registry.MustRegister(c)
	for _, o := range []string{outcomeInjected, outcomeUnchanged, outcomeIgnored} {
		c.WithLabelValues(o)
	}
	return c
}()

// Injector answers admission requests for pods.
type Injector struct {
	Options inject.Options
	// Runtimes, when set, is asked before injecting in image-volume mode; nil trusts the mode.
	Runtimes Runtimes
}

// Runtimes tells whether some node's container runtime cannot mount image volumes.
type Runtimes interface {
	// Blocker names such a node and its runtime ("" when there is none); err when the nodes
	// could not be read.
	Blocker(ctx context.Context) (string, error)
}

// Handle injects a pod being created. It always allows the pod: a pod that cannot be injected
// is created as written, with a warning saying why.
func (h *Injector) Handle(ctx context.Context, req admission.Request) admission.Response {
	var pod corev1.Pod
	if podCreation(req) {
		if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
			admissions.WithLabelValues(outcomeIgnored).Inc()
			return admission.Allowed("").WithWarnings(fmt.Sprintf("%s: pod not injected: cannot decode it: %v", inject.Label, err))
		}
	}
	return h.AdmitPod(ctx, req, &pod)
}

// AdmitPod is Handle for a request whose object is already decoded into pod.
func (h *Injector) AdmitPod(ctx context.Context, req admission.Request, pod *corev1.Pod) (resp admission.Response) {
	defer func() {
		// an explicit denial would block the pod whatever failurePolicy says: never answer one
		if r := recover(); r != nil {
			admissions.WithLabelValues(outcomeIgnored).Inc()
			resp = admission.Allowed("").WithWarnings(fmt.Sprintf("%s: pod not injected: internal error: %v", inject.Label, r))
		}
	}()
	if !podCreation(req) {
		admissions.WithLabelValues(outcomeIgnored).Inc()
		return admission.Allowed("")
	}
	return h.admitPod(ctx, req, pod)
}

func podCreation(req admission.Request) bool {
	return req.Operation == admissionv1.Create && req.Kind.Group == "" && req.Kind.Kind == "Pod" && req.SubResource == ""
}

func (h *Injector) admitPod(ctx context.Context, _ admission.Request, pod *corev1.Pod) admission.Response {
	opts, fellBack := h.options(ctx)
	res := inject.Pod(pod, opts)
	if res.Changed && fellBack != "" {
		fallbacks.Inc()
		res.Warnings = append(res.Warnings, fellBack)
	}
	if !res.Changed {
		admissions.WithLabelValues(outcomeUnchanged).Inc()
		return admission.Allowed("").WithWarnings(res.Warnings...)
	}
	if ops, ok := patchOf(pod, res.Pod); ok {
		admissions.WithLabelValues(outcomeInjected).Inc()
		return patched(ops).WithWarnings(res.Warnings...)
	}
	// Otherwise the patch is computed between two encodings of the same Go type, so fields this
	// build does not know (from a newer API server) are never in it, hence never removed.
	before, err := json.Marshal(pod)
	if err == nil {
		var after []byte
		if after, err = json.Marshal(res.Pod); err == nil {
			admissions.WithLabelValues(outcomeInjected).Inc()
			return admission.PatchResponseFromRaw(before, after).WithWarnings(res.Warnings...)
		}
	}
	admissions.WithLabelValues(outcomeIgnored).Inc()
	return admission.Allowed("").WithWarnings(fmt.Sprintf("%s: pod not injected: %v", inject.Label, err))
}

// patched allows the pod with ops, as admission.PatchResponseFromRaw answers.
func patched(ops []jsonpatch.JsonPatchOperation) admission.Response {
	resp := admission.Response{Patches: ops, AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}
	if len(ops) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType = &pt
	}
	return resp
}

// options are the injection settings for this admission: image-volume mode falls back to an
// init container while a node's runtime cannot mount image volumes (a pod whose image volume
// cannot be mounted never starts), with the warning that says so.
func (h *Injector) options(ctx context.Context) (inject.Options, string) {
	o := h.Options
	if o.Mode != inject.ModeImageVolume || h.Runtimes == nil {
		return o, ""
	}
	const instead = "the helper is copied in by an init container instead"
	switch why, err := h.Runtimes.Blocker(ctx); {
	case err != nil:
		o.Mode = inject.ModeInitContainer
		return o, fmt.Sprintf("%s: image-volume mode: cannot tell whether every node's runtime mounts image volumes (%v): %s", inject.Label, err, instead)
	case why != "":
		o.Mode = inject.ModeInitContainer
		return o, fmt.Sprintf("%s: image-volume mode: %s, which cannot mount image volumes (containerd 2.1 or later and CRI-O 1.31 or later can): %s", inject.Label, why, instead)
	}
	return o, ""
}

// compile-time check: the handler is controller-runtime's.
var _ admission.Handler = (*Injector)(nil)
