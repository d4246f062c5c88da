package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/lastcall-dev/lastcall/controllers/inject"
	"github.com/lastcall-dev/lastcall/registry/adapters"
)

func TestParseWebhook(t *testing.T) {
	noFile := func(string) ([]byte, error) { return nil, errors.New("not in a cluster") }
	tests := []struct {
		name    string
		args    []string
		file    func(string) ([]byte, error)
		check   func(o options) bool
		wantErr string
	}{
		{name: "off by default", check: func(o options) bool { return o.webhook.Port == 0 && len(o.webhook.Cert.DNSNames) == 0 }},
		{name: "on, namespace from the service account", args: []string{"--webhook-port=9443", "--max-wait=40s"},
			file: func(string) ([]byte, error) { return []byte("lastcall-system\n"), nil },
			check: func(o options) bool {
				w := o.webhook
				return w.Namespace == "lastcall-system" && w.ManageCert && w.Cert.Validity == 2160*time.Hour && w.Cert.CAValidity == 4*w.Cert.Validity &&
					slices.Contains(w.Cert.DNSNames, "lastcall-webhook.lastcall-system.svc") &&
					w.Inject.Image == "lastcall-prestop:dev" && w.Inject.Mode == inject.ModeInitContainer && w.Inject.PullPolicy == corev1.PullIfNotPresent &&
					w.Inject.Drain.MaxWait == 40*time.Second && len(w.Inject.Adapters) > 0
			}},
		{name: "cert-manager, image volume", args: []string{"--webhook-port=9443", "--webhook-namespace=x", "--webhook-manage-cert=false", "--inject-mode=image-volume", "--inject-consul-addr=http://$(HOST_IP):8500"},
			check: func(o options) bool {
				return !o.webhook.ManageCert && o.webhook.Inject.Mode == inject.ModeImageVolume && o.webhook.Inject.ConsulAddr == "http://$(HOST_IP):8500"
			}},
		{name: "namespace unknown", args: []string{"--webhook-port=9443"}, file: noFile, wantErr: "--webhook-namespace"},
		{name: "port too high", args: []string{"--webhook-port=70000"}, wantErr: "--webhook-port 70000"},
		{name: "bad mode", args: []string{"--inject-mode=sidecar"}, wantErr: "--inject-mode"},
		{name: "bad pull policy", args: []string{"--inject-image-pull-policy=Sometimes"}, wantErr: "--inject-image-pull-policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.file != nil {
				readNamespaceFile = tt.file
				defer func() { readNamespaceFile = os.ReadFile }()
			}
			o, err := parseArgs(tt.args, nil, adapters.All())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v: want one line naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || !tt.check(o) {
				t.Errorf("options = %+v, %v", o.webhook, err)
			}
		})
	}
}

// webhookArgs turn the webhook on in TestManagerServesProbesAndMetrics (one run per process:
// controller names are unique), which then calls checkWebhookServed.
func webhookArgs(t *testing.T) []string {
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--webhook-port=" + port, "--webhook-namespace=default", "--webhook-cert-secret=run-webhook-cert", "--webhook-config-name=run-webhook"}
}

// checkWebhookServed: with --webhook-port the binary writes the certificate Secret and serves
// it over TLS (its /readyz waited for that).
func checkWebhookServed(t *testing.T, cfg *rest.Config, o options) {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(cfg)
	s, err := kube.CoreV1().Secrets("default").Get(context.Background(), "run-webhook-cert", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.webhook.Port)), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // compared below
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, "lastcall-webhook.default.svc") || !bytes.Equal(s.Data["tls.crt"], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})) {
		t.Errorf("served certificate for %v is not the Secret's", leaf.DNSNames)
	}
}
