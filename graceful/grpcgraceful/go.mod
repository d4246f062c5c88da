module github.com/lastcall-dev/lastcall/graceful/grpcgraceful

go 1.26.0

require (
	github.com/lastcall-dev/lastcall/graceful v0.0.0-00010101000000-000000000000
	github.com/onsi/gomega v1.44.0
	golang.org/x/net v0.60.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)

// Local development: graceful lives in this repository. Modules that import grpcgraceful from
// outside it use graceful's tagged version (graceful/vX.Y.Z) instead.
replace github.com/lastcall-dev/lastcall/graceful => ../
