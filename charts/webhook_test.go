package charts_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
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
	if len(mwc.Webhooks) != 3 {
		t.Fatalf("%d webhooks, want one for labelled namespaces, one for labelled pods and one for the install check", len(mwc.Webhooks))
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
		if w.Name == "check.inject.lastcall.dev" {
			continue // below
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
	// the install check's entry: its dry-run pod, in lastcall's own namespace, and nothing else
	// there (lastcall's own pods must not depend on its webhook)
	if c := mwc.Webhooks[2]; c.Name != "check.inject.lastcall.dev" ||
		!reflect.DeepEqual(*c.NamespaceSelector, metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "lastcall-system"}}) ||
		!reflect.DeepEqual(*c.ObjectSelector, metav1.LabelSelector{MatchLabels: map[string]string{"lastcall.dev/inject-check": "true"}}) {
		t.Errorf("third webhook %s selects %+v / %+v: want pods labelled lastcall.dev/inject-check=true in lastcall-system only", c.Name, c.NamespaceSelector, c.ObjectSelector)
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
		// the serving certificate is signed by a CA of its own that keeps its key: renewing
		// either leaves the caBundle trusting what is served
		serving, ca, issuer := objs["Certificate/lastcall-webhook"], objs["Certificate/lastcall-webhook-ca"], objs["Issuer/lastcall-webhook"]
		if serving == nil || ca == nil || issuer == nil || objs["Issuer/lastcall-webhook-selfsigned"] == nil {
			t.Fatal("want a self-signed Issuer, a CA Certificate, a CA Issuer and the serving Certificate")
		}
		if ref, _, _ := unstructured.NestedString(serving.Object, "spec", "issuerRef", "name"); ref != "lastcall-webhook" {
			t.Errorf("serving certificate issued by %q, want the CA Issuer", ref)
		}
		if sec, _, _ := unstructured.NestedString(issuer.Object, "spec", "ca", "secretName"); sec != "lastcall-webhook-ca" {
			t.Errorf("CA Issuer reads %q, want the CA's Secret", sec)
		}
		isCA, _, _ := unstructured.NestedBool(ca.Object, "spec", "isCA")
		rotation, _, _ := unstructured.NestedString(ca.Object, "spec", "privateKey", "rotationPolicy")
		if !isCA || rotation != "Never" {
			t.Errorf("CA certificate isCA=%v rotationPolicy=%q, want a CA that keeps its key", isCA, rotation)
		}
		if objs["Secret/lastcall-webhook-cert"] != nil {
			t.Error("with cert-manager the chart must not create the Secret")
		}
		// readiness reads the caBundle (webhook-certificate check); cert-manager writes it
		if r := as[rbacv1.ClusterRole](t, objs["ClusterRole/lastcall-controller-webhook"]).Rules; len(r) != 1 || !slices.Equal(r[0].Verbs, []string{"get"}) || !slices.Equal(r[0].ResourceNames, []string{"lastcall-webhook"}) {
			t.Errorf("with cert-manager the controller's webhook ClusterRole is %+v, want get on lastcall-webhook only", r)
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
			if w.Name != "check.inject.lastcall.dev" && !slices.ContainsFunc(w.NamespaceSelector.MatchExpressions, func(e metav1.LabelSelectorRequirement) bool { return slices.Contains(e.Values, "infra") }) {
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

// The install check runs after install and upgrade as Helm hooks, its RBAC only while it runs,
// and its pod is not one of the controller's (the Deployment's selector, the PDB).
func TestWebhookCheckHook(t *testing.T) {
	objs := render(t, "webhook.check.timeout=90s")
	job := as[batchv1.Job](t, objs["Job/lastcall-webhook-check"])
	for _, k := range []string{"Job", "ServiceAccount", "Role", "RoleBinding"} {
		u := objs[k+"/lastcall-webhook-check"]
		if u == nil {
			t.Fatalf("no %s/lastcall-webhook-check", k)
		}
		a := u.GetAnnotations()
		if a["helm.sh/hook"] != "post-install,post-upgrade" || !strings.Contains(a["helm.sh/hook-delete-policy"], "hook-succeeded") {
			t.Errorf("%s: annotations %v, want a post-install,post-upgrade hook deleted once it succeeded", k, a)
		}
	}
	if w := objs["Job/lastcall-webhook-check"].GetAnnotations()["helm.sh/hook-weight"]; w != "1" {
		t.Errorf("Job hook weight %q: want it after its RBAC (-5, -4)", w)
	}
	args := job.Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"check-webhook", "--namespace=lastcall-system", "--timeout=90s"} {
		if !slices.Contains(args, want) {
			t.Errorf("check args %v lack %s", args, want)
		}
	}
	if sa := job.Spec.Template.Spec.ServiceAccountName; sa != "lastcall-webhook-check" {
		t.Errorf("check runs as %q", sa)
	}
	if r := as[rbacv1.Role](t, objs["Role/lastcall-webhook-check"]).Rules; len(r) != 1 || !slices.Equal(r[0].Verbs, []string{"create"}) || !slices.Equal(r[0].Resources, []string{"pods"}) {
		t.Errorf("check Role %+v: want create pods only", r)
	}
	dep := as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"])
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Matches(labels.Set(job.Spec.Template.Labels)) {
		t.Errorf("the check pod's labels %v match the controller's selector %s", job.Spec.Template.Labels, sel)
	}

	for _, set := range []string{"webhook.check.enabled=false", "webhook.enabled=false"} {
		if objs := render(t, set); objs["Job/lastcall-webhook-check"] != nil || objs["Role/lastcall-webhook-check"] != nil {
			t.Errorf("%s: the check is still rendered", set)
		}
	}
}
