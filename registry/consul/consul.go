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
	// Service limits the search to one Consul service when the Instance names none.
	Service string
	// ServiceID, when set, names the instance explicitly.
	ServiceID string
	// MetaKey is the service meta key holding the pod UID; DefaultMetaKey when empty.
	MetaKey string
	// Agents returns a client for the agent of a catalog node, given the node's address, so an
	// instance that agent registered is removed through it; nil removes such instances
	// through the catalog, where the agent's anti-entropy restores them.
	Agents func(nodeAddress string) (*api.Client, error)
	Logger *slog.Logger
}

// Registry implements registry.Registry on Consul.
type Registry struct {
	cfg Config
	log *slog.Logger

	followMu sync.Mutex
	follow   *following // while Follow runs
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
func (r *Registry) Name() string { return Name }

// match reports whether a service instance belongs to the pod. The pod IP identifies only
// instances that carry no pod UID: an IP is reused by later pods, so an instance whose UID meta
// names another pod is never this pod's, whatever its address.
func (r *Registry) match(in registry.Instance, id, addr string, meta map[string]string) bool {
	if r.cfg.ServiceID != "" {
		return id == r.cfg.ServiceID
	}
	if uid := meta[r.cfg.MetaKey]; uid != "" {
		return in.UID != "" && uid == in.UID
	}
	return in.IP != "" && addr == in.IP
}

// Instances lists the pod's instances: first on the local agent (which would re-register what
// the catalog alone forgot), then in the catalog for instances registered without an agent, whose
// Where is their catalog node.
func (r *Registry) Instances(ctx context.Context, in registry.Instance) ([]registry.Registration, error) {
	if in.Service == "" {
		in.Service = r.cfg.Service
	}
	var out []registry.Registration
	seen := map[string]bool{}
	q := (&api.QueryOptions{}).WithContext(ctx)
	agentSvcs, agentErr := r.cfg.Client.Agent().ServicesWithFilterOpts("", q)
	for _, s := range agentSvcs {
		if (in.Service == "" || s.Service == in.Service) && r.match(in, s.ID, s.Address, s.Meta) {
			out = append(out, r.registration(s.Service, s.ID, "", s.Meta))
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
		names = sortedKeys(all)
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
			out = append(out, r.registration(e.ServiceName, e.ServiceID, e.Node, e.ServiceMeta))
			seen[e.ServiceID] = true
		}
	}
	return out, nil
}

func (r *Registry) registration(service, id, node string, meta map[string]string) registry.Registration {
	return registry.Registration{
		Ref: registry.Ref{Service: service, ID: id}, Where: node,
		UID: meta[r.cfg.MetaKey], Namespace: meta[MetaPodNamespace], Pod: meta[MetaPodName],
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Deregister implements registry.Registry. The receipt's Version is the raft index read back
// with a consistent query after the removal, so it is at least the index that carries it.
func (r *Registry) Deregister(ctx context.Context, in registry.Instance) (registry.Receipt, error) {
	instances, err := r.Instances(ctx, in)
	if err != nil {
		return registry.Receipt{}, err
	}
	var rc registry.Receipt
	var index uint64
	for _, reg := range instances {
		if err := r.remove(ctx, reg.Ref, reg.Where); err != nil {
			return rc, err
		}
		rc.Removed = append(rc.Removed, reg.Ref)
		r.log.InfoContext(ctx, "deregistered", "service", reg.Ref.Service, "id", reg.Ref.ID, "catalogNode", reg.Where)
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
		in.Service = r.cfg.Service
	}
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
