package graceful

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of RetryTransport.
const (
	DefaultMaxTries     = 3
	DefaultRetryTimeout = 10 * time.Second
	DefaultAvoidFor     = 30 * time.Second
)

// RetryTransport is an http.RoundTripper that sends each request to an endpoint chosen by Picker
// (the request URL's host is replaced) and tries another one:
//   - when the answer carries MarkerHeader: the server did not process the request, so any
//     method is safe to retry;
//   - when an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) failed before its
//     headers were completely written, so the server cannot have started it (a refused
//     connection, a failed handshake).
//
// Anything else, including a POST whose connection broke after it was sent, is returned as is:
// only the caller knows whether it may be repeated. Tries are bounded by MaxTries and the whole
// request, tries and response body included, by Timeout. When every try was turned away, the last
// marked 503 answer is returned.
//
// An endpoint that answers with DrainingHeader or MarkerHeader, or refuses a connection, is left
// out of the picks of later requests for AvoidFor, as long as another endpoint is left: callers
// move off an instance during its drain even when their Picker is a static list.
//
// A body without GetBody is read into memory once so that it can be sent again. Use a
// RetryTransport by pointer and share it: it holds what it learned about the endpoints.
type RetryTransport struct {
	Base   http.RoundTripper // http.DefaultTransport when nil
	Picker Picker
	// MaxTries bounds the tries per request; DefaultMaxTries when zero.
	MaxTries int
	// Timeout bounds the whole request; DefaultRetryTimeout when zero.
	Timeout time.Duration
	// AvoidFor is how long an endpoint that said it is going away stays out of the picks;
	// DefaultAvoidFor when zero, never when negative. Keep it longer than a drain and a stop.
	AvoidFor time.Duration

	mu    sync.Mutex
	avoid map[string]time.Time // endpoint → until when it is left out
}

// RoundTrip implements http.RoundTripper.
func (t *RetryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.check(); err != nil {
		closeBody(req)
		return nil, err
	}
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	tries := t.MaxTries
	if tries == 0 {
		tries = DefaultMaxTries
	}
	body, err := replayable(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(req.Context(), orDefault(t.Timeout, DefaultRetryTimeout))
	var tried []string
	var lastErr error
	for try := 1; ; try++ {
		host, err := t.Picker.Pick(t.withAvoided(tried))
		if err != nil {
			cancel()
			return nil, fmt.Errorf("graceful: try %d of %d: %w", try, tries, errors.Join(err, lastErr))
		}
		tried = append(tried, host)
		resp, wrote, err := roundTrip(ctx, base, req, host, body)
		if goingAway(resp, err) {
			t.avoidHost(host)
		}
		again := try < tries && ctx.Err() == nil
		switch {
		case err == nil && resp.Header.Get(MarkerHeader) != "" && again:
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			_ = resp.Body.Close()
			lastErr = fmt.Errorf("graceful: %s is shutting down", host)
			continue
		case err == nil:
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		case again && !wrote && idempotent(req.Method):
			lastErr = err
			continue
		}
		cancel()
		return nil, fmt.Errorf("graceful: try %d of %d on %s: %w", try, tries, host, err)
	}
}

// withAvoided adds the endpoints being avoided to those tried, for the Picker to skip too.
func (t *RetryTransport) withAvoided(tried []string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.avoid) == 0 {
		return tried
	}
	now := time.Now()
	out := slices.Clip(tried) // appending must not write into the caller's array
	for h, until := range t.avoid {
		if now.After(until) {
			delete(t.avoid, h)
		} else if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func (t *RetryTransport) avoidHost(host string) {
	d := orDefault(t.AvoidFor, DefaultAvoidFor)
	if d < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.avoid == nil {
		t.avoid = make(map[string]time.Time)
	}
	t.avoid[host] = time.Now().Add(d)
}

// goingAway reports an endpoint that said it is draining or stopping, or whose connection was
// refused.
func goingAway(resp *http.Response, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	return resp.Header.Get(DrainingHeader) != "" || resp.Header.Get(MarkerHeader) != ""
}

func (t *RetryTransport) check() error {
	switch {
	case t.Picker == nil:
		return errors.New("graceful: RetryTransport.Picker is nil: give it NewStatic(hosts...) or a registry-backed Picker")
	case t.MaxTries < 0:
		return fmt.Errorf("graceful: RetryTransport.MaxTries is %d: want a positive number (or zero for %d)", t.MaxTries, DefaultMaxTries)
	case t.Timeout < 0:
		return fmt.Errorf("graceful: RetryTransport.Timeout is %s: want a positive duration (or zero for %s)", t.Timeout, DefaultRetryTimeout)
	}
	return nil
}

// roundTrip sends one try to host. wrote reports whether the request's headers were completely
// written on the last connection tried, after which the server may have started it.
func roundTrip(ctx context.Context, base http.RoundTripper, req *http.Request, host string, body func() (io.ReadCloser, error)) (resp *http.Response, wrote bool, err error) {
	var w atomic.Bool
	r := req.Clone(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		// The base transport may itself retry on a fresh connection (net/http does, for an
		// idempotent request whose reused connection was closed); what counts is the last
		// attempt, so each one starts unwritten.
		GetConn:      func(string) { w.Store(false) },
		WroteHeaders: func() { w.Store(true) },
	}))
	r.URL.Host, r.Host = host, ""
	if body != nil {
		if r.Body, err = body(); err != nil {
			return nil, false, fmt.Errorf("graceful: rewind request body: %w", err)
		}
		r.GetBody = body // lets the base transport replay it too, e.g. after an HTTP/2 GOAWAY
	}
	resp, err = base.RoundTrip(r)
	return resp, w.Load(), err
}

// replayable returns what gives the request's body afresh for each try (nil for no body),
// without changing req, and closes req.Body, which is never sent itself.
func replayable(req *http.Request) (func() (io.ReadCloser, error), error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer closeBody(req)
	if req.GetBody != nil {
		return req.GetBody, nil
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, fmt.Errorf("graceful: read request body: %w", err)
	}
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

func idempotent(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
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
