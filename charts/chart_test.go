// Package charts_test renders charts/lastcall with Helm's Go SDK, for the default values and for
// each option, and asserts on the objects a cluster would receive.
package charts_test

import (
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const chartDir = "lastcall"

func load(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// render returns the objects of release lastcall in lastcall-system by kind/name, with values
// given as --set strings.
func render(t *testing.T, sets ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	return renderRelease(t, "lastcall", "lastcall-system", sets...)
}

func renderRelease(t *testing.T, release, namespace string, sets ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	out, err := renderChart(t, load(t), release, namespace, sets...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func renderErr(t *testing.T, sets ...string) (map[string]*unstructured.Unstructured, error) {
	t.Helper()
	return renderChart(t, load(t), "lastcall", "lastcall-system", sets...)
}

func renderChart(t *testing.T, ch *chart.Chart, release, namespace string, sets ...string) (map[string]*unstructured.Unstructured, error) {
	t.Helper()
	user := map[string]any{}
	for _, s := range sets {
		if err := strvals.ParseInto(s, user); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	vals, err := chartutil.ToRenderValues(ch, user, chartutil.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, err
	}
	objs := map[string]*unstructured.Unstructured{}
	for name, content := range files {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(content, "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, doc)
			}
			if len(u.Object) == 0 {
				continue
			}
			objs[u.GetKind()+"/"+u.GetName()] = u
		}
	}
	return objs, nil
}

func as[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	b, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := yaml.UnmarshalStrict(b, &out); err != nil {
		t.Fatalf("%s/%s does not decode strictly: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}

func TestDefaults(t *testing.T) {
	objs := render(t)
	d := as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"])
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--leader-elect", "--leader-election-namespace=lastcall-system", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081", "--sweep-interval=30s"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--consul-addr") }) {
		t.Error("--consul-addr without consul.address")
	}
	if c.Image != "lastcall-controller:0.1.0" {
		t.Errorf("image %s", c.Image)
	}
	sc, psc := c.SecurityContext, d.Spec.Template.Spec.SecurityContext
	if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("security context not locked down: pod %+v container %+v", psc, sc)
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("probes do not hit /healthz and /readyz")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("no resource requests")
	}
	for _, k := range []string{"PodDisruptionBudget/lastcall-controller", "Service/lastcall-controller-metrics", "ServiceAccount/lastcall-controller",
		"ClusterRole/lastcall-prestop", "Role/lastcall-controller", "RoleBinding/lastcall-controller", "ClusterRoleBinding/lastcall-controller"} {
		if objs[k] == nil {
			t.Errorf("%s not rendered", k)
		}
	}
	if objs["ServiceMonitor/lastcall-controller"] != nil {
		t.Error("ServiceMonitor rendered by default")
	}
}

// The chart's RBAC equals config/rbac/role.yaml, which controller-gen derives from the code
// (TestConfigMatchesChartDefaults); nothing in it may be broader than a rule needs.
func TestRBACIsLeastPrivilege(t *testing.T) {
	for k, u := range render(t) {
		if u.GetKind() != "ClusterRole" && u.GetKind() != "Role" {
			continue
		}
		for _, r := range as[rbacv1.ClusterRole](t, u).Rules {
			if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") ||
				(u.GetKind() == "ClusterRole" && slices.Contains(r.Verbs, "delete")) {
				t.Errorf("%s: rule broader than needed: %+v", k, r)
			}
		}
	}
}

func normalize(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if len(r.ResourceNames) == 0 {
						out = append(out, g+"/"+res+":"+v)
					}
					for _, n := range r.ResourceNames { // a rule on named objects only
						out = append(out, g+"/"+res+"/"+n+":"+v)
					}
				}
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestOptions(t *testing.T) {
	t.Run("consul with token and CA", func(t *testing.T) {
		objs := render(t, "consul.address=http://consul.consul:8500", "consul.servers={http://s1:8500,http://s2:8500}",
			"consul.tokenSecret.name=consul-token", "consul.caSecret.name=consul-ca")
		c := as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"]).Spec.Template.Spec.Containers[0]
		if !slices.Contains(c.Args, "--consul-addr=http://consul.consul:8500") || !slices.Contains(c.Args, "--consul-servers=http://s1:8500,http://s2:8500") {
			t.Errorf("args %v", c.Args)
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
		}
		if ref := env["CONSUL_HTTP_TOKEN"].ValueFrom; ref == nil || ref.SecretKeyRef.Name != "consul-token" || ref.SecretKeyRef.Key != "token" {
			t.Errorf("token env = %+v", env["CONSUL_HTTP_TOKEN"])
		}
		if env["CONSUL_CACERT"].Value != "/etc/lastcall/consul-ca/ca.crt" || len(c.VolumeMounts) != 1 {
			t.Errorf("CA env %+v, mounts %+v", env["CONSUL_CACERT"], c.VolumeMounts)
		}
	})
	t.Run("service monitor", func(t *testing.T) {
		objs := render(t, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")
		sm := objs["ServiceMonitor/lastcall-controller"]
		if sm == nil || sm.GetLabels()["release"] != "prom" {
			t.Fatalf("ServiceMonitor = %v", sm)
		}
		svc := as[corev1.Service](t, objs["Service/lastcall-controller-metrics"])
		sel := serviceMonitorSelector(t, sm)
		// exactly the selector labels, which the metrics Service carries
		if !reflect.DeepEqual(sel, svc.Spec.Selector) {
			t.Errorf("ServiceMonitor selects %v, want the selector labels %v", sel, svc.Spec.Selector)
		}
		for k, v := range sel {
			if svc.Labels[k] != v {
				t.Errorf("ServiceMonitor selects %s=%s, which the metrics Service does not carry (%v)", k, v, svc.Labels)
			}
		}
		if eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints"); len(eps) != 1 || eps[0].(map[string]any)["port"] != svc.Spec.Ports[0].Name {
			t.Errorf("ServiceMonitor endpoints %v do not scrape the Service's port %s", eps, svc.Spec.Ports[0].Name)
		}
	})
	t.Run("service monitor selector survives a chart upgrade", func(t *testing.T) {
		ch := load(t)
		ch.Metadata.Version, ch.Metadata.AppVersion = "9.9.9", "9.9.9"
		upgraded, err := renderChart(t, ch, "lastcall", "lastcall-system", "metrics.serviceMonitor.enabled=true")
		if err != nil {
			t.Fatal(err)
		}
		before := serviceMonitorSelector(t, render(t, "metrics.serviceMonitor.enabled=true")["ServiceMonitor/lastcall-controller"])
		after := serviceMonitorSelector(t, upgraded["ServiceMonitor/lastcall-controller"])
		if !reflect.DeepEqual(before, after) {
			t.Errorf("ServiceMonitor selector changes with the chart version: %v, then %v", before, after)
		}
		if after["helm.sh/chart"] != "" || after["app.kubernetes.io/version"] != "" {
			t.Errorf("ServiceMonitor selects on version labels: %v", after)
		}
		if upgraded["Service/lastcall-controller-metrics"].GetLabels()["app.kubernetes.io/version"] != "9.9.9" {
			t.Error("test broken: the upgraded chart's Service does not carry the new version")
		}
	})
	t.Run("preStop bindings in chosen namespaces", func(t *testing.T) {
		objs := render(t, "prestop.rbac.bindings[0].namespace=shop", "prestop.rbac.bindings[0].serviceAccount=web")
		rb := as[rbacv1.RoleBinding](t, objs["RoleBinding/lastcall-prestop-web"])
		if rb.Namespace != "shop" || rb.RoleRef.Name != "lastcall-prestop" || rb.Subjects[0].Name != "web" || rb.Subjects[0].Namespace != "shop" {
			t.Errorf("binding %+v", rb)
		}
		cr := as[rbacv1.ClusterRole](t, objs["ClusterRole/lastcall-prestop"])
		if got := normalize(cr.Rules); !slices.Equal(got, []string{"/pods:get", "/pods:watch", "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch"}) {
			t.Errorf("prestop rules %v", got)
		}
	})
	t.Run("no prestop role, no PDB", func(t *testing.T) {
		objs := render(t, "prestop.rbac.create=false", "podDisruptionBudget.enabled=false")
		if objs["ClusterRole/lastcall-prestop"] != nil || objs["PodDisruptionBudget/lastcall-controller"] != nil {
			t.Error("rendered what was turned off")
		}
	})
	t.Run("tuning", func(t *testing.T) {
		c := as[appsv1.Deployment](t, render(t, "drain.gateRetry=500ms", "kubeAPI.qps=200", "logLevel=debug", "image.tag=v1.2.3")["Deployment/lastcall-controller"]).Spec.Template.Spec.Containers[0]
		for _, a := range []string{"--gate-retry=500ms", "--kube-api-qps=200", "--zap-log-level=debug"} {
			if !slices.Contains(c.Args, a) {
				t.Errorf("args %v lack %s", c.Args, a)
			}
		}
		if c.Image != "lastcall-controller:v1.2.3" {
			t.Errorf("image %s", c.Image)
		}
	})
}

func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct{ set, mention string }{
		{"replicaCount=two", "replicaCount"},
		{"replicaCount=0", "replicaCount"},
		{"logLevel=loud", "logLevel"},
		{"drain.sweepInterval=often", "sweepInterval"},
		{"consul.address=consul:8500", "address"},
		{"metrics.port=70000", "port"},
		{"image.pullPolicy=Sometimes", "pullPolicy"},
		{"replicas=3", "replicas"},
		{"prestop.rbac.bindings[0].namespace=shop", "serviceAccount"},
	}
	for _, tt := range tests {
		t.Run(tt.set, func(t *testing.T) {
			_, err := renderErr(t, tt.set)
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("err = %v, want a schema error naming %s", err, tt.mention)
			}
		})
	}
}

func TestLintClean(t *testing.T) {
	l := lint.All(chartDir, nil, "lastcall-system", false)
	for _, m := range l.Messages {
		if m.Severity > support.InfoSev {
			t.Errorf("helm lint: %s", m)
		}
	}
}

// Every field of values.yaml is in the schema and the schema has no field values.yaml lacks.
func TestValuesAndSchemaInStep(t *testing.T) {
	ch := load(t)
	var schema map[string]any
	if err := yaml.Unmarshal(ch.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	var fromValues, fromSchema []string
	walkValues("", ch.Values, &fromValues)
	walkSchema("", schema, &fromSchema)
	sort.Strings(fromValues)
	sort.Strings(fromSchema)
	if !slices.Equal(fromValues, fromSchema) {
		t.Errorf("values.yaml and values.schema.json differ:\nvalues: %v\nschema: %v", fromValues, fromSchema)
	}
}

// walkValues lists value paths down to leaves; maps that are free-form (resources, labels…) are
// leaves in the schema too, so both walks stop at maps the schema leaves open.
func walkValues(prefix string, v map[string]any, out *[]string) {
	for k, val := range v {
		p := prefix + k
		if m, ok := val.(map[string]any); ok && len(m) > 0 && !freeForm[p] {
			walkValues(p+".", m, out)
			continue
		}
		*out = append(*out, p)
	}
}

var freeForm = map[string]bool{"resources": true, "node.resources": true}

func walkSchema(prefix string, s map[string]any, out *[]string) {
	props, _ := s["properties"].(map[string]any)
	for k, v := range props {
		p := prefix + k
		sub, _ := v.(map[string]any)
		if _, nested := sub["properties"]; nested && !freeForm[p] && sub["$ref"] == nil {
			walkSchema(p+".", sub, out)
			continue
		}
		if ref, _ := sub["$ref"].(string); ref == "#/definitions/secretRef" {
			*out = append(*out, p+".name", p+".key")
			continue
		}
		*out = append(*out, p)
	}
}

func serviceMonitorSelector(t *testing.T, sm *unstructured.Unstructured) map[string]string {
	t.Helper()
	if sm == nil {
		t.Fatal("no ServiceMonitor rendered")
	}
	sel, found, err := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
	if err != nil || !found || len(sel) == 0 {
		t.Fatalf("ServiceMonitor has no spec.selector.matchLabels (%v)", err)
	}
	return sel
}

// Two releases, even in one namespace and binding the same ServiceAccount, create no object of
// the same kind, namespace and name; each release's bindings point at its own roles.
func TestTwoReleasesDoNotCollide(t *testing.T) {
	sets := []string{"metrics.serviceMonitor.enabled=true",
		"prestop.rbac.bindings[0].namespace=shop", "prestop.rbac.bindings[0].serviceAccount=web"}
	owner := map[string]string{}
	leases := map[string]string{} // leader election Lease names: a shared one would elect one leader for both
	for _, release := range []string{"blue", "green"} {
		objs := renderRelease(t, release, "lastcall-system", sets...)
		for _, a := range as[appsv1.Deployment](t, objs["Deployment/"+release+"-controller"]).Spec.Template.Spec.Containers[0].Args {
			if id, ok := strings.CutPrefix(a, "--leader-election-id="); ok {
				if other, taken := leases[id]; taken {
					t.Errorf("releases %s and %s share the leader election Lease %s", other, release, id)
				}
				leases[id] = release
			}
		}
		for _, u := range objs {
			id := u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
			if other, taken := owner[id]; taken {
				t.Errorf("releases %s and %s both create %s", other, release, id)
			}
			owner[id] = release
			if u.GetNamespace() == "" && !strings.HasPrefix(u.GetName(), release+"-") {
				t.Errorf("cluster-scoped %s of release %s does not carry the release name", id, release)
			}
		}
		for _, k := range []string{"ClusterRoleBinding/" + release + "-controller", "RoleBinding/" + release + "-controller", "RoleBinding/" + release + "-prestop-web"} {
			rb := as[rbacv1.RoleBinding](t, objs[k])
			if !strings.HasPrefix(rb.RoleRef.Name, release+"-") || objs[rb.RoleRef.Kind+"/"+rb.RoleRef.Name] == nil {
				t.Errorf("%s refers to %s %s, not a role of release %s", k, rb.RoleRef.Kind, rb.RoleRef.Name, release)
			}
		}
	}
}

// lastcall-node is off by default; on, it runs on every node's network with only the
// capabilities its reads need, and a headless Service lists the agents for the controller.
func TestNodeAgent(t *testing.T) {
	off := render(t, "node.enabled=false")
	if _, ok := off["DaemonSet/lastcall-node"]; ok {
		t.Fatal("the node agent is rendered with node.enabled=false")
	}
	if _, ok := render(t)["DaemonSet/lastcall-node"]; !ok {
		t.Fatal("the node agent is not rendered by default")
	}
	objs := render(t, "node.capabilities={NET_ADMIN}")
	ds := as[appsv1.DaemonSet](t, objs["DaemonSet/lastcall-node"])
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case !spec.HostNetwork:
		t.Error("not on the host network: it would read its own pod's (empty) ruleset")
	case sc == nil || sc.Privileged == nil || *sc.Privileged || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("securityContext %+v: want unprivileged with a read-only root", sc)
	case !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"NET_ADMIN"}):
		t.Errorf("capabilities %+v: want drop ALL, add NET_ADMIN", sc.Capabilities)
	case spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken:
		t.Error("the agent makes no API calls: no service account token")
	}
	args := as[appsv1.Deployment](t, objs["Deployment/lastcall-controller"]).Spec.Template.Spec.Containers[0].Args
	for _, want := range []string{"--dataplane-agents", "--dataplane-agent-port=9902", "--dataplane-agent-service=lastcall-node", "--dataplane-agent-namespace=lastcall-system"} {
		if !slices.Contains(args, want) {
			t.Errorf("controller args %v lack %s: the fan-in must ask this release's agents", args, want)
		}
	}
	if args := as[appsv1.Deployment](t, off["Deployment/lastcall-controller"]).Spec.Template.Spec.Containers[0].Args; slices.Contains(args, "--dataplane-agents") {
		t.Error("the fan-in is on without the agents")
	}
	svc := as[corev1.Service](t, objs["Service/lastcall-node"])
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !maps.Equal(svc.Spec.Selector, ds.Spec.Selector.MatchLabels) {
		t.Errorf("agents Service: clusterIP %q selector %v; want headless, selecting the DaemonSet's pods %v", svc.Spec.ClusterIP, svc.Spec.Selector, ds.Spec.Selector.MatchLabels)
	}
}
