package endpoints

import (
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/dynamic"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// Name is the registry's name in --registries and annotations.
const Name = "endpoints"

// DefaultSettle is one kube-proxy sync, roughly.
const DefaultSettle = 500 * time.Millisecond

// Adapter is the EndpointSlice registry's entry in the adapters table.
func Adapter() registry.Adapter {
	return registry.Adapter{
		Name: Name, Auto: "when running in a cluster",
		Options: func() registry.Options { return &Options{} },
	}
}

// SliceSource is what a binary that already watches EndpointSlices offers next to its
// registry.Kube (the controller's cache), so the registry reads them from there.
type SliceSource interface {
	EndpointSlices() Slices
}

// Options are the EndpointSlice registry's settings.
type Options struct {
	// Settle is waited after the slices show the pod not ready (lastcall-prestop only).
	Settle time.Duration
}

// Vars implements registry.Options.
func (o *Options) Vars(b registry.Binary) []envflag.Var {
	if b != registry.PreStop {
		return nil // the controller never waits for propagation
	}
	return []envflag.Var{{Flag: "settle", Env: "LASTCALL_ENDPOINTS_SETTLE", Default: DefaultSettle.String(),
		Help: "extra wait after EndpointSlices show the pod not ready, for node proxies to apply it (one kube-proxy sync)",
		Set:  envflag.Duration(&o.Settle)}}
}

// Auto implements registry.Options.
func (o *Options) Auto(env registry.Env) bool { return env.InCluster }

// Check implements registry.Options.
func (o *Options) Check(env registry.Env) error {
	if env.Binary == registry.PreStop && (env.Pod.Namespace == "" || env.Pod.UID == "") {
		return errors.New("needs POD_NAMESPACE and POD_UID (--pod-namespace, --pod-uid): set them from the downward API (metadata.namespace, metadata.uid)")
	}
	return nil
}

// New implements registry.Options.
func (o *Options) New(env registry.Env) (registry.Registry, error) {
	if env.Kube == nil {
		return nil, errors.New("needs the Kubernetes API, which is not reachable")
	}
	cfg := Config{Settle: o.Settle, Logger: env.Logger()}
	src, cached := env.Kube.(SliceSource)
	var dyn dynamic.Interface
	if !cached || env.Binary == registry.PreStop {
		var err error
		if dyn, err = dynamic.NewForConfig(env.Kube.RESTConfig()); err != nil {
			return nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	if cached {
		cfg.Client = src.EndpointSlices()
	} else {
		cfg.Client = Dynamic{Client: dyn}
	}
	if svc, ok := env.Kube.(ServiceSource); ok {
		cfg.Services = svc.Services()
	}
	if env.Binary == registry.PreStop {
		// lastcall-prestop follows its own pod for lastcall-node's confirmation.
		cfg.Pods = DynamicPods{Client: dyn}
	}
	return New(cfg)
}
