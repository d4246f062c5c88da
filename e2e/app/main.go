// Command app is lastcall's sample service and the e2e suite's workload: an HTTP server on the
// graceful library whose handlers take a configurable time and count what they processed, and
// that registers itself in Consul (HTTP check on its pod IP) when told where Consul is. Its HTTP
// port speaks HTTP/1.1 and h2c (HTTP/2 with prior knowledge); a second port serves gRPC (the
// unary lastcall.e2e.Work/Do, the twin of "/", and the standard health service) through
// graceful/grpcgraceful.
//
//	app --listen :8080 --grpc-listen :9090 --work 50ms --consul-addr http://$(HOST_IP):8500 --consul-service web
//
// With --plain it is the e2e's control: no graceful library, just what many services do (on
// SIGTERM http.Server.Shutdown and grpc.Server.GracefulStop, then deregister from Consul), so
// the suite can show that the same rollout drops requests without lastcall, in every protocol.
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/e2e/app/workrpc"
	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
)

// options are the command line's.
type options struct {
	listen, grpcListen, admin string
	work, stopTimeout         time.Duration
	signalDrain               time.Duration
	consulAddr, service       string
}

// off disables the gRPC server and the admin endpoint.
const off = "-"

func main() {
	var o options
	flag.StringVar(&o.listen, "listen", ":8080", "address of the app's HTTP server (HTTP/1.1 and h2c)")
	flag.StringVar(&o.grpcListen, "grpc-listen", ":9090", "address of the app's gRPC server (- disables it)")
	flag.StringVar(&o.admin, "admin", graceful.DefaultAdminAddr, "loopback address of the lastcall admin endpoint (- disables it)")
	flag.DurationVar(&o.work, "work", 50*time.Millisecond, "how long each request takes")
	flag.DurationVar(&o.stopTimeout, "stop-timeout", 8*time.Second, "wait for in-flight requests after SIGTERM")
	flag.DurationVar(&o.signalDrain, "signal-drain", 0, "drain this long after a SIGTERM no preStop hook announced (0: stop at once, like a plain server)")
	flag.StringVar(&o.consulAddr, "consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent to register with (empty: no registration)")
	flag.StringVar(&o.service, "consul-service", "web", "Consul service name")
	plain := flag.Bool("plain", false, "no graceful library: on SIGTERM http.Server.Shutdown and grpc.Server.GracefulStop, then deregister from Consul (the e2e's control)")
	flag.Parse()
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil)).With("pod", os.Getenv("POD_NAME"))
	var err error
	if *plain {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err = runPlain(ctx, o, log)
		stop()
	} else {
		err = run(context.Background(), o, log)
	}
	if err != nil {
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

// httpServer serves h on addr, HTTP/1.1 and h2c on the same port: net/http tells them apart by
// the HTTP/2 preface. Callers that speak HTTP/2 without TLS use prior knowledge (Go's
// Protocols.UnencryptedHTTP2, grpc-go, curl --http2-prior-knowledge); the Upgrade: h2c dance is
// not served, net/http has none and graceful could not send its drain GOAWAY on such connections.
func httpServer(addr string, h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second, Protocols: &p}
}

// workService is the gRPC twin of "/": it takes work and counts it with the HTTP requests.
type workService struct {
	work      time.Duration
	processed *atomic.Uint64
	// rollback is the answer to a call whose context ended before its work was done.
	rollback func(ctx context.Context) error
}

func (s *workService) Do(ctx context.Context, _ *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	t := time.NewTimer(s.work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, s.rollback(ctx) // nothing done yet
	}
	n := s.processed.Add(1)
	_ = grpc.SetHeader(ctx, metadata.Pairs(workrpc.ProcessedByKey, os.Getenv("POD_NAME")))
	return wrapperspb.String(strconv.FormatUint(n, 10)), nil
}

// app is the service on graceful.
type app struct {
	srv       *graceful.Server
	grpc      *grpcgraceful.Server // nil with --grpc-listen -
	processed atomic.Uint64
}

func newApp(o options, log *slog.Logger) (*app, error) {
	a := &app{}
	srv, err := graceful.New(graceful.Config{
		Servers:     []*http.Server{httpServer(o.listen, workMux(o.work, &a.processed))},
		AdminAddr:   o.admin,
		StopTimeout: o.stopTimeout,
		SignalDrain: o.signalDrain,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	a.srv = srv
	if o.grpcListen != off {
		// added before Consul's registration: it listens before the registration starts and
		// stops after the deregistration
		g, err := grpcgraceful.New(srv, grpcgraceful.Config{Addr: o.grpcListen, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("--grpc-listen %q: %w", o.grpcListen, err)
		}
		// a call cancelled at the stop deadline rolled back: "not processed", the caller's
		// grpcgraceful.Retry may send it elsewhere
		workrpc.Register(g, &workService{work: o.work, processed: &a.processed, rollback: g.NotProcessed})
		a.grpc = g
	}
	if o.consulAddr != "" {
		if err := srv.Add(consulComponent(o.consulAddr, o.service, o.listen, log)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	a, err := newApp(o, log)
	if err != nil {
		return err
	}
	err = a.srv.Run(ctx)
	log.Info("exit", "processed", a.processed.Load(), "err", err)
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

// plainApp is the control: a bare http.Server whose readiness never fails and a bare
// grpc.Server whose health always answers SERVING.
type plainApp struct {
	http      *http.Server
	httpLn    net.Listener
	grpc      *grpc.Server // nil with --grpc-listen -
	grpcLn    net.Listener
	processed atomic.Uint64
}

// newPlain listens on both ports.
func newPlain(o options) (*plainApp, error) {
	p := &plainApp{}
	mux := workMux(o.work, &p.processed)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("/livez", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	p.http = httpServer(o.listen, mux)
	var err error
	if p.httpLn, err = net.Listen("tcp", o.listen); err != nil {
		return nil, fmt.Errorf("--listen %q: %w", o.listen, err)
	}
	if o.grpcListen == off {
		return p, nil
	}
	if p.grpcLn, err = net.Listen("tcp", o.grpcListen); err != nil {
		_ = p.httpLn.Close()
		return nil, fmt.Errorf("--grpc-listen %q: %w", o.grpcListen, err)
	}
	p.grpc = grpc.NewServer()
	healthpb.RegisterHealthServer(p.grpc, health.NewServer()) // SERVING, as /readyz
	workrpc.Register(p.grpc, &workService{work: o.work, processed: &p.processed,
		rollback: func(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() }})
	return p, nil
}

// runPlain serves until ctx ends (SIGTERM), then shuts both servers down, then deregisters from
// Consul, the order a deferred deregistration gives.
func runPlain(ctx context.Context, o options, log *slog.Logger) error {
	p, err := newPlain(o)
	if err != nil {
		return err
	}
	return p.run(ctx, o, log)
}

// run serves on p's listeners; see runPlain.
func (p *plainApp) run(ctx context.Context, o options, log *slog.Logger) error {
	var reg *graceful.Component
	if o.consulAddr != "" {
		c := consulComponent(o.consulAddr, o.service, o.listen, log)
		if err := c.Start(ctx); err != nil {
			_ = p.httpLn.Close()
			if p.grpcLn != nil {
				_ = p.grpcLn.Close()
			}
			return err
		}
		reg = &c
	}
	errc := make(chan error, 2)
	go func() { errc <- fmt.Errorf("serve HTTP: %w", p.http.Serve(p.httpLn)) }()
	if p.grpc != nil {
		go func() {
			if err := p.grpc.Serve(p.grpcLn); err != nil {
				errc <- fmt.Errorf("serve gRPC: %w", err)
			}
		}()
	}
	log.Info("serving (plain)", "addr", p.httpLn.Addr().String(), "grpc", o.grpcListen)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("signal: shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), o.stopTimeout)
	defer cancel()
	var wg sync.WaitGroup
	if p.grpc != nil {
		wg.Go(func() { stopGRPC(sctx, p.grpc) })
	}
	err := p.http.Shutdown(sctx)
	wg.Wait()
	if reg != nil {
		if err := reg.Stop(sctx); err != nil {
			log.Warn("consul deregistration failed", "err", err)
		}
	}
	log.Info("exit", "processed", p.processed.Load(), "err", err)
	return err
}

// stopGRPC is GracefulStop (GOAWAY, wait for the calls in flight) cut by Stop when ctx ends, as
// grpc-go's documentation advises (grpc/grpc-go#2448).
func stopGRPC(ctx context.Context, s *grpc.Server) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.Stop()
		<-done
	}
}
