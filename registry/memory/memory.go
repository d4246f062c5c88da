// Package memory is an in-memory registry.Registry for tests of code that drives registries:
// it records calls, propagates on demand, and can fail or hang on purpose. It has an adapter
// like any other registry, so tests can take it through the binaries' whole path (the adapters
// table, flags and env, the constructor, the drain or the controller).
package memory

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/lastcall-dev/lastcall/registry"
)

// Behaviour selects how the registry answers.
type Behaviour int

const (
	// Immediate propagates as soon as Deregister returns.
	Immediate Behaviour = iota
	// Manual propagates when the test calls Propagate.
	Manual
	// Hang never propagates: AwaitPropagated blocks until its context ends.
	Hang
	// Fail fails every call with ErrUnavailable.
	Fail
)

// behaviours are the Behaviour names, as the adapter's setting takes them.
var behaviours = []string{"immediate", "manual", "hang", "fail"}

func (b Behaviour) String() string { return behaviours[b] }

// ErrUnavailable is what a registry with Behaviour Fail answers.
var ErrUnavailable = errors.New("memory registry: unavailable")

// Registry is safe for concurrent use.
type Registry struct {
	name string

	mu           sync.Mutex
	behaviour    Behaviour
	registered   map[string]registry.Instance // by pod UID
	deregistered int
	propagated   chan struct{}
}

var _ registry.Registry = (*Registry)(nil)

// New returns an empty registry.
func New(name string, b Behaviour) *Registry {
	return &Registry{name: name, behaviour: b, registered: map[string]registry.Instance{}, propagated: make(chan struct{})}
}

// SetBehaviour changes how the registry answers from now on.
func (r *Registry) SetBehaviour(b Behaviour) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.behaviour = b
}

func (r *Registry) current() Behaviour {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.behaviour
}

// Register adds an instance; its Service, when set, is what Visible asks for.
func (r *Registry) Register(in registry.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registered[in.UID] = in
}

// Registered reports whether the pod with this UID is registered.
func (r *Registry) Registered(uid string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.registered[uid]
	return ok
}

// Propagate releases AwaitPropagated for a Manual registry.
func (r *Registry) Propagate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	select {
	case <-r.propagated:
	default:
		close(r.propagated)
	}
}

// Deregistrations counts Deregister calls that reached the registry.
func (r *Registry) Deregistrations() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deregistered
}

// Name implements registry.Registry.
func (r *Registry) Name() string { return r.name }

// Deregister implements registry.Registry.
func (r *Registry) Deregister(_ context.Context, in registry.Instance) (registry.Receipt, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behaviour == Fail {
		return registry.Receipt{}, ErrUnavailable
	}
	r.deregistered++
	if _, ok := r.registered[in.UID]; !ok {
		return registry.Receipt{}, nil
	}
	delete(r.registered, in.UID)
	return registry.Receipt{Removed: []registry.Ref{r.ref(in)}, Version: registry.Version(strconv.Itoa(r.deregistered))}, nil
}

func (r *Registry) ref(in registry.Instance) registry.Ref {
	return registry.Ref{Service: cmp.Or(in.Service, r.name), ID: in.UID}
}

// AwaitPropagated implements registry.Registry.
func (r *Registry) AwaitPropagated(ctx context.Context, _ registry.Instance, _ registry.Receipt) error {
	switch r.current() {
	case Immediate:
		return nil
	case Fail:
		return ErrUnavailable
	case Hang:
		<-ctx.Done()
		return ctx.Err()
	}
	select {
	case <-r.propagated:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Visible implements registry.Registry: the pod is registered, under in.Service when that is set.
func (r *Registry) Visible(_ context.Context, in registry.Instance) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behaviour == Fail {
		return false, ErrUnavailable
	}
	got, ok := r.registered[in.UID]
	return ok && (in.Service == "" || got.Service == in.Service), nil
}

// Instances lists the pod's registration, for the controller's backstop.
func (r *Registry) Instances(ctx context.Context, in registry.Instance) ([]registry.Registration, error) {
	all, err := r.Registrations(ctx)
	return slices.DeleteFunc(all, func(reg registry.Registration) bool { return reg.UID != in.UID }), err
}

// Registrations lists every registration, for the controller's sweeper.
func (r *Registry) Registrations(context.Context) ([]registry.Registration, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behaviour == Fail {
		return nil, ErrUnavailable
	}
	out := make([]registry.Registration, 0, len(r.registered))
	for _, in := range r.registered {
		out = append(out, registry.Registration{Ref: r.ref(in), UID: in.UID, Namespace: in.Namespace, Pod: in.Pod})
	}
	slices.SortFunc(out, func(a, b registry.Registration) int { return strings.Compare(a.UID, b.UID) })
	return out, nil
}

// Remove deletes one registration, for the controller's backstop and sweeper; an absent one is
// already removed.
func (r *Registry) Remove(_ context.Context, reg registry.Registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.behaviour == Fail {
		return ErrUnavailable
	}
	delete(r.registered, reg.Ref.ID)
	return nil
}
