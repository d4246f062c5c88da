// Command loadgen is the e2e's load generator, run as a pod in the cluster and driven by the
// suite through the API server's pod proxy. A run is a set of generators, each a constant rate
// of requests on one path: through a Service URL (kube-proxy), or balanced on the client over
// Consul's passing instances (blocking queries, straight to pod IPs), in one protocol: HTTP/1.1
// (tuned, or with Go's defaults), h2c or gRPC. Every request is recorded with its start,
// latency, outcome and the pod that served it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usage = `Usage: loadgen [flags]

A load generator driven over HTTP. Requests are open loop: a constant rate, whatever the
answers' latency. Control API (JSON):

  POST /start           {"name":"run1","generators":[
                          {"path":"service","url":"http://web.ns.svc.cluster.local/work","rate":100},
                          {"path":"consul","consulAddr":"http://consul.ns.svc:8500","service":"web",
                           "port":8080,"urlPath":"/work","rate":100}]}
                        generator options: method (POST), conns (32), timeout (5s), maxInFlight,
                        idleTimeout (90s), connection ("keep-alive", or "new": a new connection
                        per request, closed after its answer; its records carry "c":"new"),
                        protocol: "http1" (default: HTTP/1.1, the client tuned by conns and
                          idleTimeout), "http1-default" (Go's http.DefaultTransport settings),
                          "h2c" (HTTP/2 with prior knowledge, Go's defaults) or "grpc" (grpc-go's
                          defaults, unary lastcall.e2e.Work/Do; url is a gRPC target such as
                          "web.ns.svc.cluster.local:9090", port the instances' gRPC port);
                          conns and idleTimeout are for http1 only, connection "new" for http1
                          and http1-default, method and urlPath not for grpc; records carry
                          "pr":<protocol> unless http1
                        retry (false): resend what the server did not process (graceful's
                          RetryTransport, grpcgraceful's Retry); records carry "r":true
                        idempotencyKey (false, HTTP only): a unique Idempotency-Key header on
                          every request, which Go's Transport resends like a GET when its
                          kept-alive connection closed first; records carry "k":true
                        202 started, 400 bad field, 409 name running, 502 Consul not answering
  POST /stop?name=run1  stops the run, waits for requests in flight, answers {"records":[...]}
                        (gzipped if accepted); 404 if the name is not running
  GET  /status          runs in progress with their counts so far
  GET  /healthz

Flags:
`

func main() {
	listen := flag.String("listen", ":8090", "address of the control API")
	level := flag.String("log-level", "info", "debug (every failed request), info, warn or error")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usage)
		flag.PrintDefaults()
	}
	flag.Parse()
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level %q: want debug, info, warn or error\n", *level)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: lv}))
	if err := serve(*listen, log); err != nil {
		log.Error("loadgen failed", "err", err)
		os.Exit(1)
	}
}

// serve runs the control API until SIGTERM or an interrupt.
func serve(listen string, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{Addr: listen, Handler: newControl(ctx, log).handler(), ReadHeaderTimeout: 5 * time.Second}
	shut := make(chan error, 1)
	go func() {
		<-ctx.Done()
		// the runs end with ctx; a /stop in progress gets its records out first
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(sctx)
	}()
	log.Info("control API listening", "addr", listen)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control API on %s: %w", listen, err)
	}
	if err := <-shut; err != nil {
		return fmt.Errorf("control API shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
