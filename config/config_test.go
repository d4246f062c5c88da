// Package config_test builds the kustomize install (config/default) with kustomize's Go API and
// checks what a cluster would receive. charts/parity_test.go checks that it equals the chart's
// default install.
package config_test

import (
	"slices"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/resid"
)

func TestDefaultBuilds(t *testing.T) {
	fs := filesys.MakeFsOnDisk()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fs, "default")
	if err != nil {
		t.Fatalf("kustomize build config/default: %v", err)
	}
	got := map[string]bool{}
	for _, r := range res.Resources() {
		got[r.GetKind()+"/"+r.GetNamespace()+"/"+r.GetName()] = true
	}
	for _, want := range []string{
		"Namespace//lastcall-system",
		"Deployment/lastcall-system/lastcall-controller",
		"ServiceAccount/lastcall-system/lastcall-controller",
		"ClusterRole//lastcall-controller",
		"ClusterRoleBinding//lastcall-controller",
		"Role/lastcall-system/lastcall-controller",
		"RoleBinding/lastcall-system/lastcall-controller",
		"ClusterRole//lastcall-prestop",
		"PodDisruptionBudget/lastcall-system/lastcall-controller",
		"Service/lastcall-system/lastcall-controller-metrics",
	} {
		if !got[want] {
			t.Errorf("config/default lacks %s (has %v)", want, got)
		}
	}
	dep, err := res.GetByCurrentId(id("Deployment", "apps", "lastcall-system", "lastcall-controller"))
	if err != nil {
		t.Fatal(err)
	}
	args, err := dep.GetSlice("spec.template.spec.containers[0].args")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(args, any("--leader-elect")) {
		t.Errorf("controller args %v lack --leader-elect", args)
	}
	sa, err := dep.GetString("spec.template.spec.serviceAccountName")
	if err != nil || sa != "lastcall-controller" {
		t.Errorf("serviceAccountName %q, %v", sa, err)
	}
}

func id(kind, group, ns, name string) resid.ResId {
	return resid.NewResIdWithNamespace(resid.Gvk{Group: group, Version: "v1", Kind: kind}, name, ns)
}
