// Package consul is the registry.Registry for HashiCorp Consul. It finds a pod's service
// instances on its agent or in the catalog, deregisters them, and confirms with blocking queries
// that every server callers read from has applied the removal.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

// DefaultMetaKey is the service meta key that carries the pod UID.
const DefaultMetaKey = "pod-uid"

// Config selects the Consul endpoints and how instances are matched.
type Config struct {
	// Client talks to the agent the pod's instances were registered with.
	Client *api.Client
	// Servers are the replicas callers read from (with stale reads, any server answers from
	// its own state). Empty means Client only.
	Servers []*api.Client
	// ServiceID, when set, names the instance explicitly.
	ServiceID string
	// MetaKey is the service meta key holding the pod UID; DefaultMetaKey when empty.
	MetaKey string
	Logger  *slog.Logger
}

// Registry implements registry.Registry on Consul.
type Registry struct {
	cfg Config
	log *slog.Logger
}

var _ registry.Registry = (*Registry)(nil)

// New checks cfg and returns a Registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Client == nil {
		return nil, errors.New("consul: Config.Client is nil")
	}
	if len(cfg.Servers) == 0 {
		cfg.Servers = []*api.Client{cfg.Client}
	}
	if cfg.MetaKey == "" {
		cfg.MetaKey = DefaultMetaKey
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{cfg: cfg, log: cfg.Logger.With("registry", "consul")}, nil
}

// Name implements registry.Registry.
func (r *Registry) Name() string { return "consul" }

// match reports whether a service instance belongs to the pod.
func (r *Registry) match(in registry.Instance, id, addr string, meta map[string]string) bool {
	switch {
	case r.cfg.ServiceID != "":
		return id == r.cfg.ServiceID
	case in.UID != "" && meta[r.cfg.MetaKey] == in.UID:
		return true
	default:
		return in.IP != "" && addr == in.IP
	}
}

// found is one registration of the pod and how to remove it.
type found struct {
	ref  registry.Ref
	node string // set when the instance lives only in the catalog
}

// find lists the pod's instances: first on the local agent (which would re-register what the
// catalog alone forgot), then in the catalog for instances registered without an agent.
func (r *Registry) find(ctx context.Context, in registry.Instance) ([]found, error) {
	var out []found
	seen := map[string]bool{}
	q := (&api.QueryOptions{}).WithContext(ctx)
	agentSvcs, agentErr := r.cfg.Client.Agent().ServicesWithFilterOpts("", q)
	for _, s := range agentSvcs {
		if (in.Service == "" || s.Service == in.Service) && r.match(in, s.ID, s.Address, s.Meta) {
			out = append(out, found{ref: registry.Ref{Service: s.Service, ID: s.ID}})
			seen[s.ID] = true
		}
	}
	if agentErr != nil {
		r.log.WarnContext(ctx, "agent services unreadable, using the catalog only", "err", agentErr)
	}

	names := []string{in.Service}
	if in.Service == "" {
		if len(out) > 0 {
			return out, nil
		}
		all, _, err := r.cfg.Client.Catalog().Services(q)
		if err != nil {
			return nil, errors.Join(agentErr, fmt.Errorf("consul: list catalog services: %w", err))
		}
		names = names[:0]
		for name := range all {
			names = append(names, name)
		}
		slices.Sort(names)
	}
	for _, name := range names {
		entries, _, err := r.cfg.Client.Catalog().Service(name, "", q)
		if err != nil {
			return nil, errors.Join(agentErr, fmt.Errorf("consul: read catalog service %q: %w", name, err))
		}
		for _, e := range entries {
			if seen[e.ServiceID] || !r.match(in, e.ServiceID, e.ServiceAddress, e.ServiceMeta) {
				continue
			}
			out = append(out, found{ref: registry.Ref{Service: e.ServiceName, ID: e.ServiceID}, node: e.Node})
			seen[e.ServiceID] = true
		}
	}
	return out, nil
}

// Deregister implements registry.Registry. The receipt's Version is the raft index read back
// with a consistent query after the removal, so it is at least the index that carries it.
func (r *Registry) Deregister(ctx context.Context, in registry.Instance) (registry.Receipt, error) {
	instances, err := r.find(ctx, in)
	if err != nil {
		return registry.Receipt{}, err
	}
	var rc registry.Receipt
	var index uint64
	for _, f := range instances {
		if err := r.remove(ctx, f); err != nil {
			return rc, err
		}
		rc.Removed = append(rc.Removed, f.ref)
		r.log.InfoContext(ctx, "deregistered", "service", f.ref.Service, "id", f.ref.ID, "catalogNode", f.node)
	}
	for _, name := range serviceNames(rc.Removed) {
		q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
		_, meta, err := r.cfg.Client.Health().Service(name, "", true, q)
		if err != nil {
			return rc, fmt.Errorf("consul: read index after deregistering %q: %w", name, err)
		}
		index = max(index, meta.LastIndex)
	}
	if index > 0 {
		rc.Version = Version(index)
	}
	return rc, nil
}

func (r *Registry) remove(ctx context.Context, f found) error {
	var err error
	if f.node == "" {
		err = r.cfg.Client.Agent().ServiceDeregisterOpts(f.ref.ID, (&api.QueryOptions{}).WithContext(ctx))
	} else {
		dereg := &api.CatalogDeregistration{Node: f.node, ServiceID: f.ref.ID}
		_, err = r.cfg.Client.Catalog().Deregister(dereg, (&api.WriteOptions{}).WithContext(ctx))
	}
	if isNotFound(err) {
		return nil // already gone: deregistration is idempotent
	}
	if err != nil {
		return fmt.Errorf("consul: deregister %s: %w", f.ref, err)
	}
	return nil
}

// AwaitPropagated implements registry.Registry: on every server, a chain of blocking stale
// queries on health/service?passing returns once that server's state has reached the receipt's
// index and no longer lists any removed instance.
func (r *Registry) AwaitPropagated(ctx context.Context, _ registry.Instance, rc registry.Receipt) error {
	want, err := parseIndex(rc.Version)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, name := range serviceNames(rc.Removed) {
		for i, srv := range r.cfg.Servers {
			wg.Go(func() {
				if err := r.awaitOn(ctx, srv, name, want, rc.Removed); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("consul server %d, service %q: %w", i, name, err))
					mu.Unlock()
					cancel() // one server that cannot confirm decides the outcome
				}
			})
		}
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *Registry) awaitOn(ctx context.Context, srv *api.Client, name string, want uint64, removed []registry.Ref) error {
	return consulwatch.Watch(ctx, consulwatch.Config{
		Options: api.QueryOptions{AllowStale: true},
		// Confirming, not following: a server that cannot answer fails the confirmation, and the
		// helper falls back to its bounded wait.
		OnError: func(err error, _ time.Duration) error { return fmt.Errorf("blocking query: %w", err) },
	}, consulwatch.Passing(srv.Health(), name), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
		return meta.LastIndex >= want && !listsAny(entries, removed)
	})
}

// Visible implements registry.Registry: every server lists the instance as passing.
func (r *Registry) Visible(ctx context.Context, in registry.Instance) (bool, error) {
	if in.Service == "" {
		return false, errors.New("consul: Visible needs the Consul service name (annotation lastcall.dev/consul-service)")
	}
	for i, srv := range r.cfg.Servers {
		q := (&api.QueryOptions{AllowStale: true}).WithContext(ctx)
		entries, _, err := srv.Health().Service(in.Service, "", true, q)
		if err != nil {
			return false, fmt.Errorf("consul server %d: read service %q: %w", i, in.Service, err)
		}
		if !slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool {
			return r.match(in, e.Service.ID, e.Service.Address, e.Service.Meta)
		}) {
			return false, nil
		}
	}
	return true, nil
}

// parseIndex reads a receipt's version back as the raft index Deregister wrote into it.
func parseIndex(v registry.Version) (uint64, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("consul: receipt version %q is not a raft index: %w", v, err)
	}
	return n, nil
}

// Version is the receipt version of a raft index, for callers that read the index themselves.
func Version(index uint64) registry.Version {
	return registry.Version(strconv.FormatUint(index, 10))
}

func listsAny(entries []*api.ServiceEntry, refs []registry.Ref) bool {
	for _, e := range entries {
		for _, ref := range refs {
			if e.Service.Service == ref.Service && e.Service.ID == ref.ID {
				return true
			}
		}
	}
	return false
}

func serviceNames(refs []registry.Ref) []string {
	var names []string
	for _, ref := range refs {
		if !slices.Contains(names, ref.Service) {
			names = append(names, ref.Service)
		}
	}
	return names
}
