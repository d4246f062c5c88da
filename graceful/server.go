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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the Config fields left at zero.
const (
	DefaultAdminAddr     = "127.0.0.1:9901"
	DefaultStopTimeout   = 10 * time.Second
	DefaultRollbackGrace = time.Second
	DefaultRetryAfter    = time.Second
)

// ErrForced reports a stop that had to cut something short: handlers still running after their
// context was cancelled, or a component that overran its budget.
var ErrForced = errors.New("graceful: stop forced past a deadline")

// Config configures a Server. Durations left at zero take the defaults above; negative ones are
// an error.
type Config struct {
	// Servers are the app's HTTP servers (none when it serves only through components, such as
	// gRPC with graceful/grpcgraceful). Run wraps each Handler with the in-flight accounting
	// middleware, sets BaseContext (so it can cancel handlers at the stop deadline), chains
	// ConnState (to close idle connections safely at the stop; the connection ConnState and
	// ConnContext get counts the bytes read, and its NetConn method returns the accepted one),
	// and serves on Listeners[i] when given, else on Addr. A server with TLSConfig carrying a certificate is
	// served with TLS (and HTTP/2 when its Protocols allow it). Run owns the Listeners: they are
	// closed when it returns.
	Servers   []*http.Server
	Listeners []net.Listener
	// AdminAddr is where the admin endpoint listens (GET /status, POST /drain); "-" disables it.
	// It must be a loopback address unless AllowPublicAdmin: anyone who reaches it can drain the
	// app.
	AdminAddr        string
	AllowPublicAdmin bool
	// GracePeriod is the time from the stop signal to SIGKILL: what lastcall-prestop leaves the
	// app after its hook (--reserve), or terminationGracePeriodSeconds without a hook. When set,
	// the wait for in-flight requests ends where the rest of the stop still fits in it:
	// signal + GracePeriod − RollbackGrace − the components' budgets. Add and Run refuse budgets
	// that do not fit.
	GracePeriod time.Duration
	// StopTimeout bounds the wait for in-flight requests once stopping starts. Without
	// GracePeriod it defaults to DefaultStopTimeout; with it, it only caps the derived deadline.
	StopTimeout time.Duration
	// RollbackGrace is how long handlers get to return once their context is cancelled at the
	// deadline; it also bounds the flush of the last responses.
	RollbackGrace time.Duration
	// SignalDrain is how long the server drains after a first SIGTERM/SIGINT that no preStop
	// hook announced (the server was still running), before it stops; zero stops at once, like
	// a plain server. A second signal stops at once.
	SignalDrain time.Duration
	// RetryAfter is sent, in whole seconds, with the shutdown answer.
	RetryAfter time.Duration
	// LateRequestBudget is the time a request that arrives while stopping needs to find left
	// before the in-flight deadline to be served; with less, or once the in-flight requests are
	// done, it is answered "not processed". Zero: measured, the longest request of the last
	// minute or so (a decaying maximum, halved every 30 s once a minute old), at least
	// DefaultLateRequestFloor. A value above the in-flight wait (StopTimeout) turns every late
	// request away, as graceful did before it served them.
	LateRequestBudget time.Duration
	// ReadyPath and LivePath are answered by the middleware itself, uncounted; "/readyz" and
	// "/livez" when empty.
	ReadyPath, LivePath string
	// Signals start the drain or the stop: SIGTERM and SIGINT when nil, none when empty.
	Signals []os.Signal
	Logger  *slog.Logger
}

// Component is a part of the program that must stop after the HTTP servers, such as a database
// pool or a queue consumer. Components start in the order they were added and stop in reverse.
type Component struct {
	Name  string
	Start func(ctx context.Context) error // optional
	Stop  func(ctx context.Context) error
	// Budget bounds Stop, whose context ends with it. It must be positive: a component that
	// overruns it is abandoned (logged, and Run returns ErrForced) so that the next ones still
	// get their turn before SIGKILL.
	Budget time.Duration
}

// Server runs HTTP servers and components through starting → running → draining → stopping →
// stopped.
type Server struct {
	cfg        Config
	log        *slog.Logger
	retryAfter string

	// Hot path: read or bumped by every request, without locks.
	state    atomic.Int32
	inFlight atomic.Int64
	total    atomic.Uint64
	last     atomic.Int64 // 1 + nanoseconds from start to the last accepted request; 0: none
	idle     chan struct{}
	peak     peak // the longest recent requests, for late ones
	// lateUntil is the in-flight deadline, in nanoseconds from start, while the stop lets late
	// requests in; 0 before and after.
	lateUntil    atomic.Int64
	lateServed   atomic.Uint64
	lateRejected atomic.Uint64
	// start anchors last: one monotonic clock read per request costs half of time.Now, which
	// reads the wall clock too.
	start time.Time

	// Transitions are rare; mu orders them against Drain and Add.
	mu           sync.Mutex
	started      bool
	components   []Component
	budgets      time.Duration // sum of the components' budgets
	drainPending string        // reason of a Drain that came while starting
	reached      [Stopped + 1]chan struct{}

	stopReq  chan struct{}
	stopOnce sync.Once
	serveErr chan error // set by Run before serving

	base       context.Context
	cancelBase context.CancelFunc
	http2Hooks []*http.Server // guarded by mu; see serveHTTP2Locked
	conns      *conns         // the app servers' connections, for the stop
	adminAddr  atomic.Pointer[string]
	addrs      atomic.Pointer[[]string]
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := checkConfig(&cfg); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "graceful"),
		retryAfter: strconv.Itoa(int((cfg.RetryAfter + time.Second - 1) / time.Second)),
		idle:       make(chan struct{}, 1),
		stopReq:    make(chan struct{}),
		start:      time.Now(),
		conns:      newConns(),
	}
	for i := range s.reached {
		s.reached[i] = make(chan struct{})
	}
	close(s.reached[Starting])
	s.base, s.cancelBase = context.WithCancel(context.Background())
	return s, nil
}

func checkConfig(cfg *Config) error {
	if len(cfg.Listeners) > 0 && len(cfg.Listeners) != len(cfg.Servers) {
		return fmt.Errorf("graceful: %d Listeners for %d Servers: give one per server or none", len(cfg.Listeners), len(cfg.Servers))
	}
	for i, srv := range cfg.Servers {
		switch {
		case srv == nil:
			return fmt.Errorf("graceful: Config.Servers[%d] is nil", i)
		case srv.BaseContext != nil:
			return fmt.Errorf("graceful: Config.Servers[%d].BaseContext is set: graceful owns it to cancel handlers at the stop deadline; use ConnContext", i)
		case len(cfg.Listeners) > 0 && cfg.Listeners[i] == nil:
			return fmt.Errorf("graceful: Config.Listeners[%d] is nil", i)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"GracePeriod", cfg.GracePeriod}, {"StopTimeout", cfg.StopTimeout}, {"RollbackGrace", cfg.RollbackGrace}, {"SignalDrain", cfg.SignalDrain}, {"RetryAfter", cfg.RetryAfter}, {"LateRequestBudget", cfg.LateRequestBudget}} {
		if d.v < 0 {
			return fmt.Errorf("graceful: Config.%s is %s: want a positive duration (or zero for the default)", d.name, d.v)
		}
	}
	if cfg.GracePeriod == 0 {
		cfg.StopTimeout = orDefault(cfg.StopTimeout, DefaultStopTimeout)
	}
	cfg.RollbackGrace = orDefault(cfg.RollbackGrace, DefaultRollbackGrace)
	cfg.RetryAfter = orDefault(cfg.RetryAfter, DefaultRetryAfter)
	if cfg.GracePeriod > 0 && cfg.SignalDrain+cfg.RollbackGrace >= cfg.GracePeriod {
		return fmt.Errorf("graceful: Config.GracePeriod %s leaves no time for in-flight requests after SignalDrain %s and RollbackGrace %s",
			cfg.GracePeriod, cfg.SignalDrain, cfg.RollbackGrace)
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = DefaultAdminAddr
	}
	if cfg.AdminAddr != "-" && !cfg.AllowPublicAdmin {
		if err := requireLoopback(cfg.AdminAddr); err != nil {
			return err
		}
	}
	cfg.ReadyPath = cmpOr(cfg.ReadyPath, "/readyz")
	cfg.LivePath = cmpOr(cfg.LivePath, "/livez")
	for name, p := range map[string]string{"ReadyPath": cfg.ReadyPath, "LivePath": cfg.LivePath} {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("graceful: Config.%s %q: want a path starting with /", name, p)
		}
	}
	if cfg.Signals == nil {
		cfg.Signals = []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
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
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.started:
		return errors.New("graceful: Add after Run: register components first")
	case c.Name == "":
		return errors.New("graceful: Component.Name is empty")
	case c.Stop == nil:
		return fmt.Errorf("graceful: component %q has no Stop", c.Name)
	case c.Budget <= 0:
		return fmt.Errorf("graceful: component %q: Budget is %s: want a positive duration", c.Name, c.Budget)
	}
	if g := s.cfg.GracePeriod; g > 0 && s.cfg.SignalDrain+s.cfg.RollbackGrace+s.budgets+c.Budget >= g {
		return fmt.Errorf("graceful: component %q: Budget %s does not fit: GracePeriod %s, SignalDrain %s, RollbackGrace %s and the other components' %s leave no time for in-flight requests",
			c.Name, c.Budget, g, s.cfg.SignalDrain, s.cfg.RollbackGrace, s.budgets)
	}
	s.components = append(s.components, c)
	s.budgets += c.Budget
	return nil
}

// State is the current state.
func (s *Server) State() State { return State(s.state.Load()) }

// Reached returns a channel that is closed once the server is in state st or a later one. A
// server that failed to start goes straight to Stopped, so waiters check State afterwards.
func (s *Server) Reached(st State) <-chan struct{} {
	if st < Starting || st > Stopped {
		panic(fmt.Sprintf("graceful: Reached(%s): no such state", st))
	}
	return s.reached[st]
}

// setState moves forward to st; states never go back. The caller holds s.mu.
func (s *Server) setStateLocked(st State) {
	if st <= s.State() {
		return
	}
	s.state.Store(int32(st))
	for i := Starting; i <= st; i++ {
		select {
		case <-s.reached[i]:
		default:
			close(s.reached[i])
		}
	}
}

func (s *Server) setState(st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setStateLocked(st)
}

// Status is the admin endpoint's answer.
func (s *Server) Status() Status {
	st := Status{State: s.State().String(), InFlight: s.inFlight.Load(), RequestsTotal: s.total.Load(),
		LateServed: s.lateServed.Load(), LateRejected: s.lateRejected.Load()}
	if d := s.last.Load(); d != 0 {
		st.LastRequest = s.start.Add(time.Duration(d - 1)).UTC().Format(time.RFC3339Nano)
	}
	return st
}

// AdminAddr is the admin endpoint's address once Run has started it.
func (s *Server) AdminAddr() string {
	if a := s.adminAddr.Load(); a != nil {
		return *a
	}
	return ""
}

// Addrs are the app servers' listening addresses once Run has started them.
func (s *Server) Addrs() []string {
	if a := s.addrs.Load(); a != nil {
		return *a
	}
	return nil
}

// Context is the base context of every request: it is cancelled when the stop deadline passes,
// so handlers can roll back.
func (s *Server) Context() context.Context { return s.base }

// Drain enters drain mode: keep serving, fail readiness, and make every caller reconnect
// elsewhere. It is idempotent; a Drain while starting takes effect once running, and one after
// the drain does nothing.
func (s *Server) Drain(reason string) {
	s.mu.Lock()
	st := s.State()
	switch st {
	case Starting:
		s.drainPending = cmpOr(reason, "drain requested")
	case Running:
		s.setStateLocked(Draining)
	}
	s.mu.Unlock()
	switch st {
	case Starting:
		s.log.Info("drain requested while starting: draining as soon as running", "reason", reason)
	case Running:
		// HTTP/2 can tell an idle connection to go away without a race: GOAWAY names the last
		// stream the server processes, and the caller sends the others again elsewhere.
		s.goAwayHTTP2()
		// Idle HTTP/1.1 connections are left open on purpose: closing one races a caller that
		// is writing a request on it, which fails a request that cannot be retried. Each
		// connection instead closes after its next response (Connection: close); idle ones
		// close at stop, by when callers have moved to other endpoints.
		s.log.Info("draining: readiness fails, HTTP/2 connections got GOAWAY, HTTP/1.1 ones close after their next request", "reason", reason)
	}
}

// Shutdown asks Run to stop now, as a SIGTERM after the drain would. It does not wait: Run
// returns once everything stopped.
func (s *Server) Shutdown() { s.stopOnce.Do(func() { close(s.stopReq) }) }
