package graceful

import (
	"context"
	"crypto/tls"
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
	if err := s.claim(); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	if len(s.cfg.Signals) > 0 { // Notify with no signal would relay every signal
		signal.Notify(sigs, s.cfg.Signals...)
		defer signal.Stop(sigs)
	}

	started, err := s.startComponents(ctx)
	if err != nil {
		return s.abortStart(err, started)
	}
	admin, adminLn, err := s.startServers()
	if err != nil {
		return s.abortStart(err, started)
	}
	s.enterRunning()
	if admin != nil {
		// Served only from now on, so /status never answers "starting"; a POST /drain sent
		// earlier waited in the listen queue and applies now.
		go func() { _ = admin.Serve(adminLn) }()
		defer func() { _ = admin.Close() }()
	}
	s.log.Info("running", "state", s.State().String(), "servers", s.Addrs(), "admin", s.AdminAddr())

	stopAt, cause := s.awaitStop(ctx, sigs)
	return errors.Join(cause, s.stop(started, stopAt))
}

// awaitStop waits for what ends serving: a signal (after the signal drain, when one applies),
// Shutdown, the end of ctx, or a server failure, which it returns. stopAt is when the stop was
// first asked for; the grace period counts from there.
func (s *Server) awaitStop(ctx context.Context, sigs <-chan os.Signal) (stopAt time.Time, cause error) {
	var drainEnd <-chan time.Time
	defer func() {
		if stopAt.IsZero() {
			stopAt = time.Now()
		}
	}()
	for {
		select {
		case sig := <-sigs:
			if stopAt.IsZero() {
				stopAt = time.Now()
			}
			if drainEnd == nil && s.State() == Running && s.cfg.SignalDrain > 0 {
				// No preStop hook drained us: callers still have this pod. Drain first.
				s.Drain("signal " + sig.String() + " while running")
				t := time.NewTimer(s.cfg.SignalDrain)
				defer t.Stop()
				drainEnd = t.C
				continue
			}
			s.log.Info("stop requested", "reason", "signal "+sig.String())
			return stopAt, nil
		case <-drainEnd:
			s.log.Info("stop requested", "reason", "signal drain period over", "drained", time.Since(stopAt).Round(time.Millisecond))
			return stopAt, nil
		case <-s.stopReq:
			s.log.Info("stop requested", "reason", "Shutdown called")
			return stopAt, nil
		case <-ctx.Done():
			s.log.Info("stop requested", "reason", "context ended", "err", context.Cause(ctx))
			return stopAt, nil
		case err := <-s.serveErr:
			s.log.Error("a server failed, stopping", "err", err)
			return stopAt, err
		}
	}
}

// claim marks the server as started: a Server runs once, and Add is closed from now on.
func (s *Server) claim() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("graceful: Run called twice: a Server runs once")
	}
	s.started = true
	return nil
}

func (s *Server) enterRunning() {
	s.mu.Lock()
	s.setStateLocked(Running)
	pending := s.drainPending
	s.mu.Unlock()
	if pending != "" {
		s.Drain(pending)
	}
}

// abortStart undoes a failed start: what started stops, in reverse order, and the server ends
// in Stopped so that waiters on Reached wake up.
func (s *Server) abortStart(err error, started []Component) error {
	s.log.Error("start failed, stopping what started", "err", err)
	for _, ln := range s.cfg.Listeners { // Run owns them, as Serve would have
		_ = ln.Close()
	}
	err = errors.Join(err, s.stopComponents(started))
	s.cancelBase()
	s.setState(Stopped)
	return err
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

// startServers opens every listener first, so that a busy port fails the start before anything
// serves, then serves the app servers. The admin server is returned to be served once running.
func (s *Server) startServers() (*http.Server, net.Listener, error) {
	s.mu.Lock()
	for i, srv := range s.cfg.Servers {
		if err := s.serveHTTP2Locked(srv); err != nil {
			s.mu.Unlock()
			return nil, nil, fmt.Errorf("graceful: Config.Servers[%d]: HTTP/2: %w", i, err)
		}
	}
	s.mu.Unlock()
	lns := make([]net.Listener, len(s.cfg.Servers))
	closeAll := func() {
		for _, ln := range lns {
			if ln != nil {
				_ = ln.Close()
			}
		}
	}
	for i, srv := range s.cfg.Servers {
		if len(s.cfg.Listeners) > 0 {
			lns[i] = s.cfg.Listeners[i]
			continue
		}
		ln, err := net.Listen("tcp", cmpOr(srv.Addr, ":http"))
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("graceful: listen on %q: %w", srv.Addr, err)
		}
		lns[i] = ln
	}
	var admin *http.Server
	var adminLn net.Listener
	if s.cfg.AdminAddr != "-" {
		var err error
		if adminLn, err = net.Listen("tcp", s.cfg.AdminAddr); err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("graceful: admin endpoint: %w", err)
		}
		a := adminLn.Addr().String()
		s.adminAddr.Store(&a)
		admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	}

	addrs := make([]string, len(lns))
	s.serveErr = make(chan error, len(lns))
	for i, srv := range s.cfg.Servers {
		ln := s.conns.listen(lns[i])
		addrs[i] = ln.Addr().String()
		srv.Handler = s.Wrap(srv.Handler)
		srv.BaseContext = func(net.Listener) context.Context { return s.base }
		srv.ConnState = s.conns.hook(srv.ConnState)
		go func() {
			var err error
			if hasCertificate(srv.TLSConfig) {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.serveErr <- fmt.Errorf("graceful: serve on %s: %w", ln.Addr(), err)
			}
		}()
	}
	s.addrs.Store(&addrs)
	return admin, adminLn, nil
}

func hasCertificate(c *tls.Config) bool {
	return c != nil && (len(c.Certificates) > 0 || c.GetCertificate != nil || c.GetConfigForClient != nil)
}
