// Package memory is an in-memory registry.Registry for tests of code that drives registries:
// it records calls, propagates on demand, and can fail or hang on purpose.
package memory

import (
	"context"
	"fmt"
	"strconv"
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

// ErrUnavailable is what a registry with Behaviour Fail answers.
var ErrUnavailable = fmt.Errorf("memory registry: unavailable")

// Registry is safe for concurrent use.
type Registry struct {
	name      string
	behaviour Behaviour

	mu           sync.Mutex
	registered   map[string]bool // by pod UID
	deregistered int
	propagated   chan struct{}
}

var _ registry.Registry = (*Registry)(nil)

// New returns an empty registry.
func New(name string, b Behaviour) *Registry {
	return &Registry{name: name, behaviour: b, registered: map[string]bool{}, propagated: make(chan struct{})}
}

// Register adds an instance.
func (r *Registry) Register(in registry.Instance) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.registered[in.UID] = true
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
	if r.behaviour == Fail {
		return registry.Receipt{}, ErrUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deregistered++
	if !r.registered[in.UID] {
		return registry.Receipt{}, nil
	}
	delete(r.registered, in.UID)
	return registry.Receipt{Removed: []registry.Ref{{Service: r.name, ID: in.UID}}, Version: registry.Version(strconv.Itoa(r.deregistered))}, nil
}

// AwaitPropagated implements registry.Registry.
func (r *Registry) AwaitPropagated(ctx context.Context, _ registry.Instance, _ registry.Receipt) error {
	switch r.behaviour {
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

// Visible implements registry.Registry.
func (r *Registry) Visible(_ context.Context, in registry.Instance) (bool, error) {
	if r.behaviour == Fail {
		return false, ErrUnavailable
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registered[in.UID], nil
}
