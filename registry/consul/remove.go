package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
)

// serfCheckID is the check every node with a Consul agent carries (structs.SerfCheckID); a node
// registered through the catalog API alone has none.
const serfCheckID = "serfHealth"

// Remove deregisters one instance the backstop or the sweeper found (see remove).
func (r *Registry) Remove(ctx context.Context, reg registry.Registration) error {
	return r.remove(ctx, reg.Ref, reg.Where)
}

// remove deregisters one instance: node is empty for an instance of the agent this registry
// talks to, else the catalog node that holds it. An instance that an agent registered must be
// removed through that agent: the agent's anti-entropy puts back into the catalog whatever the
// catalog alone forgot, since "the agent-local view will always be used" (Consul docs,
// concept/consistency.mdx "Anti-Entropy"; api-docs/catalog.mdx advises the agent endpoints for
// deregistration for that reason). So remove goes through the node's own agent, at the node's
// catalog address and Config.Agents' port, and through the catalog only for nodes without an
// agent (external services), nodes whose agent is known to be down, and agents that cannot be
// reached, the last with a warning: an agent that comes back holding the instance restores it,
// and the sweeper removes it again.
func (r *Registry) remove(ctx context.Context, ref registry.Ref, node string) error {
	if node == "" {
		return deregisterOn(ctx, r.cfg.Client, ref)
	}
	rt, err := r.route(ctx, node)
	switch {
	case err != nil:
		return err
	case rt.gone:
		return nil // the node left the catalog with its instances
	case rt.agent != nil:
		err := deregisterOn(ctx, rt.agent, ref)
		if err == nil || answered(err) {
			return err
		}
		rt.why = "its agent did not answer: " + err.Error()
	}
	if rt.why != "" {
		r.log.WarnContext(ctx, "removing through the catalog, not the owning agent", "service", ref.Service, "id", ref.ID, "catalogNode", node, "why", rt.why)
	}
	dereg := &api.CatalogDeregistration{Node: node, ServiceID: ref.ID}
	if _, err := r.cfg.Client.Catalog().Deregister(dereg, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		// The catalog answers 200 for an entry it does not hold: any error is a failure.
		return fmt.Errorf("consul: deregister %s from the catalog (node %s): %w", ref, node, err)
	}
	return nil
}

// route is how an instance of a catalog node is removed.
type route struct {
	agent *api.Client // nil: through the catalog
	why   string      // why the catalog although the node has an agent
	gone  bool        // the node is no longer in the catalog
}

// route finds the agent that owns a node's instances.
func (r *Registry) route(ctx context.Context, node string) (route, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	self, err := r.cfg.Client.Agent().NodeName()
	if err != nil {
		return route{}, fmt.Errorf("consul: read the agent's node name: %w", err)
	}
	if node == self {
		return route{agent: r.cfg.Client}, nil
	}
	n, _, err := r.cfg.Client.Catalog().Node(node, q)
	if err != nil {
		return route{}, fmt.Errorf("consul: read catalog node %s: %w", node, err)
	}
	if n == nil || n.Node == nil {
		return route{gone: true}, nil
	}
	checks, _, err := r.cfg.Client.Health().Node(node, q)
	if err != nil {
		return route{}, fmt.Errorf("consul: read the checks of node %s: %w", node, err)
	}
	return r.routeOf(n.Node, checks), nil
}

// routeOf decides from a node and its checks which agent, if any, to remove through.
func (r *Registry) routeOf(n *api.Node, checks api.HealthChecks) route {
	i := slices.IndexFunc(checks, func(c *api.HealthCheck) bool { return c.CheckID == serfCheckID })
	switch {
	case i < 0:
		return route{} // registered through the catalog API: no agent restores it
	case checks[i].Status == api.HealthCritical:
		return route{why: "its agent is down (" + serfCheckID + " critical)"}
	case r.cfg.Agents == nil:
		return route{why: "no agent port configured"}
	}
	agent, err := r.cfg.Agents(n.Address)
	if err != nil {
		return route{why: fmt.Sprintf("no client for its agent at %s: %v", n.Address, err)}
	}
	return route{agent: agent}
}

// deregisterOn removes an instance through an agent. The agent answers 404 with "Unknown service
// ID" for an instance it does not hold (agent/acl.go, vetServiceUpdateWithAuthorizer): that is
// success, deregistration being idempotent. Any other 404 is not that answer (a wrong server,
// a proxy whose route is gone, an API path the server lacks) and fails.
func deregisterOn(ctx context.Context, agent *api.Client, ref registry.Ref) error {
	err := agent.Agent().ServiceDeregisterOpts(ref.ID, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	switch {
	case err == nil || unknownService(err):
		return nil
	case errors.As(err, &se) && se.Code == http.StatusNotFound:
		return fmt.Errorf("consul: deregister %s: a 404 that is not Consul's answer for an unknown instance (a wrong server behind the address, or a path it does not serve): %w", ref, err)
	}
	return fmt.Errorf("consul: deregister %s: %w", ref, err)
}

// unknownService reports Consul's own answer for a service ID an agent does not hold.
func unknownService(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound && strings.Contains(se.Body, "Unknown service")
}

// answered reports an error that Consul itself sent (ACL denied, a server error), as opposed
// to an agent that could not be reached or something else answering in its place.
func answered(err error) bool {
	var se api.StatusError
	return errors.As(err, &se) && se.Code != http.StatusNotFound
}
