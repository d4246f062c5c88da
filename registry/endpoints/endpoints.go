// Package endpoints is the registry.Registry for Kubernetes EndpointSlices. The EndpointSlice
// controller itself marks a deleting pod's endpoints not ready; this adapter finds them and
// watches until every one is ready=false or gone, then allows kube-proxy one sync.
package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/lastcall-dev/lastcall/registry"
)

// Config for the EndpointSlice registry.
type Config struct {
	Client Slices
	// Settle is waited after the slices show the pod not ready: the time node proxies need to
	// apply the change they have just been told about (one kube-proxy sync).
	Settle time.Duration
	// Pods, when set, lets the wait end on the pod's DataplaneCondition (lastcall-node's
	// per-node confirmation) instead of on Settle; Settle stays the fallback.
	Pods Pods
	// Services, when set, lets Unlisted tell a pod that no Service selects (the controller's
	// registration gate does not wait for such a pod to appear in EndpointSlices).
	Services Services
	Logger   *slog.Logger
}

// Registry implements registry.Registry on EndpointSlices.
type Registry struct {
	cfg Config
	log *slog.Logger
}

var _ registry.Registry = (*Registry)(nil)

// New checks cfg and returns a Registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Client == nil {
		return nil, errors.New("endpoints: Config.Client is nil")
	}
	if cfg.Settle < 0 {
		return nil, fmt.Errorf("endpoints: Settle is %s; want 0 or more", cfg.Settle)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{cfg: cfg, log: cfg.Logger.With("registry", "endpoints")}, nil
}

// Name implements registry.Registry.
func (r *Registry) Name() string { return Name }

// Deregister implements registry.Registry. Endpoints belong to the EndpointSlice controller,
// which takes a deleting pod out by itself (a write here would be reverted), so this only records
// where the pod is listed.
func (r *Registry) Deregister(ctx context.Context, in registry.Instance) (registry.Receipt, error) {
	list, err := r.cfg.Client.List(ctx, in.Namespace)
	if err != nil {
		return registry.Receipt{}, fmt.Errorf("endpoints: list EndpointSlices in %s: %w", in.Namespace, err)
	}
	rc := registry.Receipt{Version: registry.Version(list.ResourceVersion)}
	for i := range list.Items {
		for _, ep := range podEndpoints(&list.Items[i], in.UID) {
			for _, addr := range ep.Addresses {
				rc.Removed = append(rc.Removed, registry.Ref{Service: list.Items[i].Name, ID: addr})
			}
		}
	}
	return rc, nil
}

// AwaitPropagated implements registry.Registry with a list and a watch from its resourceVersion;
// a watch that ends early is resumed by listing again.
func (r *Registry) AwaitPropagated(ctx context.Context, in registry.Instance, _ registry.Receipt) error {
	for {
		list, err := r.cfg.Client.List(ctx, in.Namespace)
		if err != nil {
			return fmt.Errorf("endpoints: list EndpointSlices in %s: %w", in.Namespace, err)
		}
		ready := map[string]int{} // slice name → endpoints of the pod still ready
		for i := range list.Items {
			track(ready, &list.Items[i], in.UID)
		}
		if total(ready) == 0 {
			return r.afterSlices(ctx, in)
		}
		w, err := r.cfg.Client.Watch(ctx, in.Namespace, list.ResourceVersion)
		if err != nil {
			return fmt.Errorf("endpoints: watch EndpointSlices in %s: %w", in.Namespace, err)
		}
		done, err := r.consume(ctx, w, ready, in.UID)
		w.Stop()
		if err != nil {
			return err
		}
		if done {
			return r.afterSlices(ctx, in)
		}
		r.log.DebugContext(ctx, "watch ended early, listing again")
	}
}

// consume applies watch events until the pod is ready nowhere (true), the watch ends (false),
// or ctx ends (error).
func (r *Registry) consume(ctx context.Context, w watch.Interface, ready map[string]int, uid string) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if s, isSlice := ev.Object.(*discoveryv1.EndpointSlice); isSlice {
					track(ready, s, uid)
				}
			case watch.Deleted:
				if s, isSlice := ev.Object.(*discoveryv1.EndpointSlice); isSlice {
					delete(ready, s.Name)
				}
			case watch.Error:
				return false, nil // e.g. resourceVersion too old: list again
			}
			if total(ready) == 0 {
				return true, nil
			}
		}
	}
}

// afterSlices waits for the node proxies once the slices no longer list the pod as ready: on
// the dataplane confirmation where it can (lastcall-node), else one --settle.
func (r *Registry) afterSlices(ctx context.Context, in registry.Instance) error {
	if r.cfg.Pods == nil || in.Pod == "" {
		return r.settle(ctx)
	}
	return r.awaitDataplane(ctx, in)
}

func (r *Registry) settle(ctx context.Context) error {
	if r.cfg.Settle == 0 {
		return nil
	}
	t := time.NewTimer(r.cfg.Settle)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Visible implements registry.Registry: the pod is listed in an EndpointSlice. Readiness is not
// required, because the registration gate itself holds the pod un-ready until it is visible.
func (r *Registry) Visible(ctx context.Context, in registry.Instance) (bool, error) {
	list, err := r.cfg.Client.List(ctx, in.Namespace)
	if err != nil {
		return false, fmt.Errorf("endpoints: list EndpointSlices in %s: %w", in.Namespace, err)
	}
	for i := range list.Items {
		if len(podEndpoints(&list.Items[i], in.UID)) > 0 {
			return true, nil
		}
	}
	return false, nil
}

func podEndpoints(s *discoveryv1.EndpointSlice, uid string) []discoveryv1.Endpoint {
	var out []discoveryv1.Endpoint
	for _, ep := range s.Endpoints {
		if ep.TargetRef != nil && string(ep.TargetRef.UID) == uid {
			out = append(out, ep)
		}
	}
	return out
}

// track records how many of the pod's endpoints in s still count as ready. A nil Ready
// condition means "unknown", which consumers treat as ready.
func track(ready map[string]int, s *discoveryv1.EndpointSlice, uid string) {
	n := 0
	for _, ep := range podEndpoints(s, uid) {
		if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
			n++
		}
	}
	if n == 0 {
		delete(ready, s.Name)
		return
	}
	ready[s.Name] = n
}

func total(ready map[string]int) int {
	n := 0
	for _, v := range ready {
		n += v
	}
	return n
}

// Ready reports whether any EndpointSlice still lists the pod as ready, i.e. whether node
// proxies may still send it new connections.
func (r *Registry) Ready(ctx context.Context, in registry.Instance) (bool, error) {
	list, err := r.cfg.Client.List(ctx, in.Namespace)
	if err != nil {
		return false, fmt.Errorf("endpoints: list EndpointSlices in %s: %w", in.Namespace, err)
	}
	ready := map[string]int{}
	for i := range list.Items {
		track(ready, &list.Items[i], in.UID)
	}
	return total(ready) > 0, nil
}
