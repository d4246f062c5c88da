// Package adapters is the table of every registry lastcall knows. Both binaries configure and
// build their registries from it; a new registry is one package that exports an Adapter and one
// line here.
package adapters

import (
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

// All lists the registries in the order --registries=auto and --help list them.
func All() []registry.Adapter {
	return []registry.Adapter{
		endpoints.Adapter(),
		consul.Adapter(),
	}
}
