package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	toolscache "k8s.io/client-go/tools/cache"
)

// Certs serves the certificate kept in a Secret and, when it manages it, keeps that Secret and
// the webhook configuration's caBundle current. Every replica serves (Serving); the leader
// alone writes (Rotator), so two replicas never race to rotate.
type Certs struct {
	Client     kubernetes.Interface
	Namespace  string
	SecretName string
	// ConfigName is the MutatingWebhookConfiguration whose webhooks get the caBundle.
	ConfigName string
	Options    CertOptions
	// Resync is how often the rotator checks the Secret and the caBundle even when nothing
	// changed (watches tell it sooner).
	Resync time.Duration
	Now    func() time.Time
	Log    logr.Logger

	current atomic.Pointer[tls.Certificate]
	// trusted is the certificate Trusted last found the caBundle trusts.
	trusted atomic.Pointer[tls.Certificate]
	// untrusted is why Trusted last failed ("" once it passed), to log each change once.
	untrusted atomic.Pointer[string]
	// changed wakes the rotator when the Secret or the configuration changed.
	changed chan struct{}
}

// NewCerts completes c for Serving and Rotator.
func NewCerts(c *Certs) *Certs {
	c.changed = make(chan struct{}, 1)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Resync == 0 {
		c.Resync = 10 * time.Minute
	}
	return c
}

// GetCertificate is the TLS server's: the serving certificate of the Secret as last seen.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if cert := c.current.Load(); cert != nil {
		return cert, nil
	}
	return nil, fmt.Errorf("no serving certificate yet: Secret %s/%s has none", c.Namespace, c.SecretName)
}

// trustedTimeout bounds Trusted's read of the webhook configuration.
const trustedTimeout = 2 * time.Second

// Trusted is a readiness check: nil once this replica serves a certificate that every webhook of
// the configuration trusts through its caBundle. Until then the API server cannot call it (with
// failurePolicy Ignore, pods created meanwhile are admitted uninjected), so `helm install --wait`
// must not return before. A configuration that does not exist leaves nothing to wait for. The
// answer is kept per certificate, so readiness does not follow the API server's availability.
func (c *Certs) Trusted(req *http.Request) error {
	err := c.trustedErr(req)
	// the probe's answer withholds the reason: log it, once per reason
	msg, prev := "", ""
	if err != nil {
		msg = err.Error()
	}
	if last := c.untrusted.Swap(&msg); last != nil {
		prev = *last
	}
	if msg != prev {
		if err != nil {
			c.Log.Info("not ready: the served certificate is not trusted yet", "reason", msg)
		} else {
			c.Log.Info("ready: every webhook's caBundle trusts the served certificate")
		}
	}
	return err
}

func (c *Certs) trustedErr(req *http.Request) error {
	cert, err := c.GetCertificate(nil)
	if err != nil {
		return err
	}
	if c.trusted.Load() == cert {
		return nil
	}
	ctx, cancel := context.WithTimeout(req.Context(), trustedTimeout)
	defer cancel()
	cfg, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, c.ConfigName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		c.trusted.Store(cert)
		return nil
	case err != nil:
		return fmt.Errorf("read MutatingWebhookConfiguration %s: %w", c.ConfigName, err)
	}
	intermediates := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			intermediates.AddCert(ic)
		}
	}
	for _, w := range cfg.Webhooks {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
			return fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s has no caBundle yet", w.Name, c.ConfigName)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: intermediates}); err != nil {
			return fmt.Errorf("webhook %s of MutatingWebhookConfiguration %s does not trust the serving certificate yet: %w", w.Name, c.ConfigName, err)
		}
	}
	c.trusted.Store(cert)
	return nil
}

func (c *Certs) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// runnable adapts a function to controller-runtime's Runnable, with its leader election need.
type runnable struct {
	start  func(context.Context) error
	leader bool
}

func (r runnable) Start(ctx context.Context) error { return r.start(ctx) }
func (r runnable) NeedLeaderElection() bool        { return r.leader }

// Serving follows the Secret (a watch on that one object) and serves what it holds; it runs on
// every replica.
func (c *Certs) Serving() runnable {
	return runnable{start: func(ctx context.Context) error {
		lw := oneObject(c.SecretName,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return c.Client.CoreV1().Secrets(c.Namespace).List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return c.Client.CoreV1().Secrets(c.Namespace).Watch(ctx, o)
			})
		inf := toolscache.NewSharedIndexInformer(lw, &corev1.Secret{}, 0, toolscache.Indexers{})
		load := func(obj any) {
			if s, ok := obj.(*corev1.Secret); ok {
				c.load(s)
			}
			c.notify()
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    load,
			UpdateFunc: func(_, obj any) { load(obj) },
		}); err != nil {
			return err
		}
		inf.Run(ctx.Done())
		return nil
	}}
}

func (c *Certs) load(s *corev1.Secret) {
	cert, err := tls.X509KeyPair(s.Data[keyCert], s.Data[keyKey])
	if err != nil {
		c.Log.Error(err, "the Secret holds no usable serving certificate; keeping the one served", "secret", s.Namespace+"/"+s.Name)
		return
	}
	if old := c.current.Load(); old != nil && bytes.Equal(old.Certificate[0], cert.Certificate[0]) {
		return
	}
	c.current.Store(&cert)
	c.Log.Info("serving certificate loaded", "secret", s.Namespace+"/"+s.Name, "notAfter", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "serial", cert.Leaf.SerialNumber.Text(16))
}

// Rotator creates and renews the Secret's certificates and keeps the caBundle current; it runs
// on the leader only.
func (c *Certs) Rotator() runnable {
	return runnable{leader: true, start: func(ctx context.Context) error {
		if err := c.Options.Check(); err != nil {
			return err
		}
		// a configuration replaced or edited by hand (caBundle gone) is repaired at once
		lw := oneObject(c.ConfigName,
			func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().List(ctx, o)
			},
			func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Watch(ctx, o)
			})
		inf := toolscache.NewSharedIndexInformer(lw, &admissionregistrationv1.MutatingWebhookConfiguration{}, 0, toolscache.Indexers{})
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { c.notify() },
			UpdateFunc: func(any, any) { c.notify() },
		}); err != nil {
			return err
		}
		go inf.Run(ctx.Done())

		retry := time.Second
		for {
			wake, err := c.reconcile(ctx)
			wait := c.Resync
			if err != nil {
				c.Log.Error(err, "webhook certificate", "retryIn", retry.String())
				wait, retry = retry, min(2*retry, c.Resync)
			} else {
				retry = time.Second
				if d := wake.Sub(c.Now()); d < wait {
					wait = max(d, 0)
				}
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-c.changed:
				t.Stop()
			case <-t.C:
			}
		}
	}}
}

// reconcile brings the Secret and the caBundle to plan's state and returns when to look again.
// Order: the caBundle first trusts old and new CAs, then the Secret changes (replicas serve the
// new certificate), then the caBundle drops what the Secret no longer lists.
func (c *Certs) reconcile(ctx context.Context) (time.Time, error) {
	secrets := c.Client.CoreV1().Secrets(c.Namespace)
	secret, err := secrets.Get(ctx, c.SecretName, metav1.GetOptions{})
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return time.Time{}, fmt.Errorf("get Secret %s/%s: %w", c.Namespace, c.SecretName, err)
	}
	var cur *certState
	if exists {
		if cur, err = parseState(secret.Data); err != nil {
			c.Log.Info("remaking the webhook certificates", "secret", c.Namespace+"/"+c.SecretName, "reason", err.Error())
		}
	}
	next, reason, wake, err := plan(c.Now(), cur, c.Options)
	if err != nil {
		return time.Time{}, err
	}
	if next == nil {
		return wake, c.setBundle(ctx, cur.bundle)
	}
	if cur != nil {
		if err := c.setBundle(ctx, union(cur.bundle, next.bundle)); err != nil {
			return time.Time{}, err
		}
	}
	if exists {
		secret.Data = next.data()
		_, err = secrets.Update(ctx, secret, metav1.UpdateOptions{})
	} else {
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: c.SecretName, Namespace: c.Namespace,
				Labels: map[string]string{"app.kubernetes.io/component": "webhook", "app.kubernetes.io/managed-by": "lastcall-controller"}},
			Type: corev1.SecretTypeOpaque,
			Data: next.data(),
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("write Secret %s/%s: %w", c.Namespace, c.SecretName, err)
	}
	c.Log.Info("webhook certificates updated", "secret", c.Namespace+"/"+c.SecretName, "what", reason,
		"servingNotAfter", next.leaf.cert.NotAfter.UTC().Format(time.RFC3339), "caNotAfter", next.ca.cert.NotAfter.UTC().Format(time.RFC3339))
	return wake, c.setBundle(ctx, next.bundle)
}

// setBundle writes bundle into every webhook of the configuration that lacks it. A missing
// configuration is logged, not an error: the Secret is still kept current.
func (c *Certs) setBundle(ctx context.Context, bundle []byte) error {
	api := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	cfg, err := api.Get(ctx, c.ConfigName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		c.Log.Info("MutatingWebhookConfiguration not found; its caBundle is set once it exists", "name", c.ConfigName)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get MutatingWebhookConfiguration %s: %w", c.ConfigName, err)
	}
	changed := false
	for i := range cfg.Webhooks {
		if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, bundle) {
			cfg.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update the caBundle of MutatingWebhookConfiguration %s: %w", c.ConfigName, err)
	}
	c.Log.Info("caBundle updated", "mutatingWebhookConfiguration", c.ConfigName, "webhooks", len(cfg.Webhooks))
	return nil
}

// oneObject lists and watches the single object named name: RBAC can then grant list and watch
// on that name alone.
func oneObject(name string,
	list func(context.Context, metav1.ListOptions) (runtime.Object, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error),
) *toolscache.ListWatch {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}
}
