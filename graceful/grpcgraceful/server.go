package grpcgraceful

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lastcall-dev/lastcall/graceful"
)

// Defaults for the Config fields left at zero.
const (
	DefaultAddr   = ":50051"
	DefaultName   = "grpc"
	DefaultBudget = 2 * time.Second
)

// goAwayWait bounds how long a "not processed" answer waits for its connection's GOAWAY to be
// written: long enough for a busy scheduler, short against a stop budget.
const goAwayWait = time.Second

// Config configures a Server.
type Config struct {
	// Addr is where to listen (DefaultAddr when empty), unless Listener is given. The Server
	// owns Listener: it is closed at the stop.
	Addr     string
	Listener net.Listener
	// Options apply to every grpc.Server behind this Server: credentials, limits, keepalive, the
	// app's interceptors. Give interceptors with grpc.ChainUnaryInterceptor and
	// grpc.ChainStreamInterceptor, which run inside the accounting ones; grpc.UnaryInterceptor
	// and grpc.StreamInterceptor would run outside them, before a call is counted.
	Options []grpc.ServerOption
	// Name is the graceful.Component's name in the logs; DefaultName when empty.
	Name string
	// Budget bounds the final GracefulStop, which waits for the last answers to be written and
	// the connections to close (the calls in flight were awaited before, with the HTTP
	// requests); then Stop closes what is left. DefaultBudget when zero.
	Budget time.Duration
	Logger *slog.Logger // slog.Default() when nil
}

// Server serves gRPC under a graceful.Server. It is a grpc.ServiceRegistrar: register the
// services on it before the graceful.Server runs.
type Server struct {
	g      *graceful.Server
	cfg    Config
	log    *slog.Logger
	health *health.Server

	mu       sync.Mutex
	started  bool
	closed   bool // the stop began: no new generation, connections are closed
	services []service
	cur      *generation
	gens     []*generation // every generation not yet stopped, cur included
	ln       net.Listener

	conns sync.Map // remote address → *conn, for the interceptors to find a call's connection
	// closing ends when the stop begins: health watches end with it.
	closing context.Context
	close   context.CancelFunc
}

type service struct {
	desc *grpc.ServiceDesc
	impl any
}

// New returns a Server that g runs as a graceful.Component: it starts listening before g's HTTP
// servers and stops after them. It registers the standard health service.
func New(g *graceful.Server, cfg Config) (*Server, error) {
	if g == nil {
		return nil, errors.New("grpcgraceful: the graceful.Server is nil: create it with graceful.New first")
	}
	if cfg.Budget < 0 {
		return nil, fmt.Errorf("grpcgraceful: Config.Budget is %s: want a positive duration (or zero for %s)", cfg.Budget, DefaultBudget)
	}
	if cfg.Budget == 0 {
		cfg.Budget = DefaultBudget
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		g:      g,
		cfg:    cfg,
		log:    cfg.Logger.With("component", "grpcgraceful"),
		health: health.NewServer(),
	}
	s.closing, s.close = context.WithCancel(context.Background())
	// Not serving until the graceful.Server runs, as its /readyz.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(s, s.health)
	if err := g.Add(graceful.Component{Name: cfg.Name, Start: s.start, Stop: s.stop, Budget: cfg.Budget}); err != nil {
		if cfg.Listener != nil {
			_ = cfg.Listener.Close()
		}
		return nil, fmt.Errorf("grpcgraceful: %w", err)
	}
	return s, nil
}

// RegisterService implements grpc.ServiceRegistrar. Like grpc.Server's, it panics on a
// programming error: a call after the start, an impl that does not implement the service, a
// service registered twice.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic(fmt.Sprintf("grpcgraceful: RegisterService(%q) after the graceful.Server started: register services first", desc.ServiceName))
	}
	if impl != nil {
		if ht, st := reflect.TypeOf(desc.HandlerType).Elem(), reflect.TypeOf(impl); !st.Implements(ht) {
			panic(fmt.Sprintf("grpcgraceful: RegisterService(%q): %v does not implement %v", desc.ServiceName, st, ht))
		}
	}
	for _, sv := range s.services {
		if sv.desc.ServiceName == desc.ServiceName {
			panic(fmt.Sprintf("grpcgraceful: RegisterService(%q): registered twice", desc.ServiceName))
		}
	}
	s.services = append(s.services, service{desc: desc, impl: impl})
}

// GetServiceInfo returns the registered services, as grpc.Server's does (for the reflection
// service, for one).
func (s *Server) GetServiceInfo() map[string]grpc.ServiceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := make(map[string]grpc.ServiceInfo, len(s.services))
	for _, sv := range s.services {
		methods := make([]grpc.MethodInfo, 0, len(sv.desc.Methods)+len(sv.desc.Streams))
		for _, m := range sv.desc.Methods {
			methods = append(methods, grpc.MethodInfo{Name: m.MethodName})
		}
		for _, st := range sv.desc.Streams {
			methods = append(methods, grpc.MethodInfo{Name: st.StreamName, IsClientStream: st.ClientStreams, IsServerStream: st.ServerStreams})
		}
		info[sv.desc.ServiceName] = grpc.ServiceInfo{Methods: methods, Metadata: sv.desc.Metadata}
	}
	return info
}

// Health is the health service's implementation, for the app to set a service's status. From
// the drain on it answers NOT_SERVING for every service and ignores updates.
func (s *Server) Health() *health.Server { return s.health }

// Addr is the listening address once the server started, else "".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// start is the component's Start: listen, serve, and follow the graceful.Server's states.
func (s *Server) start(context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("grpcgraceful: listen on %q: %w", s.cfg.Addr, err)
		}
	}
	s.mu.Lock()
	s.started = true
	s.ln = ln
	s.cur = s.newGenerationLocked()
	s.mu.Unlock()
	go s.accept(ln)
	go s.follow()
	s.log.Info("serving gRPC", "addr", ln.Addr().String())
	return nil
}

// follow applies the graceful.Server's states: health, and the GOAWAYs of the drain and the stop.
func (s *Server) follow() {
	wait := func(st graceful.State) bool {
		select {
		case <-s.g.Reached(st):
			return true
		case <-s.closing.Done():
			return false
		}
	}
	if !wait(graceful.Running) {
		return
	}
	if s.g.State() == graceful.Running {
		s.mu.Lock()
		names := make([]string, 0, len(s.services))
		for _, sv := range s.services {
			names = append(names, sv.desc.ServiceName)
		}
		s.mu.Unlock()
		s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		for _, n := range names {
			if n != healthpb.Health_ServiceDesc.ServiceName {
				s.health.SetServingStatus(n, healthpb.HealthCheckResponse_SERVING)
			}
		}
	}
	if !wait(graceful.Draining) {
		return
	}
	s.health.Shutdown()
	if s.g.State() == graceful.Draining {
		s.log.Info("draining: health NOT_SERVING, GOAWAY on every connection")
		s.rotate(nil)
	}
	if !wait(graceful.Stopping) {
		return
	}
	// No new connection: a refused one tells a gRPC client to pick another endpoint, and costs
	// no call, since a client sends calls only once the server's SETTINGS came. An open listener
	// would let round_robin clients that still list this instance connect again at once and
	// have their calls answered "not processed" over and over.
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	_ = ln.Close()
	s.log.Info("stopping: listener closed, GOAWAY on every connection, new calls answered 'not processed'")
	// Connections opened while draining and not yet told: a call on them now gets the "not
	// processed" answer, which is only safe to retry elsewhere once they are going away.
	s.rotate(nil)
}

// accept hands the listener's connections to the current generation.
func (s *Server) accept(ln net.Listener) {
	var delay time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.isClosed() {
				return
			}
			// Out of file descriptors and the like: back off as net/http does, and keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed, retrying", "err", err, "in", delay)
			select {
			case <-time.After(delay):
			case <-s.closing.Done():
				return
			}
			continue
		}
		delay = 0
		c := newConn(raw, s)
		s.conns.Store(c.key, c)
		s.deliver(c)
	}
}

// deliver gives c to the current generation, or closes it once the stop began.
func (s *Server) deliver(c *conn) {
	for {
		s.mu.Lock()
		g := s.cur
		if s.closed {
			g = nil
		}
		s.mu.Unlock()
		if g == nil {
			_ = c.closeNow()
			return
		}
		c.gen.Store(g)
		if g.lis.hand(c) {
			return
		}
		// g began to stop meanwhile: the next one takes c.
	}
}

// redeliver gives c, which a stopping generation closed before reading or writing anything, to
// the next generation instead. It reports false once the stop began.
func (s *Server) redeliver(c *conn) bool {
	if s.isClosed() {
		return false
	}
	go s.deliver(c)
	return true
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// rotate drains from (the current generation when nil): a fresh generation takes the next
// connections, and from sends GOAWAY on each of its connections and stops once their calls are
// done. It does nothing if from is no longer the current generation.
func (s *Server) rotate(from *generation) {
	s.mu.Lock()
	old := s.cur
	if s.closed || old == nil || (from != nil && from != old) {
		s.mu.Unlock()
		return
	}
	s.cur = s.newGenerationLocked()
	s.mu.Unlock()
	old.gracefulStop()
}

// stop is the component's Stop: the calls were awaited with the HTTP requests; close the
// listener, let every generation finish its answers and close its connections, and cut them at
// the budget.
func (s *Server) stop(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	gens := s.gens
	ln := s.ln
	s.mu.Unlock()
	s.close()
	if ln != nil {
		_ = ln.Close()
	}
	t0 := time.Now()
	for _, g := range gens {
		g.gracefulStop()
	}
	allDone := make(chan struct{})
	go func() {
		for _, g := range gens {
			<-g.done
		}
		close(allDone)
	}()
	// Cut a little before the budget, so that the component returns its own error rather than
	// being abandoned by the graceful.Server.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = t0.Add(s.cfg.Budget)
	}
	timer := time.NewTimer(time.Until(deadline) - s.cfg.Budget/10)
	defer timer.Stop()
	select {
	case <-allDone:
		s.log.Info("gRPC stopped", "took", time.Since(t0).Round(time.Millisecond))
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	for _, g := range gens {
		g.gs.Stop() // interrupts its GracefulStop (grpc/grpc-go#2448: bound it with a timer, then Stop)
	}
	s.log.Warn("gRPC graceful stop overran its budget: connections closed", "budget", s.cfg.Budget)
	return fmt.Errorf("%w: grpcgraceful: GracefulStop still waiting after %s: connections closed", graceful.ErrForced, time.Since(t0).Round(time.Millisecond))
}

// generation is one grpc.Server behind the Server's listener.
type generation struct {
	gs       *grpc.Server
	lis      *handoff
	stopOnce sync.Once
	done     chan struct{} // closed once GracefulStop (or Stop) returned
	srv      *Server
}

// newGenerationLocked builds and serves a grpc.Server with the configured options and services;
// the caller holds s.mu.
func (s *Server) newGenerationLocked() *generation {
	opts := make([]grpc.ServerOption, 0, len(s.cfg.Options)+2)
	opts = append(opts, grpc.ChainUnaryInterceptor(s.unary), grpc.ChainStreamInterceptor(s.stream))
	opts = append(opts, s.cfg.Options...)
	g := &generation{gs: grpc.NewServer(opts...), lis: newHandoff(s.ln.Addr()), done: make(chan struct{}), srv: s}
	for _, sv := range s.services {
		g.gs.RegisterService(sv.desc, sv.impl)
	}
	s.gens = append(s.gens, g)
	go func() { _ = g.gs.Serve(g.lis) }() // returns once stopped: the handoff never fails
	return g
}

// gracefulStop starts GracefulStop once, which closes the generation's handoff listener, sends
// GOAWAY on its connections and returns when they are closed.
func (g *generation) gracefulStop() {
	g.stopOnce.Do(func() {
		go func() {
			g.gs.GracefulStop()
			s := g.srv
			s.mu.Lock()
			for i, x := range s.gens {
				if x == g {
					s.gens = append(s.gens[:i:i], s.gens[i+1:]...)
					break
				}
			}
			s.mu.Unlock()
			close(g.done)
		}()
	})
}

// handoff is the net.Listener a generation's grpc.Server accepts from: the Server's accept loop
// hands it connections.
type handoff struct {
	addr      net.Addr
	ch        chan *conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newHandoff(addr net.Addr) *handoff {
	return &handoff{addr: addr, ch: make(chan *conn), closed: make(chan struct{})}
}

// hand gives c to the grpc.Server, or reports false once it stopped accepting.
func (h *handoff) hand(c *conn) bool {
	select {
	case h.ch <- c:
		return true
	case <-h.closed:
		return false
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ch:
		return c, nil
	case <-h.closed:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.closeOnce.Do(func() { close(h.closed) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }
