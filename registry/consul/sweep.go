package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
)

// Meta keys an app sets on its registration so a sweeper can find the pod behind it; the pod UID
// key is Config.MetaKey (DefaultMetaKey by default).
const (
	MetaPodName      = "pod-name"
	MetaPodNamespace = "pod-namespace"
)

// PodInstance is a catalog instance that names the pod it belongs to.
type PodInstance struct {
	Ref       registry.Ref
	Node      string
	UID       string
	Namespace string
	Pod       string
}

// PodInstances lists every catalog instance whose meta carries a pod UID.
func (r *Registry) PodInstances(ctx context.Context) ([]PodInstance, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := r.cfg.Client.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("consul: list catalog services: %w", err)
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	slices.Sort(sorted)
	var out []PodInstance
	for _, name := range sorted {
		entries, _, err := r.cfg.Client.Catalog().Service(name, "", q)
		if err != nil {
			return nil, fmt.Errorf("consul: read catalog service %q: %w", name, err)
		}
		for _, e := range entries {
			uid := e.ServiceMeta[r.cfg.MetaKey]
			if uid == "" {
				continue
			}
			out = append(out, PodInstance{
				Ref: registry.Ref{Service: e.ServiceName, ID: e.ServiceID}, Node: e.Node, UID: uid,
				Namespace: e.ServiceMeta[MetaPodNamespace], Pod: e.ServiceMeta[MetaPodName],
			})
		}
	}
	return out, nil
}

// Remove deregisters one catalog instance. An instance of the agent this registry talks to goes
// through that agent, whose anti-entropy would otherwise restore it; others through the catalog.
func (r *Registry) Remove(ctx context.Context, p PodInstance) error {
	self, err := r.cfg.Client.Agent().NodeName()
	if err != nil {
		return fmt.Errorf("consul: read agent node name: %w", err)
	}
	f := found{ref: p.Ref}
	if p.Node != self {
		f.node = p.Node
	}
	return r.remove(ctx, f)
}

// isNotFound reports a 404 from Consul.
func isNotFound(err error) bool {
	se := api.StatusError{}
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
