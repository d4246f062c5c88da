package charts_test

// config/ (kustomize) and the chart must install the same thing. We keep both hand-written and
// compare them here instead of generating one from the other:
//   - the chart is the richer source (Consul, secrets, ServiceMonitor, toggles); config/ is its
//     default install for kustomize users. Generating config/ from the chart would put Helm's
//     labels (helm.sh/chart, managed-by Helm) into kustomize output and helm into `make
//     generate`; generating the chart from config/ would lose the templating.
//   - config/rbac/role.yaml is generated from the code's +kubebuilder:rbac markers by
//     controller-gen, so the chart's RBAC needs a comparison with it either way.
// The test reads both at test time: drift in either direction (or a regenerated role.yaml) fails
// `go test ./charts/` with the object and field that differ.

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// The chart renders config/'s objects for this release in this namespace.
const (
	parityRelease   = "lastcall"
	parityNamespace = "lastcall-system"
)

// buildConfig returns the objects of config/default and config/check (the chart's install
// hook) by kind/name, as kustomize builds them.
func buildConfig(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	objs := map[string]*unstructured.Unstructured{}
	for _, dir := range []string{"../config/default", "../config/check"} {
		addBuilt(t, dir, objs)
	}
	return objs
}

func addBuilt(t *testing.T, dir string, objs map[string]*unstructured.Unstructured) {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: jsonRoundTrip(t, m)}
		objs[u.GetKind()+"/"+u.GetName()] = u
	}
}

// jsonRoundTrip gives both sources the same Go types (numbers as float64).
func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestConfigMatchesChartDefaults(t *testing.T) {
	chart := renderRelease(t, parityRelease, parityNamespace)
	config := buildConfig(t)

	var onlyChart, onlyConfig []string
	for k := range chart {
		if config[k] == nil {
			onlyChart = append(onlyChart, k)
		}
	}
	for k := range config {
		// config/ creates its namespace; `helm install --create-namespace` does that for the chart
		if chart[k] == nil && k != "Namespace/"+parityNamespace {
			onlyConfig = append(onlyConfig, k)
		}
	}
	sort.Strings(onlyChart)
	sort.Strings(onlyConfig)
	if len(onlyChart)+len(onlyConfig) > 0 {
		t.Errorf("the chart's defaults and config/default install different objects:\nonly in the chart: %v\nonly in config/:   %v", onlyChart, onlyConfig)
	}

	for k, c := range chart {
		g := config[k]
		if g == nil {
			continue
		}
		if c.GetNamespace() != g.GetNamespace() {
			t.Errorf("%s: namespace %q in the chart, %q in config/", k, c.GetNamespace(), g.GetNamespace())
		}
		var diffs []string
		switch c.GetKind() {
		case "ClusterRole", "Role":
			if onlyC, onlyG := setDiff(normalize(rulesOf(t, c)), normalize(rulesOf(t, g))); len(onlyC)+len(onlyG) > 0 {
				diffs = append(diffs, fmt.Sprintf("rules granted only by the chart %v, only by config/ %v", onlyC, onlyG))
			}
		case "ClusterRoleBinding", "RoleBinding":
			diffs = diff("roleRef", c.Object["roleRef"], g.Object["roleRef"], diffs)
			diffs = diff("subjects", c.Object["subjects"], g.Object["subjects"], diffs)
		case "ServiceAccount":
		case "MutatingWebhookConfiguration":
			diffs = diff("webhooks", c.Object["webhooks"], g.Object["webhooks"], diffs)
		case "Secret":
			diffs = diff("type", c.Object["type"], g.Object["type"], diffs)
			diffs = diff("data", c.Object["data"], g.Object["data"], diffs)
		case "Deployment", "DaemonSet", "Job":
			// the image is the one difference: the chart's default tag is its appVersion, config/'s
			// is set with `kustomize edit set image`
			cs, gs := withoutImages(t, c), withoutImages(t, g)
			diffs = diff("spec", cs, gs, diffs)
		default:
			diffs = diff("spec", c.Object["spec"], g.Object["spec"], diffs)
		}
		for _, d := range diffs {
			t.Errorf("%s differs between the chart (default values) and config/ (change the one that is wrong): %s", k, d)
		}
	}
}

func rulesOf(t *testing.T, u *unstructured.Unstructured) []rbacv1.PolicyRule {
	t.Helper()
	b, err := json.Marshal(u.Object["rules"])
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	if err := json.Unmarshal(b, &rules); err != nil {
		t.Fatalf("%s/%s rules: %v", u.GetKind(), u.GetName(), err)
	}
	return rules
}

// setDiff returns what only a has and what only b has.
func setDiff(a, b []string) (onlyA, onlyB []string) {
	for _, x := range a {
		if !slices.Contains(b, x) {
			onlyA = append(onlyA, x)
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			onlyB = append(onlyB, x)
		}
	}
	return onlyA, onlyB
}

func withoutImages(t *testing.T, u *unstructured.Unstructured) map[string]any {
	t.Helper()
	spec := jsonRoundTrip(t, u.Object["spec"])
	containers, _, err := unstructured.NestedSlice(spec, "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range containers {
		delete(c.(map[string]any), "image")
	}
	if err := unstructured.SetNestedSlice(spec, containers, "template", "spec", "containers"); err != nil {
		t.Fatal(err)
	}
	return spec
}

// diff appends one line per leaf where chart and config differ, named by its path.
func diff(at string, chart, config any, out []string) []string {
	cm, cok := chart.(map[string]any)
	gm, gok := config.(map[string]any)
	if cok && gok {
		keys := map[string]bool{}
		for k := range cm {
			keys[k] = true
		}
		for k := range gm {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			out = diff(at+"."+k, cm[k], gm[k], out)
		}
		return out
	}
	cs, cok := chart.([]any)
	gs, gok := config.([]any)
	if cok && gok && len(cs) == len(gs) {
		for i := range cs {
			out = diff(fmt.Sprintf("%s[%d]", at, i), cs[i], gs[i], out)
		}
		return out
	}
	if !reflect.DeepEqual(chart, config) {
		out = append(out, fmt.Sprintf("%s: chart %s, config %s", at, show(chart), show(config)))
	}
	return out
}

func show(v any) string {
	if v == nil {
		return "(none)"
	}
	b, _ := json.Marshal(v)
	return strings.TrimSpace(string(b))
}
