package memory

import (
	"slices"
	"strings"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// Adapter makes r an entry of an adapters table, named r.Name(), so a test can configure and
// build it the way the binaries build every registry. It has one setting,
// --<name>-behaviour / LASTCALL_<NAME>_BEHAVIOUR, and --registries=auto never picks it.
func Adapter(r *Registry) registry.Adapter {
	return registry.Adapter{
		Name: r.name, PodService: true,
		Options: func() registry.Options { return &options{r: r} },
	}
}

type options struct {
	r         *Registry
	behaviour string
}

func (o *options) Vars(registry.Binary) []envflag.Var {
	return []envflag.Var{{
		Flag: o.r.name + "-behaviour", Env: "LASTCALL_" + envName(o.r.name) + "_BEHAVIOUR", Default: Immediate.String(),
		Help: "how the in-memory registry answers: immediate, manual, hang or fail",
		Set:  envflag.OneOf(&o.behaviour, behaviours...),
	}}
}

func (o *options) Auto(registry.Env) bool { return false }

func (o *options) Check(registry.Env) error { return nil }

func (o *options) New(registry.Env) (registry.Registry, error) {
	o.r.SetBehaviour(Behaviour(slices.Index(behaviours, o.behaviour)))
	return o.r, nil
}

// envName upper-cases a registry name for a variable name.
func envName(name string) string { return strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
