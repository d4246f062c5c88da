package graceful

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"
)

// Run starts the components and servers, then waits for a signal, Shutdown, the end of ctx, or a
// server failure, and stops. It returns nil after a clean stop, ErrForced (wrapped) when a
// deadline cut something short, or the error that ended serving.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("graceful: Run called twice: a Server runs once")
	}
	sigs := make(chan os.Signal, 2)
	if len(s.cfg.Signals) > 0 { // Notify with no signal would relay every signal
		signal.Notify(sigs, s.cfg.Signals...)
		defer signal.Stop(sigs)
	}

	started, err := s.startComponents(ctx)
	if err != nil {
		return errors.Join(err, s.stopComponents(started))
	}
	serveErr := make(chan error, len(s.cfg.Servers)+1)
	if err := s.startServers(serveErr); err != nil {
		return errors.Join(err, s.stopComponents(started))
	}
	s.state.Store(int32(Running))
	s.log.Info("running", "servers", len(s.cfg.Servers), "admin", s.AdminAddr())

	var drainTimer <-chan time.Time
	var cause error
wait:
	for {
		select {
		case sig := <-sigs:
			if s.State() == Running && s.cfg.SignalDrain > 0 {
				// No preStop hook drained us: callers still have this pod. Drain first.
				s.Drain("signal " + sig.String())
				drainTimer = time.After(s.cfg.SignalDrain)
				continue
			}
			s.log.Info("stopping", "reason", "signal "+sig.String())
			break wait
		case <-drainTimer:
			s.log.Info("stopping", "reason", "signal drain period over")
			break wait
		case <-s.stopReq:
			s.log.Info("stopping", "reason", "Shutdown called")
			break wait
		case <-ctx.Done():
			s.log.Info("stopping", "reason", "context ended")
			break wait
		case err := <-serveErr:
			cause = err
			s.log.Error("a server failed, stopping", "err", err)
			break wait
		}
	}
	return errors.Join(cause, s.stop(started))
}

func (s *Server) startComponents(ctx context.Context) ([]Component, error) {
	var started []Component
	for _, c := range s.components {
		if c.Start != nil {
			t0 := time.Now()
			if err := c.Start(ctx); err != nil {
				return started, fmt.Errorf("graceful: start %s: %w", c.Name, err)
			}
			s.log.Info("component started", "name", c.Name, "took", time.Since(t0))
		}
		started = append(started, c)
	}
	return started, nil
}

func (s *Server) startServers(serveErr chan<- error) error {
	if s.cfg.AdminAddr != "-" {
		ln, err := net.Listen("tcp", s.cfg.AdminAddr)
		if err != nil {
			return fmt.Errorf("graceful: admin endpoint: %w", err)
		}
		s.adminAddr.Store(ln.Addr().String())
		s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = s.admin.Serve(ln) }()
	}
	var addrs []string
	defer func() { s.addrs.Store(addrs) }()
	for i, srv := range s.cfg.Servers {
		var ln net.Listener
		if len(s.cfg.Listeners) > 0 {
			ln = s.cfg.Listeners[i]
		} else {
			var err error
			if ln, err = net.Listen("tcp", srv.Addr); err != nil {
				return fmt.Errorf("graceful: listen on %q: %w", srv.Addr, err)
			}
		}
		addrs = append(addrs, ln.Addr().String())
		srv.Handler = s.Wrap(srv.Handler)
		srv.BaseContext = func(net.Listener) context.Context { return s.base }
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("graceful: serve on %s: %w", ln.Addr(), err)
			}
		}()
	}
	return nil
}

// stop: stop accepting, wait for in-flight requests until StopTimeout, cancel the handlers'
// context, give them RollbackGrace, close what is left, then stop components in reverse order.
func (s *Server) stop(started []Component) error {
	t0 := time.Now()
	s.state.Store(int32(Stopping))
	for _, srv := range s.cfg.Servers {
		// Shutdown closes the listeners and idle connections; in-flight requests are awaited
		// through the counter below, which the middleware signals, so its result is not needed.
		go func() { _ = srv.Shutdown(context.Background()) }()
	}
	var forced error
	if !s.awaitIdle(s.cfg.StopTimeout) {
		s.log.Warn("stop deadline: cancelling in-flight requests", "inFlight", s.inFlight.Load(), "after", s.cfg.StopTimeout)
		s.cancelBase()
		if !s.awaitIdle(s.cfg.RollbackGrace) {
			forced = fmt.Errorf("%w: %d requests still running after cancellation", ErrForced, s.inFlight.Load())
			s.log.Error("handlers ignored cancellation: closing their connections", "inFlight", s.inFlight.Load())
		}
	}
	s.cancelBase()
	for _, srv := range s.cfg.Servers {
		_ = srv.Close()
	}
	s.log.Info("servers stopped", "took", time.Since(t0), "requestsTotal", s.total.Load())
	err := errors.Join(forced, s.stopComponents(started))
	if s.admin != nil {
		_ = s.admin.Close()
	}
	s.state.Store(int32(Stopped))
	s.log.Info("stopped", "took", time.Since(t0), "forced", err != nil)
	return err
}

// awaitIdle waits until no request is in flight or d passes; the middleware signals the last
// request's end, so there is no polling.
func (s *Server) awaitIdle(d time.Duration) bool {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for s.inFlight.Load() > 0 {
		select {
		case <-s.idle:
		case <-deadline.C:
			return s.inFlight.Load() == 0
		}
	}
	return true
}

// stopComponents stops in reverse start order, each within its budget; an overrun is left behind.
func (s *Server) stopComponents(started []Component) error {
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		c := started[i]
		t0 := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), c.Budget)
		done := make(chan error, 1)
		go func() { done <- c.Stop(ctx) }()
		select {
		case err := <-done:
			if err != nil {
				errs = append(errs, fmt.Errorf("graceful: stop %s: %w", c.Name, err))
			}
			s.log.Info("component stopped", "name", c.Name, "took", time.Since(t0), "err", err)
		case <-time.After(c.Budget):
			errs = append(errs, fmt.Errorf("%w: component %s overran its budget of %s", ErrForced, c.Name, c.Budget))
			s.log.Error("component overran its budget, abandoned", "name", c.Name, "budget", c.Budget)
		}
		cancel()
	}
	return errors.Join(errs...)
}
