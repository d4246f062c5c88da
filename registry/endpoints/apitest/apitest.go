// Package apitest starts a real kube-apiserver and etcd (controller-runtime's envtest) for tests,
// from the assets hack/envtest-assets.sh builds.
package apitest

import (
	"os"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Start runs a control plane until the test ends. Without KUBEBUILDER_ASSETS it skips the test,
// or fails it when LASTCALL_REQUIRE_INTEGRATION=1 (make test sets both).
func Start(t testing.TB) (*envtest.Environment, *rest.Config) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("LASTCALL_REQUIRE_INTEGRATION") == "1" {
			t.Fatal("KUBEBUILDER_ASSETS is not set: build the assets with hack/envtest-assets.sh (make test does)")
		}
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test` for integration tests against a real kube-apiserver")
	}
	// Generous start timeout: CI runs several packages' control planes at once on 2 cores, and
	// kube-apiserver's start-up is CPU-bound.
	env := &envtest.Environment{ControlPlaneStartTimeout: 3 * time.Minute, ControlPlaneStopTimeout: time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}
