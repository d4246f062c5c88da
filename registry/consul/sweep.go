package consul

import (
	"context"
	"fmt"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
)

// Meta keys an app sets on its registration so a sweeper can find the pod behind it; the pod UID
// key is Config.MetaKey (DefaultMetaKey by default).
const (
	MetaPodName      = "pod-name"
	MetaPodNamespace = "pod-namespace"
)

// Registrations lists every catalog instance whose meta carries a pod UID.
func (r *Registry) Registrations(ctx context.Context) ([]registry.Registration, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	names, _, err := r.cfg.Client.Catalog().Services(q)
	if err != nil {
		return nil, fmt.Errorf("consul: list catalog services: %w", err)
	}
	var out []registry.Registration
	for _, name := range sortedKeys(names) {
		entries, _, err := r.cfg.Client.Catalog().Service(name, "", q)
		if err != nil {
			return nil, fmt.Errorf("consul: read catalog service %q: %w", name, err)
		}
		for _, e := range entries {
			if e.ServiceMeta[r.cfg.MetaKey] != "" {
				out = append(out, r.registration(e.ServiceName, e.ServiceID, e.Node, e.ServiceMeta))
			}
		}
	}
	return out, nil
}
