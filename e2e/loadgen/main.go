// Command loadgen is the e2e's load generator, run as a pod in the cluster and driven by the
// suite through the API server's pod proxy. Each run is a set of generators, each a constant
// rate of requests on one path: through a Service URL (kube-proxy), or balanced on the client
// over Consul's passing instances (blocking queries, straight to pod IPs). Every request is
// recorded with its time and outcome.
//
//	POST /start          {"name":"r1","generators":[{"path":"service","url":"http://web/","rate":100}, ...]}
//	POST /stop?name=r1   stops the run, waits for requests in flight, answers {"records":[...]}
//	GET  /status         runs in progress: requests sent and failed so far per generator
//	GET  /healthz
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

func main() {
	listen := flag.String("listen", ":8090", "address of the control API")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: loadgen [flags]\n\nA load generator driven over HTTP (POST /start, POST /stop?name=, GET /status).\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "--log-level %q: want debug, info, warn or error\n", *level)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: lv}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	srv := &http.Server{Addr: *listen, Handler: newControl(ctx, log), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("control API listening", "addr", *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("control API failed", "err", err)
		stop()
		os.Exit(1) //nolint:gocritic // stop() ran above
	}
}

// control is the HTTP API over the runs in progress.
type control struct {
	base context.Context
	log  *slog.Logger
	mu   sync.Mutex
	runs map[string]*run
}

type run struct {
	cancel context.CancelFunc
	gens   []*generator
	done   chan struct{}
}

func newControl(base context.Context, log *slog.Logger) http.Handler {
	c := &control{base: base, log: log, runs: map[string]*run{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", c.start)
	mux.HandleFunc("POST /stop", c.stop)
	mux.HandleFunc("GET /status", c.status)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	return mux
}

func (c *control) start(w http.ResponseWriter, r *http.Request) {
	name, cfgs, err := decodeConfigs(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.runs[name]; ok {
		http.Error(w, fmt.Sprintf("name: run %q is in progress; stop it first", name), http.StatusConflict)
		return
	}
	ctx, cancel := context.WithCancel(c.base)
	ru := &run{cancel: cancel, done: make(chan struct{})}
	for _, cfg := range cfgs {
		var t targets = fixedTarget(cfg.URL)
		if cfg.Path == report.PathConsul {
			ct, err := watchConsul(ctx, cfg, c.log)
			if err != nil {
				cancel()
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			// start sending once the instance list is known, as a client would
			select {
			case <-ct.ready:
			case <-time.After(10 * time.Second):
				cancel()
				http.Error(w, fmt.Sprintf("generators: no answer from Consul at %s within 10 s", cfg.ConsulAddr), http.StatusBadGateway)
				return
			}
			t = ct
		}
		ru.gens = append(ru.gens, newGenerator(cfg, t, c.log.With("run", name, "path", cfg.Path)))
	}
	var wg sync.WaitGroup
	for _, g := range ru.gens {
		wg.Add(1)
		go func() { defer wg.Done(); g.run(ctx) }()
	}
	go func() { wg.Wait(); close(ru.done) }()
	c.runs[name] = ru
	c.log.Info("run started", "run", name, "generators", len(cfgs))
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
}

func (c *control) stop(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	c.mu.Lock()
	ru, ok := c.runs[name]
	delete(c.runs, name)
	c.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("name: no run %q in progress", name), http.StatusNotFound)
		return
	}
	ru.cancel()
	<-ru.done
	var recs []report.Record
	for _, g := range ru.gens {
		recs = append(recs, g.take()...)
	}
	c.log.Info("run stopped", "run", name, "records", len(recs))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"records": recs})
}

func (c *control) status(w http.ResponseWriter, _ *http.Request) {
	type genStatus struct {
		Path   report.Path `json:"path"`
		Sent   int64       `json:"sent"`
		Failed int64       `json:"failed"`
	}
	out := map[string][]genStatus{}
	c.mu.Lock()
	for name, ru := range c.runs {
		for _, g := range ru.gens {
			out[name] = append(out[name], genStatus{g.cfg.Path, g.sent.Load(), g.failed.Load()})
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
