package graceful

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNoEndpoint is returned by a Picker that has no endpoint to offer.
var ErrNoEndpoint = errors.New("graceful: no endpoint available")

// Picker chooses the endpoint (host:port) for one try, avoiding those already tried when it can.
type Picker interface {
	Pick(tried []string) (string, error)
}

// Static is a Picker over a fixed list, round robin; Set replaces the list (say, from a registry).
type Static struct {
	mu    sync.RWMutex
	hosts []string
	next  atomic.Uint64
}

// NewStatic returns a Picker over hosts.
func NewStatic(hosts ...string) *Static {
	s := &Static{}
	s.Set(hosts...)
	return s
}

// Set replaces the endpoints.
func (s *Static) Set(hosts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts = slices.Clone(hosts)
}

// Pick implements Picker.
func (s *Static) Pick(tried []string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return RoundRobin(s.hosts, tried, &s.next)
}

// RoundRobin picks from hosts in turn (next is the shared turn counter), skipping tried ones
// while any other is left; for Picker implementations.
func RoundRobin(hosts, tried []string, next *atomic.Uint64) (string, error) {
	if len(hosts) == 0 {
		return "", ErrNoEndpoint
	}
	start := next.Add(1)
	for i := range uint64(len(hosts)) {
		h := hosts[(start+i)%uint64(len(hosts))]
		if !slices.Contains(tried, h) {
			return h, nil
		}
	}
	return hosts[start%uint64(len(hosts))], nil
}

// RetryTransport retries a request on another endpoint when the answer carries MarkerHeader (the
// server did not process it, so any method is safe), and when an idempotent request failed to
// connect before any byte of it was written. Tries and total time are bounded.
type RetryTransport struct {
	Base   http.RoundTripper // http.DefaultTransport when nil
	Picker Picker
	// MaxTries bounds the tries per request; 3 when zero.
	MaxTries int
	// Timeout bounds the whole request, tries included; 10s when zero.
	Timeout time.Duration
}

// RoundTrip implements http.RoundTripper. The request URL's host is replaced by the endpoint.
func (t *RetryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if t.Picker == nil {
		return nil, errors.New("graceful: RetryTransport.Picker is nil")
	}
	tries := t.MaxTries
	if tries <= 0 {
		tries = 3
	}
	if err := replayable(req); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(req.Context(), orDefault(t.Timeout, 10*time.Second))
	var tried []string
	var lastErr error
	for try := range tries {
		host, err := t.Picker.Pick(tried)
		if err != nil {
			cancel()
			return nil, errors.Join(err, lastErr)
		}
		tried = append(tried, host)
		var wrote atomic.Bool
		r := req.Clone(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}))
		r.URL.Host, r.Host = host, ""
		if req.GetBody != nil {
			if r.Body, err = req.GetBody(); err != nil {
				cancel()
				return nil, fmt.Errorf("graceful: rewind request body: %w", err)
			}
		}
		resp, err := base.RoundTrip(r)
		last := try == tries-1
		switch {
		case err == nil && resp.Header.Get(MarkerHeader) != "" && !last:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			lastErr = fmt.Errorf("graceful: %s is shutting down", host)
			continue
		case err == nil:
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		case !last && ctx.Err() == nil && !wrote.Load() && idempotent(req.Method):
			lastErr = err
			continue
		}
		cancel()
		return nil, err
	}
	cancel()
	return nil, lastErr
}

// replayable makes the body readable once per try.
func replayable(req *http.Request) error {
	if req.Body == nil || req.Body == http.NoBody || req.GetBody != nil {
		return nil
	}
	b, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return fmt.Errorf("graceful: read request body: %w", err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	req.Body, _ = req.GetBody()
	return nil
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// cancelOnClose releases the request's deadline once the caller is done with the body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
