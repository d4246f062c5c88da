// Package apitest starts a real kube-apiserver and etcd (controller-runtime's envtest) for tests,
// from the assets hack/envtest-assets.sh builds.
package apitest

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// errNoAssets is the start's answer without KUBEBUILDER_ASSETS.
var errNoAssets = errors.New("KUBEBUILDER_ASSETS is not set: build the assets with hack/envtest-assets.sh (make test does)")

// Start runs a control plane until the test ends. Without KUBEBUILDER_ASSETS it skips the test,
// or fails it when LASTCALL_REQUIRE_INTEGRATION=1 (make test sets both). Tests that stop the
// API server need their own; others share one with Shared.
func Start(t testing.TB) (*envtest.Environment, *rest.Config) {
	t.Helper()
	env, cfg, err := start()
	skipOrFail(t, err)
	t.Cleanup(func() { _ = env.Stop() })
	return env, cfg
}

func start() (*envtest.Environment, *rest.Config, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, nil, errNoAssets
	}
	// Generous start timeout: CI runs several packages' control planes at once on 2 cores, and
	// kube-apiserver's start-up is CPU-bound.
	env := &envtest.Environment{ControlPlaneStartTimeout: 3 * time.Minute, ControlPlaneStopTimeout: time.Minute}
	cfg, err := env.Start()
	if err != nil {
		return nil, nil, fmt.Errorf("start kube-apiserver and etcd: %w", err)
	}
	return env, cfg, nil
}

func skipOrFail(t testing.TB, err error) {
	t.Helper()
	switch {
	case errors.Is(err, errNoAssets) && os.Getenv("LASTCALL_REQUIRE_INTEGRATION") != "1":
		t.Skip("KUBEBUILDER_ASSETS is not set: run `make test` for integration tests against a real kube-apiserver")
	case err != nil:
		t.Fatal(err)
	}
}

// One control plane for a whole test package: started by the first test that asks, stopped by
// Main or StopShared.
var shared struct {
	once sync.Once
	env  *envtest.Environment
	cfg  *rest.Config
	err  error
}

// Shared returns the package's control plane, started at the first call; the package's TestMain
// must call Main or StopShared. Tests that share it work in namespaces of their own.
func Shared(t testing.TB) *rest.Config {
	t.Helper()
	shared.once.Do(func() { shared.env, shared.cfg, shared.err = start() })
	skipOrFail(t, shared.err)
	return rest.CopyConfig(shared.cfg)
}

// StopShared stops the control plane Shared started, if any.
func StopShared() {
	if shared.env != nil {
		_ = shared.env.Stop()
	}
}

// Main runs a package's tests, then stops the shared control plane:
//
//	func TestMain(m *testing.M) { apitest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}
