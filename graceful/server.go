package graceful

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults.
const (
	DefaultAdminAddr     = "127.0.0.1:9901"
	DefaultStopTimeout   = 10 * time.Second
	DefaultRollbackGrace = time.Second
	DefaultSignalDrain   = 5 * time.Second
	DefaultBudget        = 5 * time.Second
)

// ErrForced reports a stop that had to cut something short: handlers still running at the
// deadline, or a component that overran its budget.
var ErrForced = errors.New("graceful: stop forced past a deadline")

// Config configures a Server. Zero values take the defaults above.
type Config struct {
	// Servers are the app's HTTP servers. Run wraps each Handler with the in-flight accounting
	// middleware and serves on Listeners[i] when given, else on Addr.
	Servers   []*http.Server
	Listeners []net.Listener
	// AdminAddr is where the admin endpoint listens; "-" disables it. It must be a loopback
	// address unless AllowPublicAdmin: anyone who reaches it can drain the app.
	AdminAddr        string
	AllowPublicAdmin bool
	// StopTimeout bounds the wait for in-flight requests once stopping starts. Set it to what is
	// left of the grace period after the preStop hook (lastcall-prestop --reserve) minus the
	// components' budgets.
	StopTimeout time.Duration
	// RollbackGrace is how long handlers get to return after their context is cancelled.
	RollbackGrace time.Duration
	// SignalDrain is how long the server drains after a first SIGTERM that no preStop hook
	// announced (it was Running), before it stops. A second signal stops at once.
	SignalDrain time.Duration
	// RetryAfter is sent with the shutdown answer; one second when zero.
	RetryAfter time.Duration
	// ReadyPath and LivePath are answered by the middleware itself, uncounted.
	ReadyPath, LivePath string
	// Signals start the drain/stop; SIGTERM and SIGINT when nil, none when empty.
	Signals []os.Signal
	Logger  *slog.Logger
}

// Component is a part of the program that must stop after the HTTP servers, such as a database
// pool or a queue consumer. Components start in the order they were added and stop in reverse.
type Component struct {
	Name  string
	Start func(ctx context.Context) error // optional
	Stop  func(ctx context.Context) error
	// Budget bounds Stop; DefaultBudget when zero. An overrun is abandoned and logged.
	Budget time.Duration
}

// Server runs HTTP servers and components through starting → running → draining → stopping →
// stopped.
type Server struct {
	cfg        Config
	log        *slog.Logger
	components []Component

	state    atomic.Int32
	started  atomic.Bool
	inFlight atomic.Int64
	total    atomic.Uint64
	last     atomic.Int64 // unix nanoseconds of the last accepted request
	idle     chan struct{}
	stopReq  chan struct{}
	stopOnce sync.Once

	base       context.Context
	cancelBase context.CancelFunc
	admin      *http.Server
	adminAddr  atomic.Value // string
	addrs      atomic.Value // []string
	retryAfter string
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("graceful: Config.Servers is empty: give at least one *http.Server")
	}
	if len(cfg.Listeners) > 0 && len(cfg.Listeners) != len(cfg.Servers) {
		return nil, fmt.Errorf("graceful: %d Listeners for %d Servers: give one per server or none", len(cfg.Listeners), len(cfg.Servers))
	}
	for name, d := range map[string]*time.Duration{"StopTimeout": &cfg.StopTimeout, "RollbackGrace": &cfg.RollbackGrace, "RetryAfter": &cfg.RetryAfter} {
		if *d < 0 {
			return nil, fmt.Errorf("graceful: Config.%s is %s: want a positive duration (or zero for the default)", name, *d)
		}
	}
	if cfg.SignalDrain < 0 {
		return nil, fmt.Errorf("graceful: Config.SignalDrain is %s: want zero or more", cfg.SignalDrain)
	}
	cfg.StopTimeout = orDefault(cfg.StopTimeout, DefaultStopTimeout)
	cfg.RollbackGrace = orDefault(cfg.RollbackGrace, DefaultRollbackGrace)
	cfg.RetryAfter = orDefault(cfg.RetryAfter, time.Second)
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.AdminAddr != "-" && !cfg.AllowPublicAdmin {
		if err := requireLoopback(cfg.AdminAddr); err != nil {
			return nil, err
		}
	}
	if cfg.ReadyPath == "" {
		cfg.ReadyPath = "/readyz"
	}
	if cfg.LivePath == "" {
		cfg.LivePath = "/livez"
	}
	if cfg.Signals == nil {
		cfg.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "graceful"), idle: make(chan struct{}, 1), stopReq: make(chan struct{}),
		retryAfter: strconv.Itoa(int((cfg.RetryAfter + time.Second - 1) / time.Second))}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("graceful: Config.AdminAddr %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("graceful: Config.AdminAddr %q is not a loopback address: use 127.0.0.1:PORT, or set AllowPublicAdmin", addr)
	}
	return nil
}

// Add registers a component. It must be called before Run.
func (s *Server) Add(c Component) error {
	switch {
	case s.started.Load():
		return errors.New("graceful: Add after Run: register components first")
	case c.Name == "":
		return errors.New("graceful: Component.Name is empty")
	case c.Stop == nil:
		return fmt.Errorf("graceful: component %q has no Stop", c.Name)
	case c.Budget < 0:
		return fmt.Errorf("graceful: component %q: Budget is %s: want a positive duration (or zero for %s)", c.Name, c.Budget, DefaultBudget)
	}
	c.Budget = orDefault(c.Budget, DefaultBudget)
	s.components = append(s.components, c)
	return nil
}

// State is the current state.
func (s *Server) State() State { return State(s.state.Load()) }

// Status is the admin endpoint's answer.
func (s *Server) Status() Status {
	st := Status{State: s.State().String(), InFlight: s.inFlight.Load(), RequestsTotal: s.total.Load()}
	if ns := s.last.Load(); ns != 0 {
		st.LastRequest = time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
	}
	return st
}

// AdminAddr is the admin endpoint's address once Run has started it.
func (s *Server) AdminAddr() string {
	a, _ := s.adminAddr.Load().(string)
	return a
}

// Addrs are the app servers' listening addresses once Run has started them.
func (s *Server) Addrs() []string {
	a, _ := s.addrs.Load().([]string)
	return a
}

// Context is the base context of every request: it is cancelled when the stop deadline passes,
// so handlers can roll back.
func (s *Server) Context() context.Context { return s.base }

// Drain enters drain mode: keep serving, fail readiness, and make every caller reconnect
// elsewhere. It is idempotent and only moves a Running server.
func (s *Server) Drain(reason string) {
	if !s.state.CompareAndSwap(int32(Running), int32(Draining)) {
		return
	}
	// Idle connections are left open on purpose: closing one races a caller that is writing a
	// request on it, which fails a request that cannot be retried. Each connection instead
	// closes after its next response (Connection: close, or GOAWAY on HTTP/2); idle ones close
	// at stop, by when callers have moved to other endpoints.
	s.log.Info("draining: readiness fails, connections close after their current request", "reason", reason)
}

// Shutdown asks Run to stop now (programmatic SIGTERM).
func (s *Server) Shutdown() { s.stopOnce.Do(func() { close(s.stopReq) }) }
