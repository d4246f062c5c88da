module github.com/lastcall-dev/lastcall/graceful/consulpick

go 1.26.7

require (
	github.com/hashicorp/consul/api v1.34.5
	github.com/lastcall-dev/lastcall/graceful v0.0.0-00010101000000-000000000000
	github.com/lastcall-dev/lastcall/registry/consulwatch v0.0.0-00010101000000-000000000000
)

require (
	github.com/armon/go-metrics v0.4.1 // indirect
	github.com/fatih/color v1.19.0 // indirect
	github.com/go-viper/mapstructure/v2 v2.5.0 // indirect
	github.com/hashicorp/errwrap v1.1.0 // indirect
	github.com/hashicorp/go-cleanhttp v0.5.2 // indirect
	github.com/hashicorp/go-hclog v1.6.3 // indirect
	github.com/hashicorp/go-immutable-radix v1.3.1 // indirect
	github.com/hashicorp/go-metrics v0.6.0 // indirect
	github.com/hashicorp/go-multierror v1.1.1 // indirect
	github.com/hashicorp/go-rootcerts v1.0.2 // indirect
	github.com/hashicorp/golang-lru v1.0.2 // indirect
	github.com/hashicorp/serf v0.10.4 // indirect
	github.com/mattn/go-colorable v0.1.15 // indirect
	github.com/mattn/go-isatty v0.0.22 // indirect
	github.com/mitchellh/go-homedir v1.1.0 // indirect
	golang.org/x/exp v0.0.0-20260218203240-3dfff04db8fa // indirect
	golang.org/x/net v0.59.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
)

// Local development: the modules live in this repository. Modules that import consulpick from
// outside it use the tagged versions (graceful/vX.Y.Z, registry/consulwatch/vX.Y.Z) instead.
replace (
	github.com/lastcall-dev/lastcall/graceful => ../
	github.com/lastcall-dev/lastcall/registry/consulwatch => ../../registry/consulwatch
)
