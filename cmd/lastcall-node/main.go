package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/iptables"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/kubeproxy"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/nftables"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(runUntilSignal())
}

// runUntilSignal runs the command until SIGTERM or SIGINT.
func runUntilSignal() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
}

// run is the whole command. ready, when set, receives the address served once listening.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready chan<- string) int {
	cfg, err := parse(args, getenv, stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "lastcall-node: %v\n", err)
		return 2
	case cfg.showVersion:
		fmt.Fprintf(stdout, "lastcall-node %s\n", version)
		return 0
	}
	log := newLogger(cfg, stderr)
	token, err := cfg.token()
	if err != nil {
		fmt.Fprintf(stderr, "lastcall-node: %v\n", err)
		return 2
	}
	cfg.handler.Token = token

	var kp *kubeproxy.Client
	if cfg.kubeProxyURL != "" {
		kp = &kubeproxy.Client{URL: cfg.kubeProxyURL, HTTP: &http.Client{Timeout: 5 * time.Second}}
		cfg.agent.Syncs = kp
	}
	probe, err := kubeproxy.NewProbe(cfg.mode, kp, map[string]kubeproxy.ModeProbe{
		kubeproxy.ModeIPTables: iptables.NewTargeted(iptables.NewSaver(), cfg.maxChainReads),
		kubeproxy.ModeNFTables: nftables.NewTargeted(nftables.Lister{Path: cfg.nft}, nftables.Netlink{}, cfg.maxChainReads),
	})
	if err != nil {
		fmt.Fprintf(stderr, "lastcall-node: --mode / LASTCALL_MODE: %v\n", err)
		return 2
	}
	cfg.agent.Probe = probe
	cfg.agent.Log = log
	a := agent.New(cfg.agent)

	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		log.Error("cannot listen", "listen", cfg.listen, "err", err)
		return 1
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler: a.Handler(cfg.handler),
		// Stopping ends the open waits at once (503): their callers fall back to their own
		// bounded wait rather than wait for this agent's restart.
		BaseContext:       func(net.Listener) context.Context { return runCtx },
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      cfg.window(),
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("lastcall-node starting", "version", version, "listen", ln.Addr().String(), "node", cfg.node, "mode", cfg.mode,
		"kubeProxyMetrics", cfg.kubeProxyURL, "auth", token != "")
	if cfg.kubeProxyURL == "" {
		log.Warn("no kube-proxy metrics address: re-reading the ruleset every --fallback-interval while waits are open", "interval", cfg.agent.Fallback)
	}

	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		_ = a.Run(runCtx)
	}()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	if ready != nil {
		ready <- ln.Addr().String()
	}

	code := 0
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case err := <-serveErr:
		log.Error("serving stopped", "err", err)
		code = 1
	}
	cancel()
	shutdownCtx, stopShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close()
	}
	<-loopDone
	return code
}

func newLogger(cfg config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.logLevel, ReplaceAttr: readableDurations}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.logFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("component", "lastcall-node")
}

// readableDurations logs durations as "1.234s" rather than integer nanoseconds.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().Round(time.Millisecond).String())
	}
	return a
}
