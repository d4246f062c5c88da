// Command graceful is a runnable example of github.com/lastcall-dev/lastcall/graceful: a service
// with a public API server, an internal server and a background component, and a caller that
// places orders (POST) over several instances through graceful.RetryTransport.
//
// Two instances and a caller; drain one as lastcall-prestop would, then stop it under load:
//
//	go build -o /tmp/orders ./graceful/example
//	/tmp/orders serve -listen 127.0.0.1:8080 -internal - -admin 127.0.0.1:9901 & A=$!
//	/tmp/orders serve -listen 127.0.0.1:8081 -internal - -admin 127.0.0.1:9902 &
//	/tmp/orders call -endpoints 127.0.0.1:8080,127.0.0.1:8081 -n 20000 -c 50 &
//	curl -X POST 127.0.0.1:9901/drain; sleep 1   # the hook: drain, wait for callers to move
//	curl 127.0.0.1:9901/status
//	kill -TERM $A                                 # the kubelet, after the hook returned
//
// Without the hook, a bare kill -TERM drains for -signal-drain before stopping. Either way the
// caller reports "0 failed": the draining instance tells callers to move (Connection: close,
// the Lastcall-Draining hint that RetryTransport heeds), and a request that still reaches it once
// it stops gets the Lastcall-Shutdown marker and is placed on the other instance.
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
			fmt.Fprintln(os.Stderr, "graceful:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New("usage: graceful serve|call [flags] (-h for the flags)")
	}
	switch args[0] {
	case "serve":
		cfg, err := parseServe(args[1:])
		if err != nil {
			return err
		}
		srv, err := newService(cfg, log)
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
