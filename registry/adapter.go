package registry

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"k8s.io/client-go/rest"

	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// Binary is the program a registry is configured in; some settings belong to one of them only
// (lastcall-prestop drains one pod, lastcall-controller serves every pod).
type Binary int

// The binaries.
const (
	PreStop Binary = iota + 1
	Controller
)

// Adapter is one kind of registry: the package of a new registry exports one, and one line in
// registry/adapters lists it. Both binaries configure and build registries only through it.
type Adapter struct {
	// Name is the registry's short lower-case name, as in --registries, annotations and logs.
	Name string
	// PodService says that pods name their service in this registry with the annotation
	// lastcall.dev/<name>-service, and use the registry by default only when they do.
	// Registries that find a pod by its UID alone (EndpointSlices) apply to every pod.
	PodService bool
	// Auto says when --registries=auto picks the registry, for --help ("when a Consul address
	// is set").
	Auto string
	// Options returns fresh options, their settings bound to them.
	Options func() Options
}

// Options are one registry's settings and its constructor.
type Options interface {
	// Vars lists the settings offered in binary b. Flags and variables are named after the
	// registry (--consul-addr, LASTCALL_CONSUL_ADDR) and mean the same in both binaries.
	Vars(b Binary) []envflag.Var
	// Auto reports whether --registries=auto picks the registry in env.
	Auto(env Env) bool
	// Check reports a setting that cannot work in env as one line naming the flag and the fix.
	Check(env Env) error
	// New builds the registry.
	New(env Env) (Registry, error)
}

// Env is what a binary offers an adapter.
type Env struct {
	Binary Binary
	// Pod is the pod lastcall-prestop drains; zero in the controller, which serves every pod.
	Pod Instance
	// InCluster is true when the Kubernetes API is expected to be reachable.
	InCluster bool
	// Kube is the Kubernetes API once reachable, nil otherwise.
	Kube Kube
	// Log receives the registry's logs.
	Log *slog.Logger
}

// Kube is the Kubernetes API as a binary offers it. A binary may offer more (the controller
// serves EndpointSlices from its cache); an adapter looks for what it can use with a type
// assertion on an interface of its own.
type Kube interface {
	RESTConfig() *rest.Config
}

// Logger is env.Log, or a logger that discards.
func (env Env) Logger() *slog.Logger {
	if env.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return env.Log
}

// Set is a binary's registries: --registries and every adapter's options, from one table.
type Set struct {
	binary   Binary
	table    []Adapter
	options  []Options // by table index
	selected []string  // as given: names, or "auto"
}

// NewSet prepares the options of every adapter in table for binary b.
func NewSet(b Binary, table []Adapter) *Set {
	s := &Set{binary: b, table: table}
	for _, a := range table {
		s.options = append(s.options, a.Options())
	}
	return s
}

// Vars lists --registries and then each adapter's settings for the binary.
func (s *Set) Vars() []envflag.Var {
	var names, autos []string
	for _, a := range s.table {
		names = append(names, a.Name)
		if a.Auto != "" {
			autos = append(autos, a.Name+" "+a.Auto)
		}
	}
	vars := []envflag.Var{{
		Flag: "registries", Env: "LASTCALL_REGISTRIES", Default: "auto",
		Help: fmt.Sprintf("comma-separated registries: %s, or auto (%s)", strings.Join(names, ", "), strings.Join(autos, ", ")),
		Set:  s.setSelected,
	}}
	for _, o := range s.options {
		vars = append(vars, o.Vars(s.binary)...)
	}
	return vars
}

func (s *Set) setSelected(v string) error {
	s.selected = nil
	for _, name := range envflag.Split(v) {
		if name != "auto" && s.adapter(name) < 0 {
			return fmt.Errorf("unknown registry %q; want a comma-separated list of %s, or auto", name, strings.Join(s.Names(), ", "))
		}
		if !slices.Contains(s.selected, name) {
			s.selected = append(s.selected, name)
		}
	}
	return nil
}

// Names lists every registry the table knows, in table order.
func (s *Set) Names() []string {
	names := make([]string, len(s.table))
	for i, a := range s.table {
		names[i] = a.Name
	}
	return names
}

// Adapters is the table the set was made from.
func (s *Set) Adapters() []Adapter { return s.table }

func (s *Set) adapter(name string) int {
	return slices.IndexFunc(s.table, func(a Adapter) bool { return a.Name == name })
}

// Options returns the options of the named registry, nil for an unknown name.
func (s *Set) Options(name string) Options {
	if i := s.adapter(name); i >= 0 {
		return s.options[i]
	}
	return nil
}

// Select resolves "auto" and checks each chosen registry's settings in env. It returns the
// registries' names in table order.
func (s *Set) Select(env Env) ([]string, error) {
	out, errs := s.selectEach(env, false)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// SelectLenient is Select for a caller that must go on: a registry whose settings fail its
// check is left out and reported, the others are returned.
func (s *Set) SelectLenient(env Env) ([]string, []error) {
	return s.selectEach(env, true)
}

func (s *Set) selectEach(env Env, lenient bool) ([]string, []error) {
	var out []string
	var errs []error
	for i, a := range s.table {
		switch {
		case slices.Contains(s.selected, a.Name):
		case slices.Contains(s.selected, "auto") && s.options[i].Auto(env):
		default:
			continue
		}
		if err := s.options[i].Check(env); err != nil {
			errs = append(errs, fmt.Errorf("registry %s: %w", a.Name, err))
			if !lenient {
				return nil, errs
			}
			continue
		}
		out = append(out, a.Name)
	}
	return out, errs
}

// Build constructs the named registries. One that cannot be built is left out and reported;
// the others are returned.
func (s *Set) Build(env Env, names []string) ([]Registry, error) {
	var regs []Registry
	var errs []error
	for _, name := range names {
		o := s.Options(name)
		if o == nil {
			errs = append(errs, fmt.Errorf("registry %s: unknown", name))
			continue
		}
		r, err := o.New(env)
		if err != nil {
			errs = append(errs, fmt.Errorf("registry %s: %w", name, err))
			continue
		}
		regs = append(regs, r)
	}
	return regs, errors.Join(errs...)
}

// KubeOf offers a REST config as Kube.
func KubeOf(rc *rest.Config) Kube { return restKube{rc} }

type restKube struct{ rc *rest.Config }

func (k restKube) RESTConfig() *rest.Config { return k.rc }
