package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/app/workrpc"
	"github.com/lastcall-dev/lastcall/e2e/report"
	"github.com/lastcall-dev/lastcall/graceful"
)

// Config is one generator: a constant rate of requests on one path.
type Config struct {
	Path report.Path `json:"path"` // "service" or "consul"
	// "http1" (the default: the tuned HTTP/1.1 client below), "http1-default" (Go's
	// http.DefaultTransport settings), "h2c" (HTTP/2 with prior knowledge, Go's defaults) or
	// "grpc" (grpc-go's defaults, calls lastcall.e2e.Work/Do)
	Protocol report.Protocol `json:"protocol,omitempty"`
	// Retry sends what the server did not process (and, for idempotent HTTP requests, what
	// failed before it was sent) again: graceful.RetryTransport over HTTP, grpcgraceful.Retry's
	// interceptor over gRPC. Off by default: a plain caller counts a "not processed" answer as a
	// failure.
	Retry bool `json:"retry,omitempty"`
	// IdempotencyKey (HTTP only) sends a unique Idempotency-Key header with every request: Go's
	// Transport then resends a request whose kept-alive connection closed before it was
	// written, as it does a GET, without any other retry.
	IdempotencyKey bool `json:"idempotencyKey,omitempty"`
	// service: every request goes here; a gRPC target (host:port or dns:///host:port) for grpc
	URL         string  `json:"url,omitempty"`
	ConsulAddr  string  `json:"consulAddr,omitempty"`  // consul: its HTTP API, e.g. http://consul:8500
	Service     string  `json:"service,omitempty"`     // consul: the service name
	Port        int     `json:"port,omitempty"`        // consul: port override (default: the instance's; the gRPC port for grpc)
	URLPath     string  `json:"urlPath,omitempty"`     // consul: request path (default /; none for grpc)
	Rate        float64 `json:"rate"`                  // requests per second
	Method      string  `json:"method,omitempty"`      // default POST (the only one for grpc)
	Conns       int     `json:"conns,omitempty"`       // http1: keep-alive connections kept per host (default 32)
	Timeout     string  `json:"timeout,omitempty"`     // per request, connect to end of body (default 5s)
	MaxInFlight int     `json:"maxInFlight,omitempty"` // default: rate × timeout + conns
	IdleTimeout string  `json:"idleTimeout,omitempty"` // http1: close a keep-alive connection idle this long (default 90s, Go's)
	// http1 and http1-default: "keep-alive" (default): pooled connections; "new": a new
	// connection for every request, closed after its answer, as callers without pooling do
	Connection string `json:"connection,omitempty"`

	timeout, idleTimeout time.Duration
}

// defaultConns is http1's pool per host, and the slack of every protocol's in-flight cap.
const defaultConns = 32

// Config.Connection's values.
const (
	connKeepAlive = "keep-alive"
	connNew       = "new"
)

// validate fills in defaults and names the first bad field, i being the generator's index in
// the start request.
func (c *Config) validate(i int) error {
	field := func(name string) string { return fmt.Sprintf("generators[%d].%s", i, name) }
	if err := c.validateProtocol(field); err != nil {
		return err
	}
	if c.Rate <= 0 || c.Rate > 10000 {
		return fmt.Errorf("%s: %v requests/s, want more than 0 and at most 10000", field("rate"), c.Rate)
	}
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if strings.Trim(c.Method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return fmt.Errorf("%s: %q, want an HTTP method such as POST", field("method"), c.Method)
	}
	if c.Conns == 0 && c.Protocol == report.ProtoHTTP1 {
		c.Conns = defaultConns
	}
	if c.Conns < 0 || c.Conns > 1000 || (c.Conns == 0 && c.Protocol == report.ProtoHTTP1) {
		return fmt.Errorf("%s: %d, want 1 to 1000", field("conns"), c.Conns)
	}
	switch c.Connection {
	case "":
		c.Connection = connKeepAlive
	case connKeepAlive, connNew:
	default:
		return fmt.Errorf("%s: %q, want %q (pooled, the default) or %q (one connection per request)",
			field("connection"), c.Connection, connKeepAlive, connNew)
	}
	c.idleTimeout = 90 * time.Second
	if c.IdleTimeout != "" {
		d, err := time.ParseDuration(c.IdleTimeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s: %q, want a positive duration such as 90s", field("idleTimeout"), c.IdleTimeout)
		}
		c.idleTimeout = d
	}
	c.timeout = 5 * time.Second
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 || d > 5*time.Minute {
			return fmt.Errorf("%s: %q, want a duration from 1ms to 5m such as 5s", field("timeout"), c.Timeout)
		}
		c.timeout = d
	}
	if c.MaxInFlight < 0 {
		return fmt.Errorf("%s: %d, want at least 1 (0: the default)", field("maxInFlight"), c.MaxInFlight)
	}
	if c.MaxInFlight == 0 {
		// as many as can be in flight when every request takes the whole timeout: the cap only
		// bites when the generator itself falls behind, never because the server is slow
		c.MaxInFlight = int(math.Ceil(c.Rate*c.timeout.Seconds())) + cmp.Or(c.Conns, defaultConns)
	}
	switch c.Path {
	case report.PathService:
		if _, err := serviceTarget(*c); err != nil {
			return fmt.Errorf("%s: %w", field("url"), err)
		}
	case report.PathConsul:
		if u, err := url.Parse(c.ConsulAddr); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("%s: %q, want Consul's HTTP address such as http://consul:8500", field("consulAddr"), c.ConsulAddr)
		}
		if c.Service == "" {
			return fmt.Errorf("%s: empty, want the Consul service name", field("service"))
		}
		if c.Port < 0 || c.Port > 65535 {
			return fmt.Errorf("%s: %d, want a port (0: the instance's)", field("port"), c.Port)
		}
		if c.URLPath == "" && c.Protocol != report.ProtoGRPC {
			c.URLPath = "/"
		}
		if c.Protocol != report.ProtoGRPC && !strings.HasPrefix(c.URLPath, "/") {
			return fmt.Errorf("%s: %q, want a path starting with /", field("urlPath"), c.URLPath)
		}
	default:
		return fmt.Errorf("%s: %q, want %q or %q", field("path"), c.Path, report.PathService, report.PathConsul)
	}
	return nil
}

// validateProtocol checks the protocol and the options that depend on it. The modes other than
// http1 stand for callers with their client's defaults: the options that tune a client are
// refused there rather than ignored.
func (c *Config) validateProtocol(field func(string) string) error {
	p, ok := report.ParseProtocol(string(c.Protocol))
	if !ok {
		return fmt.Errorf("%s: %q, want http1 (the default), http1-default, h2c or grpc", field("protocol"), c.Protocol)
	}
	c.Protocol = p
	if p == report.ProtoHTTP1 {
		return nil
	}
	switch {
	case c.Conns != 0:
		return fmt.Errorf("%s: %d with protocol %s, which keeps its client's default pool: leave it out", field("conns"), c.Conns, p)
	case c.IdleTimeout != "":
		return fmt.Errorf("%s: %q with protocol %s, which keeps its client's default idle timeout: leave it out", field("idleTimeout"), c.IdleTimeout, p)
	case c.Connection == connNew && p != report.ProtoHTTP1Default:
		return fmt.Errorf("%s: %q with protocol %s: one connection per request is for http1 and http1-default", field("connection"), c.Connection, p)
	}
	if p != report.ProtoGRPC {
		return nil
	}
	switch {
	case c.Method != "" && c.Method != http.MethodPost:
		return fmt.Errorf("%s: %q with protocol grpc, whose calls are POSTs: leave it out", field("method"), c.Method)
	case c.URLPath != "":
		return fmt.Errorf("%s: %q with protocol grpc, which calls %s: leave it out", field("urlPath"), c.URLPath, workrpc.DoMethod)
	case c.IdempotencyKey:
		return fmt.Errorf("%s: true with protocol grpc, which has no such header: leave it out", field("idempotencyKey"))
	}
	return nil
}

// target is where one request goes.
type target struct {
	url      string
	hostPort string // for the record
}

// targets picks where the next request goes.
type targets interface {
	next() (target, bool) // false when there is none
	graceful.Picker       // for a RetryTransport's tries: host:port
}

type fixed target

func (f fixed) next() (target, bool) { return target(f), true }

// Pick is the one endpoint, for a RetryTransport: the Service picks the pod.
func (f fixed) Pick([]string) (string, error) { return f.hostPort, nil }

// serviceTarget is the service path's one target: its URL, or its gRPC target for grpc.
func serviceTarget(c Config) (fixed, error) {
	if c.Protocol == report.ProtoGRPC {
		return grpcTarget(c.URL)
	}
	return fixedTarget(c.URL)
}

// fixedTarget is the service path's one URL.
func fixedTarget(raw string) (fixed, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fixed{}, fmt.Errorf("%q, want an http:// URL", raw)
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return fixed{url: raw, hostPort: net.JoinHostPort(u.Hostname(), port)}, nil
}

// generator sends cfg.Rate requests per second, open loop (a slow answer does not slow the
// schedule), through one client of its protocol, and records every request.
type generator struct {
	cfg     Config
	caller  caller
	targets targets
	slots   chan struct{} // the in-flight cap
	log     *slog.Logger

	mu      sync.Mutex
	records []report.Record

	sent, failed atomic.Int64 // recorded so far, for /status
}

// caller sends one request of a protocol.
type caller interface {
	// call sends a request to t, within ctx, and fills in rec's outcome, answer and error.
	call(ctx context.Context, t target, rec *report.Record)
	// close releases the connections once the requests in flight are done.
	close()
}

func newGenerator(cfg Config, t targets, log *slog.Logger) *generator {
	var c caller
	if cfg.Protocol == report.ProtoGRPC {
		c = newGRPCCaller(cfg, t)
	} else {
		c = newHTTPCaller(cfg, t)
	}
	return &generator{cfg: cfg, caller: c, targets: t, slots: make(chan struct{}, cfg.MaxInFlight), log: log}
}

// conn labels the records of a new-connection caller, so the report counts them apart.
func (g *generator) conn() report.Conn {
	if g.cfg.Connection == connNew {
		return report.ConnNew
	}
	return report.ConnKeepAlive
}

// newRecord starts the record of a request sent at start.
func (g *generator) newRecord(start time.Time) report.Record {
	return report.Record{Path: g.cfg.Path, Conn: g.conn(), Proto: g.cfg.Protocol, Retry: g.cfg.Retry, Idem: g.cfg.IdempotencyKey, Start: start}
}

// errOverloaded is the error text of a request the generator did not send because too many
// were in flight.
const errOverloaded = "client overloaded"

// run sends until ctx ends, then waits for the requests in flight, each bounded by the timeout.
func (g *generator) run(ctx context.Context) {
	g.log.Info("generator started", "protocol", g.cfg.Protocol.String(), "retry", g.cfg.Retry, "rate", g.cfg.Rate,
		"method", g.cfg.Method, "conns", g.cfg.Conns, "timeout", g.cfg.timeout, "maxInFlight", g.cfg.MaxInFlight,
		"connection", g.cfg.Connection)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		g.caller.close()
		g.log.Info("generator stopped", "sent", g.sent.Load(), "failed", g.failed.Load())
	}()
	// requests carry on when the run is stopped: stopping ends the schedule, not the requests
	reqCtx := context.WithoutCancel(ctx)
	interval := time.Duration(float64(time.Second) / g.cfg.Rate)
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		// every request whose time has come, so a stalled scheduler catches up and the
		// rate holds on average
		if ctx.Err() != nil { // both were ready, and select chose the timer
			return
		}
		now := time.Now()
		for ; !next.After(now); next = next.Add(interval) {
			select {
			case g.slots <- struct{}{}:
				wg.Go(func() {
					defer func() { <-g.slots }()
					g.record(g.one(reqCtx))
				})
			default:
				rec := g.newRecord(now)
				rec.Outcome, rec.Err = report.Other, errOverloaded
				g.record(rec)
			}
		}
		timer.Reset(time.Until(next))
	}
}

// one sends one request and records how it ended.
func (g *generator) one(ctx context.Context) report.Record {
	rec := g.newRecord(time.Now())
	t, ok := g.targets.next()
	if !ok {
		rec.Outcome, rec.Err = report.Other, "no instances"
		return rec
	}
	rec.Target = t.hostPort
	ctx, cancel := context.WithTimeout(ctx, g.cfg.timeout)
	defer cancel()
	g.caller.call(ctx, t, &rec)
	rec.Latency = time.Since(rec.Start)
	return rec
}

// body is what a request sends: a body makes the request one Go's Transport does not retry on
// its own, so a connection closed under it shows as a failure.
var body = []byte(`{"work":1}`)

// httpCaller sends HTTP requests: HTTP/1.1 (tuned or with Go's defaults) or h2c.
type httpCaller struct {
	client *http.Client
	method string
	// idem: a unique Idempotency-Key header per request
	idem bool
	seq  atomic.Uint64
	// traceTarget records the address the request went to, when a RetryTransport chose it
	traceTarget bool
}

func newHTTPCaller(cfg Config, t targets) *httpCaller {
	var rt http.RoundTripper = httpTransport(cfg)
	c := &httpCaller{method: cfg.Method, idem: cfg.IdempotencyKey}
	if cfg.Retry {
		// the Picker chooses each try's endpoint: the Service's name, or Consul's instances
		rt = &graceful.RetryTransport{Base: rt, Picker: t, Timeout: cfg.timeout}
		c.traceTarget = cfg.Path == report.PathConsul
	}
	c.client = &http.Client{Transport: rt}
	return c
}

// httpTransport is the protocol's client.
func httpTransport(cfg Config) *http.Transport {
	if cfg.Protocol == report.ProtoHTTP1 {
		// A client tuned for lastcall's e2e: keep-alive connections reused across requests,
		// HTTP/1.1, idle ones closed after cfg.idleTimeout. No cap on connections per host: a
		// cap would queue requests in the client, and under a slow server those would time out
		// for a reason of the client's own making.
		return &http.Transport{
			DialContext:         (&net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        cfg.Conns * 64, // the consul path talks to every pod
			MaxIdleConnsPerHost: cfg.Conns,
			IdleConnTimeout:     cfg.idleTimeout,
			ForceAttemptHTTP2:   false,
			// "new": Connection: close on every request, so the dataplane routes each one afresh
			DisableKeepAlives: cfg.Connection == connNew,
		}
	}
	// A caller that tuned nothing: Go's http.DefaultTransport settings (90 s idle timeout, 2
	// idle connections kept per host, no cap on connections), without sharing its pool with
	// the control API's client.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.Protocol == report.ProtoH2C {
		// HTTP/2 with prior knowledge for http:// URLs: one connection per host, streams
		// multiplexed on it
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	tr.DisableKeepAlives = cfg.Connection == connNew
	return tr
}

func (c *httpCaller) call(ctx context.Context, t target, rec *report.Record) {
	var rd io.Reader
	if c.method != http.MethodGet && c.method != http.MethodHead {
		rd = bytes.NewReader(body)
	}
	if c.traceTarget {
		rec.Target = "" // the RetryTransport's pick, if a connection was reached
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
			rec.Target = info.Conn.RemoteAddr().String()
		}})
	}
	req, err := http.NewRequestWithContext(ctx, c.method, t.url, rd)
	if err != nil {
		rec.Outcome, rec.Err = report.Other, err.Error()
		return
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "lastcall-loadgen")
	if c.idem {
		req.Header.Set("Idempotency-Key", fmt.Sprintf("%p-%d", c, c.seq.Add(1)))
	}
	resp, err := c.client.Do(req)
	if err == nil {
		rec.Status = resp.StatusCode
		rec.Pod = resp.Header.Get("X-Processed-By")
		// a cut body is a failure too: read it all
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	rec.Outcome = classify(err, rec.Status)
	switch {
	case err != nil:
		rec.Err = err.Error()
	case rec.Outcome != report.OK:
		rec.Err = fmt.Sprintf("HTTP %d", rec.Status)
	}
}

func (c *httpCaller) close() { c.client.CloseIdleConnections() }

func (g *generator) record(r report.Record) {
	g.sent.Add(1)
	if r.Outcome != report.OK {
		g.failed.Add(1)
		g.log.Debug("request failed", "target", r.Target, "outcome", r.Outcome, "status", r.Status, "err", r.Err)
	}
	g.mu.Lock()
	g.records = append(g.records, r)
	g.mu.Unlock()
}

// take hands over the records so far.
func (g *generator) take() []report.Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.records
	g.records = nil
	return out
}

func (g *generator) inFlight() int { return len(g.slots) }

// classify sorts how a request ended into the report's classes, err being the error of the
// request or of reading its body. Only a 2xx answer read to its end is ok.
func classify(err error, status int) report.Outcome {
	if err == nil {
		switch {
		case status >= 200 && status < 300:
			return report.OK
		case status >= 500:
			return report.Status5xx
		default:
			return report.Other
		}
	}
	var nerr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return report.Refused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
		return report.Timeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		lostConnection(err.Error()):
		return report.Reset
	default:
		return report.Other
	}
}

// lostConnection reads, from an error's text, a connection closed or reset under a request by
// the server, where net/http (its HTTP/1.1 and bundled HTTP/2 client) and grpc-go give no
// error value to test.
func lostConnection(msg string) bool {
	for _, s := range []string{
		"server closed idle connection", // HTTP/1.1: errServerClosedIdle
		"server sent GOAWAY",            // HTTP/2: the connection closed before the stream's answer
		"client connection lost",        // HTTP/2: the connection broke
		"stream error",                  // HTTP/2: RST_STREAM from the server
		"RST_STREAM",                    // gRPC: the stream reset
		"connection reset",              // gRPC: ECONNRESET in the transport's text
		"broken pipe",
		"EOF",                  // gRPC: "error reading from server: EOF"
		"transport is closing", // gRPC: the connection closed under the call
		"connection closed",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
