package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The replica is ready only once it serves a certificate that every webhook's caBundle trusts:
// before that, pods created are admitted uninjected (failurePolicy Ignore).
func TestTrustedWaitsForTheCABundle(t *testing.T) {
	o := CertOptions{DNSNames: []string{"lastcall-webhook.lastcall-system.svc"}, Validity: time.Hour, CAValidity: 6 * time.Hour, Dwell: time.Minute}
	now := time.Now()
	state, _ := step(t, now, nil, o)
	other, _ := step(t, now, nil, o) // another CA
	config := func(bundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
		return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "lastcall-webhook"},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.lastcall.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}}}}
	}
	client := fake.NewClientset()
	c := NewCerts(&Certs{Client: client, Namespace: "lastcall-system", SecretName: "cert", ConfigName: "lastcall-webhook", Log: logr.Discard()})
	check := func(want string) {
		t.Helper()
		err := c.Trusted(httptest.NewRequest(http.MethodGet, "/readyz", nil))
		switch {
		case want == "" && err != nil:
			t.Errorf("Trusted = %v, want ready", err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("Trusted = %v, want an error saying %q", err, want)
		}
	}
	check("no serving certificate yet")
	c.load(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "lastcall-system", Name: "cert"}, Data: state.data()})
	check("") // no configuration: nothing to wait for

	ctx := context.Background()
	api := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	c.trusted.Store(nil)
	if _, err := api.Create(ctx, config(nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("has no caBundle yet")
	if _, err := api.Update(ctx, config(other.bundle), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("does not trust the serving certificate yet")
	if _, err := api.Update(ctx, config(state.bundle), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	check("")
	// once trusted, the answer stands without the API server
	if err := api.Delete(ctx, "lastcall-webhook", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	client.PrependReactor("get", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("API server unreachable")
	})
	check("")
}
