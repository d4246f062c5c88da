package graceful

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// stop runs the stopping phase: wait for in-flight requests until the deadline, serving the new
// requests that can finish by then and turning the others away with the marker (late.go);
// cancel the handlers' context and give them RollbackGrace; close the listeners and
// connections; then stop the components in reverse start order, each within its budget.
//
// The listeners stay open until the in-flight requests are done: a caller that still picks this
// instance then gets an answer, served or marked (which it may retry elsewhere whatever the
// method), rather than a refused connection or, worse, a reset of a connection that sat in the
// accept queue after its request was written, which nobody may retry for a POST.
func (s *Server) stop(started []Component, stopAt time.Time) error {
	t0 := time.Now()
	deadline := s.inFlightDeadline(stopAt, t0)
	closeBy := deadline.Add(s.cfg.RollbackGrace)
	s.openLate(deadline) // before the switch: a request that sees stopping sees the window
	s.setState(Stopping)
	need, source := s.lateRule(time.Since(s.start))
	s.log.Info("stopping: waiting for in-flight requests; a new request is served if it can finish before the deadline, else gets the shutdown answer",
		"inFlight", s.inFlight.Load(), "deadline", deadline.Sub(t0).Round(time.Millisecond),
		"lateRequestNeeds", need.Round(time.Millisecond), "lateRequestNeedFrom", source)

	handlersDone := s.awaitRequests(deadline)
	if handlersDone {
		s.log.Info("in-flight requests done", "took", time.Since(t0).Round(time.Millisecond),
			"lateServed", s.lateServed.Load(), "lateRejected", s.lateRejected.Load())
	} else {
		s.log.Warn("stop deadline passed: cancelling the handlers' context so they can roll back",
			"inFlight", s.inFlight.Load(), "rollbackGrace", s.cfg.RollbackGrace,
			"lateServed", s.lateServed.Load(), "lateRejected", s.lateRejected.Load())
		s.cancelBase()
		if handlersDone = s.awaitIdle(closeBy); handlersDone {
			s.log.Info("cancelled handlers returned", "took", time.Since(t0).Round(time.Millisecond))
		}
	}
	s.cancelBase()

	// HTTP/2 connections opened while draining and idle since: net/http's Shutdown does not
	// know they are HTTP/2 (graceful serves them) and would wait for them until the deadline.
	s.goAwayHTTP2()
	var forced error
	if handlersDone {
		ctx, cancel := context.WithDeadline(context.Background(), closeBy)
		// Idle HTTP/1.1 connections close now, except those with a request on its way: see
		// idle.go.
		if closed, waited := s.conns.closeIdle(ctx, s.log); closed+waited > 0 {
			s.log.Info("listeners and idle connections closed", "closed", closed, "waitedForRequests", waited,
				"took", time.Since(t0).Round(time.Millisecond))
		}
		// Shutdown closes what is left idle and returns once every connection is closed
		// (HTTP/2 ones once their GOAWAY is through), which is after the last responses were
		// written out: the handler count alone would let Close cut responses still in the
		// buffers.
		if shutdownAll(ctx, s.cfg.Servers); ctx.Err() != nil {
			s.log.Warn("connections still open at the deadline: closing them", "took", time.Since(t0).Round(time.Millisecond))
		} else {
			s.log.Info("listeners and connections closed", "took", time.Since(t0).Round(time.Millisecond))
		}
		cancel()
	} else {
		forced = fmt.Errorf("%w: %d requests still running after their context was cancelled", ErrForced, s.inFlight.Load())
		s.log.Error("handlers ignored cancellation: closing their connections", "inFlight", s.inFlight.Load())
	}
	for _, srv := range s.cfg.Servers {
		_ = srv.Close()
	}
	s.log.Info("servers stopped", "took", time.Since(t0).Round(time.Millisecond), "requestsTotal", s.total.Load())

	err := errors.Join(forced, s.stopComponents(started))
	s.setState(Stopped)
	s.log.Info("stopped", "took", time.Since(t0).Round(time.Millisecond), "forced", errors.Is(err, ErrForced), "err", err)
	return err
}

// inFlightDeadline is when the wait for in-flight requests ends: StopTimeout after the stop
// started, and no later than what the grace period leaves once the rollback grace and the
// components' budgets are set aside.
func (s *Server) inFlightDeadline(stopAt, now time.Time) time.Time {
	var d time.Time
	if s.cfg.StopTimeout > 0 {
		d = now.Add(s.cfg.StopTimeout)
	}
	if g := s.cfg.GracePeriod; g > 0 {
		s.mu.Lock()
		budgets := s.budgets
		s.mu.Unlock()
		if fit := stopAt.Add(g - s.cfg.RollbackGrace - budgets); d.IsZero() || fit.Before(d) {
			d = fit
		}
	}
	return d
}

// shutdownAll calls Shutdown on every server at once and returns when all returned, or ctx ended.
func shutdownAll(ctx context.Context, servers []*http.Server) {
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1) // not wg.Go: the module's go line is 1.22
		go func() {
			defer wg.Done()
			_ = srv.Shutdown(ctx)
		}()
	}
	wg.Wait()
}

// awaitRequests waits until no request is in flight, late ones included, or until passes, and
// then turns every new request away. A late request may have counted itself just before the
// count was seen at zero, and seen the window still open: the count is read again once the
// window is closed, and such a request is awaited too.
func (s *Server) awaitRequests(until time.Time) bool {
	done := s.awaitIdle(until)
	s.closeLate()
	if done && s.inFlight.Load() > 0 {
		done = s.awaitIdle(until)
	}
	return done
}

// awaitIdle waits until no request is in flight or until passes. The middleware signals the end
// of the last request once stopping, so there is no polling.
func (s *Server) awaitIdle(until time.Time) bool {
	if s.inFlight.Load() == 0 {
		return true
	}
	timer := time.NewTimer(time.Until(until))
	defer timer.Stop()
	for s.inFlight.Load() > 0 {
		select {
		case <-s.idle:
		case <-timer.C:
			return s.inFlight.Load() == 0
		}
	}
	return true
}

// stopComponents stops in reverse start order, each within its budget; an overrun is abandoned
// (its context is cancelled and its goroutine left behind) so the next component still runs.
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
				s.log.Error("component stop failed", "name", c.Name, "took", time.Since(t0).Round(time.Millisecond), "err", err)
			} else {
				s.log.Info("component stopped", "name", c.Name, "took", time.Since(t0).Round(time.Millisecond))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%w: component %s overran its budget of %s", ErrForced, c.Name, c.Budget))
			s.log.Error("component overran its budget, abandoned", "name", c.Name, "budget", c.Budget)
		}
		cancel()
	}
	return errors.Join(errs...)
}
