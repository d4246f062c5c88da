// Package charts_test renders charts/lastcall with Helm's Go SDK, for the default values and for
// each option, and asserts on the objects a cluster would receive.
package charts_test

import (
	"os"
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

// render returns the rendered objects by kind/name, with values given as --set strings.
func render(t *testing.T, sets ...string) map[string]*unstructured.Unstructured {
	t.Helper()
	out, err := renderErr(t, sets...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func renderErr(t *testing.T, sets ...string) (map[string]*unstructured.Unstructured, error) {
	t.Helper()
	ch := load(t)
	user := map[string]any{}
	for _, s := range sets {
		if err := strvals.ParseInto(s, user); err != nil {
			t.Fatalf("--set %s: %v", s, err)
		}
	}
	vals, err := chartutil.ToRenderValues(ch, user, chartutil.ReleaseOptions{Name: "lastcall", Namespace: "lastcall-system", IsInstall: true}, chartutil.DefaultCapabilities)
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

// The chart's ClusterRole must grant exactly what controller-gen derived from the code.
func TestControllerRBACMatchesGenerated(t *testing.T) {
	data, err := os.ReadFile("../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var generated *rbacv1.ClusterRole
	for _, doc := range strings.Split(string(data), "\n---") {
		var cr rbacv1.ClusterRole
		if err := yaml.Unmarshal([]byte(doc), &cr); err == nil && cr.Kind == "ClusterRole" {
			generated = &cr
		}
	}
	if generated == nil {
		t.Fatal("no ClusterRole in config/rbac/role.yaml")
	}
	chartRole := as[rbacv1.ClusterRole](t, render(t)["ClusterRole/lastcall-controller"])
	if !reflect.DeepEqual(normalize(chartRole.Rules), normalize(generated.Rules)) {
		t.Errorf("chart ClusterRole rules differ from config/rbac/role.yaml (run make generate, then update templates/rbac.yaml):\nchart:     %v\ngenerated: %v", chartRole.Rules, generated.Rules)
	}
	for _, r := range chartRole.Rules {
		if slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.Verbs, "delete") {
			t.Errorf("rule broader than needed: %+v", r)
		}
	}
}

func normalize(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					out = append(out, g+"/"+res+":"+v)
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
		sm := render(t, "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom")["ServiceMonitor/lastcall-controller"]
		if sm == nil || sm.GetLabels()["release"] != "prom" {
			t.Fatalf("ServiceMonitor = %v", sm)
		}
	})
	t.Run("preStop bindings in chosen namespaces", func(t *testing.T) {
		objs := render(t, "prestop.rbac.bindings[0].namespace=shop", "prestop.rbac.bindings[0].serviceAccount=web")
		rb := as[rbacv1.RoleBinding](t, objs["RoleBinding/lastcall-prestop-web"])
		if rb.Namespace != "shop" || rb.RoleRef.Name != "lastcall-prestop" || rb.Subjects[0].Name != "web" || rb.Subjects[0].Namespace != "shop" {
			t.Errorf("binding %+v", rb)
		}
		cr := as[rbacv1.ClusterRole](t, objs["ClusterRole/lastcall-prestop"])
		if got := normalize(cr.Rules); !slices.Equal(got, []string{"/pods:get", "discovery.k8s.io/endpointslices:list", "discovery.k8s.io/endpointslices:watch"}) {
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

var freeForm = map[string]bool{"resources": true}

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
