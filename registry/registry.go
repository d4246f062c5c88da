// Package registry is one interface over "where callers find this pod": Consul, Kubernetes
// EndpointSlices, or anything else a caller resolves addresses from. lastcall-prestop uses it to
// take a pod out and wait until callers have seen that; lastcall-controller uses it to tell
// whether a new pod can be found yet.
package registry

import (
	"context"
	"fmt"
	"strings"
)

// Instance identifies one pod as registries know it.
type Instance struct {
	Namespace string
	Pod       string
	UID       string
	IP        string
	Ports     []int32
	// Service is the registry-level service name (Consul service name), when known.
	Service string
	// Labels are the pod's labels, when known: registries that list only the pods something
	// selects (EndpointSlices) read them.
	Labels map[string]string
}

func (in Instance) String() string {
	return fmt.Sprintf("%s/%s (uid %s, ip %s)", in.Namespace, in.Pod, in.UID, in.IP)
}

// Ref names one registration of the pod inside a registry.
type Ref struct {
	// Service groups registrations: a Consul service name, or an EndpointSlice name.
	Service string
	// ID is the registration itself: a Consul service ID, or an endpoint address.
	ID string
}

func (r Ref) String() string { return r.Service + "/" + r.ID }

// Registration is one entry of a registry that names the pod behind it, as the controller's
// backstop and sweeper handle it.
type Registration struct {
	Ref Ref
	// Where is the registry's own note of where the entry lives, handed back to its Remove
	// (Consul: the catalog node of an instance registered without the agent).
	Where string
	// UID, Namespace and Pod name the pod; Namespace and Pod are empty when the entry does not
	// say.
	UID, Namespace, Pod string
}

// Receipt is what Deregister learned, so AwaitPropagated knows what to wait for.
type Receipt struct {
	// Removed lists the registrations that Deregister took away (or, where the registry
	// itself removes them, found still to be removed).
	Removed []Ref
	// Version marks the registry's state that carries the removal (a Consul raft index, a
	// Kubernetes resourceVersion). Only the registry that issued it reads it.
	Version Version
}

// Version is a registry's opaque change marker; empty when the registry has none.
type Version string

// Names lists the Removed refs as strings, for logs.
func (r Receipt) Names() string {
	s := make([]string, len(r.Removed))
	for i, ref := range r.Removed {
		s[i] = ref.String()
	}
	return strings.Join(s, ",")
}

// Registry is one place callers find pods. Registries whose entries stay until someone removes
// them (Consul) also offer, as methods the controller looks for:
//
//	Instances(ctx context.Context, in Instance) ([]Registration, error) // the pod's entries
//	Registrations(ctx context.Context) ([]Registration, error)        // every entry naming a pod
//	Remove(ctx context.Context, r Registration) error                 // remove one entry
//
// With the first and the last, the controller's backstop removes a deleting pod's entries; with
// the last two, its sweeper removes entries of pods that no longer exist.
type Registry interface {
	// Name is a short lower-case name for logs and metrics ("consul", "endpoints").
	Name() string
	// Deregister removes the instance. It is idempotent: removing an absent instance succeeds
	// with an empty Receipt.
	Deregister(ctx context.Context, in Instance) (Receipt, error)
	// AwaitPropagated returns once callers that read the registry can no longer find the
	// instance, or when ctx ends. It watches; it does not poll.
	AwaitPropagated(ctx context.Context, in Instance, r Receipt) error
	// Visible reports whether callers can find the instance: registered, healthy where the
	// registry knows health, and propagated to every replica callers read from.
	Visible(ctx context.Context, in Instance) (bool, error)
}
