// Command grpcgraceful is a runnable example of github.com/lastcall-dev/lastcall/graceful/grpcgraceful:
// an orders service over gRPC on a graceful.Server, and a caller that places orders over several
// instances through grpcgraceful.Retry, with round_robin over their addresses.
//
// Two instances and a caller; drain one as lastcall-prestop would, then stop it under load:
//
//	go build -o /tmp/grpc-orders ./example   # in graceful/grpcgraceful
//	/tmp/grpc-orders serve -listen 127.0.0.1:50051 -admin 127.0.0.1:9901 & A=$!
//	/tmp/grpc-orders serve -listen 127.0.0.1:50052 -admin 127.0.0.1:9902 &
//	/tmp/grpc-orders call -endpoints 127.0.0.1:50051,127.0.0.1:50052 -n 20000 -c 50 &
//	curl -X POST 127.0.0.1:9901/drain; sleep 1   # the hook: health NOT_SERVING, GOAWAY
//	curl 127.0.0.1:9901/status                   # gRPC calls count here
//	kill -TERM $A                                 # the kubelet, after the hook returned
//
// The caller reports "0 failed": the draining instance sends GOAWAY so that calls move to new
// connections, and a call that still reaches it once it stops is answered UNAVAILABLE with the
// lastcall-shutdown trailer, which Retry places on the other instance.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(context.Background(), os.Args[1:], os.Stdout, log); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "grpcgraceful:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New("usage: grpcgraceful serve|call [flags] (-h for the flags)")
	}
	switch args[0] {
	case "serve":
		cfg, err := parseServe(args[1:])
		if err != nil {
			return err
		}
		srv, _, err := newService(cfg, log)
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	case "call":
		cfg, err := parseCall(args[1:])
		if err != nil {
			return err
		}
		sum, err := call(ctx, cfg)
		fmt.Fprintln(stdout, sum)
		return err
	}
	return fmt.Errorf("unknown command %q: want serve or call", args[0])
}
