package consul

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"time"
)

// DefaultTimeout bounds one Consul request (a blocking query: its wait plus this).
const DefaultTimeout = 5 * time.Second

// consulHeader is set on every answer of Consul's HTTP API since 1.9 (api-docs/api-structure.mdx,
// "Default ACL Policy"; agent/http.go wrap sets it before any handler runs). Its absence means
// something other than Consul's API answered: a wrong server behind the address, a proxy whose
// route is gone, or a path Consul does not serve (its 404 "Invalid URL path" lacks it).
const consulHeader = "X-Consul-Default-Acl-Policy"

// transport keeps a long-lived client usable when Consul moves behind its address (a recreated
// server behind the same DNS name or Service): every request has a deadline, and a request that
// fails, or that something other than Consul answers, closes the connection it used and the
// pooled idle ones, so the next request dials again and resolves the address anew. Without
// this, keep-alive connections stay with whatever answered first, for as long as it answers.
type transport struct {
	base    *http.Transport
	timeout time.Duration
}

func newTransport(base *http.Transport, timeout time.Duration) *transport {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	return &transport{base: base, timeout: timeout}
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(req.Context(), requestBudget(req.URL, t.timeout))
	var (
		mu   sync.Mutex
		conn net.Conn
	)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		mu.Lock()
		conn = info.Conn
		mu.Unlock()
	}})
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		// The peer may be gone, silent or replaced: its idle siblings likely lead there too.
		t.base.CloseIdleConnections()
		return nil, err
	}
	body := &closer{ReadCloser: resp.Body, cancel: cancel}
	if resp.Header.Get(consulHeader) == "" {
		body.after = func() {
			mu.Lock()
			c := conn
			mu.Unlock()
			if c != nil {
				_ = c.Close() // not Consul: never reuse this connection
			}
			t.base.CloseIdleConnections()
		}
	}
	resp.Body = body
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the pool.
func (t *transport) CloseIdleConnections() { t.base.CloseIdleConnections() }

// closer ends a request's deadline once its body is closed (the client reads the body after
// RoundTrip returns), then runs after.
type closer struct {
	io.ReadCloser
	cancel context.CancelFunc
	after  func()
	once   sync.Once
}

func (c *closer) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() {
		c.cancel()
		if c.after != nil {
			c.after()
		}
	})
	return err
}

// Consul's limits on a blocking query's wait (api-docs/features/blocking.mdx): 5 minutes when
// none is given, at most 10; the server adds up to wait/16 of jitter.
const (
	defaultQueryWait = 5 * time.Minute
	maxQueryWait     = 10 * time.Minute
)

// requestBudget is how long one request may take: timeout, or for a blocking query (an index
// is set) its wait with Consul's jitter, plus timeout.
func requestBudget(u *url.URL, timeout time.Duration) time.Duration {
	q := u.Query()
	if q.Get("index") == "" {
		return timeout
	}
	wait := defaultQueryWait
	if w, err := time.ParseDuration(q.Get("wait")); err == nil && w > 0 {
		wait = min(w, maxQueryWait)
	}
	return wait + wait/16 + timeout
}
