// Command app is lastcall's sample service and the e2e suite's workload: an HTTP server on the
// graceful library whose handlers take a configurable time and count what they processed, and
// that registers itself in Consul (HTTP check on its pod IP) when told where Consul is.
//
//	app --listen :8080 --work 50ms --consul-addr http://$(HOST_IP):8500 --consul-service web
//
// With --plain it is the e2e's control: no graceful library, just what many services do (on
// SIGTERM http.Server.Shutdown, then deregister from Consul), so the suite can show that the
// same rollout drops requests without lastcall.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/graceful"
)

func main() {
	listen := flag.String("listen", ":8080", "address of the app's HTTP server")
	admin := flag.String("admin", graceful.DefaultAdminAddr, "loopback address of the lastcall admin endpoint (- disables it)")
	work := flag.Duration("work", 50*time.Millisecond, "how long each request takes")
	stopTimeout := flag.Duration("stop-timeout", 8*time.Second, "wait for in-flight requests after SIGTERM")
	signalDrain := flag.Duration("signal-drain", 0, "drain this long after a SIGTERM no preStop hook announced (0: stop at once, like a plain server)")
	consulAddr := flag.String("consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent to register with (empty: no registration)")
	service := flag.String("consul-service", "web", "Consul service name")
	plain := flag.Bool("plain", false, "no graceful library: on SIGTERM http.Server.Shutdown, then deregister from Consul (the e2e's control)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("pod", os.Getenv("POD_NAME"))
	runApp := run
	if *plain {
		runApp = func(listen, _ string, work, stopTimeout, _ time.Duration, consulAddr, service string, log *slog.Logger) error {
			return runPlain(listen, work, stopTimeout, consulAddr, service, log)
		}
	}
	if err := runApp(*listen, *admin, *work, *stopTimeout, *signalDrain, *consulAddr, *service, log); err != nil {
		log.Error("app failed", "err", err)
		os.Exit(1)
	}
}

// workMux serves "/" (takes work, counts it) and "/processed".
func workMux(work time.Duration, processed *atomic.Uint64) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(work):
		case <-r.Context().Done():
			http.Error(w, "cancelled", http.StatusServiceUnavailable) // rolled back: nothing done
			return
		}
		n := processed.Add(1)
		w.Header().Set("X-Processed-By", os.Getenv("POD_NAME"))
		fmt.Fprintf(w, "%d\n", n)
	})
	mux.HandleFunc("/processed", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]uint64{"processed": processed.Load()})
	})
	return mux
}

func run(listen, admin string, work, stopTimeout, signalDrain time.Duration, consulAddr, service string, log *slog.Logger) error {
	var processed atomic.Uint64
	mux := workMux(work, &processed)
	srv, err := graceful.New(graceful.Config{
		Servers:     []*http.Server{{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}},
		AdminAddr:   admin,
		StopTimeout: stopTimeout,
		SignalDrain: signalDrain,
		Logger:      log,
	})
	if err != nil {
		return err
	}
	if consulAddr != "" {
		if err := srv.Add(consulComponent(consulAddr, service, listen, log)); err != nil {
			return err
		}
	}
	err = srv.Run(context.Background())
	log.Info("exit", "processed", processed.Load(), "err", err)
	return err
}

// consulComponent registers the pod on start, with its pod UID, name and namespace in the meta
// (what lastcall-prestop and the controller's sweeper match on), and deregisters on stop.
func consulComponent(addr, service, listen string, log *slog.Logger) graceful.Component {
	id := service + "-" + os.Getenv("POD_NAME")
	var client *api.Client
	return graceful.Component{
		Name: "consul-registration",
		Start: func(context.Context) error {
			cfg := api.DefaultConfig()
			cfg.Address = addr
			var err error
			if client, err = api.NewClient(cfg); err != nil {
				return err
			}
			_, portStr, err := net.SplitHostPort(listen)
			if err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			}
			port, _ := strconv.Atoi(portStr)
			ip := os.Getenv("POD_IP")
			reg := &api.AgentServiceRegistration{
				ID: id, Name: service, Address: ip, Port: port,
				Meta: map[string]string{"pod-uid": os.Getenv("POD_UID"), "pod-name": os.Getenv("POD_NAME"), "pod-namespace": os.Getenv("POD_NAMESPACE")},
				Check: &api.AgentServiceCheck{HTTP: fmt.Sprintf("http://%s/readyz", net.JoinHostPort(ip, portStr)),
					Interval: "1s", Timeout: "1s", DeregisterCriticalServiceAfter: "1m"},
			}
			if err := client.Agent().ServiceRegister(reg); err != nil {
				return fmt.Errorf("register in consul: %w", err)
			}
			log.Info("registered in consul", "id", id, "service", service)
			return nil
		},
		Stop: func(ctx context.Context) error {
			err := client.Agent().ServiceDeregisterOpts(id, (&api.QueryOptions{}).WithContext(ctx))
			// lastcall-prestop (or the controller's backstop) usually deregistered it already
			var se api.StatusError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				return nil
			}
			return err
		},
		Budget: 2 * time.Second,
	}
}

// runPlain is the control: a bare http.Server whose readiness never fails; on SIGTERM it shuts
// down, then deregisters from Consul, the order a deferred deregistration gives.
func runPlain(listen string, work, stopTimeout time.Duration, consulAddr, service string, log *slog.Logger) error {
	var processed atomic.Uint64
	mux := workMux(work, &processed)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Addr: listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var reg *graceful.Component
	if consulAddr != "" {
		c := consulComponent(consulAddr, service, listen, log)
		if err := c.Start(ctx); err != nil {
			return err
		}
		reg = &c
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("serving (plain)", "addr", listen)
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("signal: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if reg != nil {
		if err := reg.Stop(sctx); err != nil {
			log.Warn("consul deregistration failed", "err", err)
		}
	}
	log.Info("exit", "processed", processed.Load(), "err", err)
	return err
}
