package charts_test

import (
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func controllerArgs(t *testing.T, objs map[string]*unstructured.Unstructured) []string {
	t.Helper()
	return as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"]).Spec.Template.Spec.Containers[0].Args
}

// The injection webhook is on by default, and can neither block pods nor reach kube-system or
// lastcall's own namespace; the controller serves it and keeps its certificate.
func TestWebhookDefaults(t *testing.T) {
	objs := render(t)
	mwc := as[admissionregistrationv1.MutatingWebhookConfiguration](t, objs["MutatingWebhookConfiguration/lastcall-webhook"])
	if len(mwc.Webhooks) != 2 {
		t.Fatalf("%d webhooks, want one for labelled namespaces and one for labelled pods", len(mwc.Webhooks))
	}
	for _, w := range mwc.Webhooks {
		switch {
		case *w.FailurePolicy != admissionregistrationv1.Ignore:
			t.Errorf("%s: failurePolicy %s, want Ignore", w.Name, *w.FailurePolicy)
		case *w.SideEffects != admissionregistrationv1.SideEffectClassNone:
			t.Errorf("%s: sideEffects %s", w.Name, *w.SideEffects)
		case *w.TimeoutSeconds > 5:
			t.Errorf("%s: timeoutSeconds %d, want short", w.Name, *w.TimeoutSeconds)
		case *w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy:
			t.Errorf("%s: reinvocationPolicy %s", w.Name, *w.ReinvocationPolicy)
		case w.ClientConfig.Service == nil || w.ClientConfig.Service.Name != "lastcall-webhook" || w.ClientConfig.Service.Namespace != "lastcall-system" || *w.ClientConfig.Service.Path != "/inject":
			t.Errorf("%s: clientConfig %+v", w.Name, w.ClientConfig)
		case len(w.ClientConfig.CABundle) != 0:
			t.Errorf("%s: the chart sets a caBundle; the controller owns it", w.Name)
		case len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) || !slices.Equal(w.Rules[0].Resources, []string{"pods"}):
			t.Errorf("%s: rules %+v, want pod creation only", w.Name, w.Rules)
		}
		excluded := false
		for _, e := range w.NamespaceSelector.MatchExpressions {
			if e.Key == corev1.LabelMetadataName && e.Operator == "NotIn" && slices.Contains(e.Values, "kube-system") && slices.Contains(e.Values, "lastcall-system") {
				excluded = true
			}
		}
		if !excluded {
			t.Errorf("%s: namespaceSelector %+v does not exclude kube-system and lastcall-system", w.Name, w.NamespaceSelector)
		}
	}
	if ns, obj := mwc.Webhooks[0].NamespaceSelector, mwc.Webhooks[0].ObjectSelector; ns.MatchLabels["lastcall.dev/inject"] != "true" || obj.MatchExpressions[0].Values[0] != "false" {
		t.Errorf("namespace webhook selects %+v / %+v: want labelled namespaces, pods not labelled false", ns, obj)
	}
	if obj := mwc.Webhooks[1].ObjectSelector; obj.MatchLabels["lastcall.dev/inject"] != "true" {
		t.Errorf("pod webhook selects %+v: want labelled pods", obj)
	}
	if svc := as[corev1.Service](t, objs["Service/lastcall-webhook"]); svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "webhook" {
		t.Errorf("webhook Service ports %+v", svc.Spec.Ports)
	}
	if s := as[corev1.Secret](t, objs["Secret/lastcall-webhook-cert"]); len(s.Data) != 0 {
		t.Error("the chart writes certificate data; the controller must (upgrades would reset it)")
	}
	args := controllerArgs(t, objs)
	for _, want := range []string{"--webhook-port=9443", "--webhook-namespace=lastcall-system", "--webhook-service=lastcall-webhook",
		"--webhook-config-name=lastcall-webhook", "--webhook-cert-secret=lastcall-webhook-cert", "--inject-image=lastcall-prestop:0.1.0", "--inject-mode=init-container"} {
		if !slices.Contains(args, want) {
			t.Errorf("controller args lack %s: %v", want, args)
		}
	}
	d := as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"])
	if !slices.ContainsFunc(d.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "webhook" && p.ContainerPort == 9443 }) {
		t.Error("no container port named webhook")
	}
	// least RBAC: the one Secret and the one configuration, by name, and no create or delete
	role := as[rbacv1.Role](t, objs["Role/lastcall-controller-webhook"])
	cr := as[rbacv1.ClusterRole](t, objs["ClusterRole/lastcall-controller-webhook"])
	for _, r := range append(role.Rules, cr.Rules...) {
		if len(r.ResourceNames) != 1 || slices.Contains(r.Verbs, "create") || slices.Contains(r.Verbs, "delete") {
			t.Errorf("rule %+v: want one resource by name, without create or delete", r)
		}
	}
	if role.Rules[0].ResourceNames[0] != "lastcall-webhook-cert" || cr.Rules[0].ResourceNames[0] != "lastcall-webhook" {
		t.Errorf("RBAC names %v and %v", role.Rules[0].ResourceNames, cr.Rules[0].ResourceNames)
	}
}

func TestWebhookOptions(t *testing.T) {
	t.Run("off", func(t *testing.T) {
		objs := render(t, "webhook.enabled=false")
		for k := range objs {
			if strings.Contains(k, "webhook") {
				t.Errorf("%s rendered with webhook.enabled=false", k)
			}
		}
		if args := controllerArgs(t, objs); slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--webhook") }) {
			t.Errorf("webhook args without the webhook: %v", args)
		}
	})
	t.Run("cert-manager", func(t *testing.T) {
		objs := render(t, "webhook.certManager.enabled=true")
		mwc := objs["MutatingWebhookConfiguration/lastcall-webhook"]
		if mwc.GetAnnotations()["cert-manager.io/inject-ca-from"] != "lastcall-system/lastcall-webhook" {
			t.Errorf("annotations %v: want cert-manager's CA injection", mwc.GetAnnotations())
		}
		if objs["Certificate/lastcall-webhook"] == nil || objs["Issuer/lastcall-webhook"] == nil {
			t.Error("no Certificate and Issuer")
		}
		if objs["Secret/lastcall-webhook-cert"] != nil || objs["ClusterRole/lastcall-controller-webhook"] != nil {
			t.Error("with cert-manager the chart must not create the Secret, nor let the controller write the caBundle")
		}
		if r := as[rbacv1.Role](t, objs["Role/lastcall-controller-webhook"]).Rules[0]; slices.Contains(r.Verbs, "update") {
			t.Errorf("the controller may update cert-manager's Secret: %v", r.Verbs)
		}
		if args := controllerArgs(t, objs); !slices.Contains(args, "--webhook-manage-cert=false") {
			t.Errorf("args %v lack --webhook-manage-cert=false", args)
		}
	})
	t.Run("settings", func(t *testing.T) {
		objs := render(t, "webhook.excludeNamespaces={infra}", "webhook.failurePolicy=Fail", "webhook.timeoutSeconds=5",
			"webhook.inject.mode=image-volume", "webhook.inject.image.tag=0.2.0", "webhook.inject.consulAddress=http://$(HOST_IP):8500")
		mwc := as[admissionregistrationv1.MutatingWebhookConfiguration](t, objs["MutatingWebhookConfiguration/lastcall-webhook"])
		for _, w := range mwc.Webhooks {
			if *w.FailurePolicy != admissionregistrationv1.Fail || *w.TimeoutSeconds != 5 {
				t.Errorf("%s: failurePolicy %s timeout %d", w.Name, *w.FailurePolicy, *w.TimeoutSeconds)
			}
			if !slices.ContainsFunc(w.NamespaceSelector.MatchExpressions, func(e metav1.LabelSelectorRequirement) bool { return slices.Contains(e.Values, "infra") }) {
				t.Errorf("%s does not exclude infra", w.Name)
			}
		}
		args := controllerArgs(t, objs)
		for _, want := range []string{"--inject-mode=image-volume", "--inject-image=lastcall-prestop:0.2.0", "--inject-consul-addr=http://$(HOST_IP):8500"} {
			if !slices.Contains(args, want) {
				t.Errorf("args %v lack %s", args, want)
			}
		}
	})
	for _, tt := range []struct{ set, mention string }{
		{"webhook.failurePolicy=Maybe", "failurePolicy"},
		{"webhook.timeoutSeconds=60", "timeoutSeconds"},
		{"webhook.inject.mode=sidecar", "mode"},
		{"webhook.certValidity=forever", "certValidity"},
		{"webhook.excludeNamespaces={Bad_Name}", "excludeNamespaces"},
	} {
		t.Run(tt.set, func(t *testing.T) {
			if _, err := renderErr(t, tt.set); err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("err = %v, want a schema error naming %s", err, tt.mention)
			}
		})
	}
}
