package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// Config is one generator: a constant rate of requests on one path.
type Config struct {
	Path        report.Path `json:"path"`                  // "service" or "consul"
	URL         string      `json:"url,omitempty"`         // service: every request goes here
	ConsulAddr  string      `json:"consulAddr,omitempty"`  // consul: its HTTP API, e.g. http://consul:8500
	Service     string      `json:"service,omitempty"`     // consul: the service name
	Port        int         `json:"port,omitempty"`        // consul: port override (default: the instance's)
	URLPath     string      `json:"urlPath,omitempty"`     // consul: request path (default /)
	Rate        float64     `json:"rate"`                  // requests per second
	Method      string      `json:"method,omitempty"`      // default POST
	Conns       int         `json:"conns,omitempty"`       // keep-alive connections kept per host (default 32)
	Timeout     string      `json:"timeout,omitempty"`     // per request, connect to end of body (default 5s)
	MaxInFlight int         `json:"maxInFlight,omitempty"` // default: rate × timeout + conns
	IdleTimeout string      `json:"idleTimeout,omitempty"` // close a keep-alive connection idle this long (default 90s, Go's)
	// "keep-alive" (default): pooled connections; "new": a new connection for every request,
	// closed after its answer, as callers without pooling do
	Connection string `json:"connection,omitempty"`

	timeout, idleTimeout time.Duration
}

// Config.Connection's values.
const (
	connKeepAlive = "keep-alive"
	connNew       = "new"
)

// validate fills in defaults and names the first bad field, i being the generator's index in
// the start request.
func (c *Config) validate(i int) error {
	field := func(name string) string { return fmt.Sprintf("generators[%d].%s", i, name) }
	if c.Rate <= 0 || c.Rate > 10000 {
		return fmt.Errorf("%s: %v requests/s, want more than 0 and at most 10000", field("rate"), c.Rate)
	}
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if strings.Trim(c.Method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
		return fmt.Errorf("%s: %q, want an HTTP method such as POST", field("method"), c.Method)
	}
	if c.Conns == 0 {
		c.Conns = 32
	}
	if c.Conns < 1 || c.Conns > 1000 {
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
		c.MaxInFlight = int(math.Ceil(c.Rate*c.timeout.Seconds())) + c.Conns
	}
	switch c.Path {
	case report.PathService:
		if _, err := fixedTarget(c.URL); err != nil {
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
		if c.URLPath == "" {
			c.URLPath = "/"
		}
		if !strings.HasPrefix(c.URLPath, "/") {
			return fmt.Errorf("%s: %q, want a path starting with /", field("urlPath"), c.URLPath)
		}
	default:
		return fmt.Errorf("%s: %q, want %q or %q", field("path"), c.Path, report.PathService, report.PathConsul)
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
}

type fixed target

func (f fixed) next() (target, bool) { return target(f), true }

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
// schedule), over one keep-alive transport, and records every request.
type generator struct {
	cfg     Config
	client  *http.Client
	targets targets
	slots   chan struct{} // the in-flight cap
	log     *slog.Logger

	mu      sync.Mutex
	records []report.Record

	sent, failed atomic.Int64 // recorded so far, for /status
}

func newGenerator(cfg Config, t targets, log *slog.Logger) *generator {
	// A client as services use one: keep-alive connections reused across requests, HTTP/1.1.
	// No cap on connections per host: a cap would queue requests in the client, and under a
	// slow server those would time out for a reason of the client's own making.
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.Conns * 64, // the consul path talks to every pod
		MaxIdleConnsPerHost: cfg.Conns,
		IdleConnTimeout:     cfg.idleTimeout,
		ForceAttemptHTTP2:   false,
		// "new": Connection: close on every request, so the dataplane routes each one afresh
		DisableKeepAlives: cfg.Connection == connNew,
	}
	return &generator{cfg: cfg, client: &http.Client{Transport: tr}, targets: t,
		slots: make(chan struct{}, cfg.MaxInFlight), log: log}
}

// conn labels the records of a new-connection caller, so the report counts them apart.
func (g *generator) conn() report.Conn {
	if g.cfg.Connection == connNew {
		return report.ConnNew
	}
	return report.ConnKeepAlive
}

// errOverloaded is the error text of a request the generator did not send because too many
// were in flight.
const errOverloaded = "client overloaded"

// run sends until ctx ends, then waits for the requests in flight, each bounded by the timeout.
func (g *generator) run(ctx context.Context) {
	g.log.Info("generator started", "rate", g.cfg.Rate, "method", g.cfg.Method, "conns", g.cfg.Conns,
		"timeout", g.cfg.timeout, "maxInFlight", g.cfg.MaxInFlight, "connection", g.cfg.Connection)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		g.client.CloseIdleConnections()
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
				g.record(report.Record{Path: g.cfg.Path, Conn: g.conn(), Start: now, Outcome: report.Other, Err: errOverloaded})
			}
		}
		timer.Reset(time.Until(next))
	}
}

// body is what a request sends: a body makes the request one Go's Transport does not retry on
// its own, so a connection closed under it shows as a failure.
var body = []byte(`{"work":1}`)

// one sends one request and reads its answer to the end.
func (g *generator) one(ctx context.Context) report.Record {
	start := time.Now()
	rec := report.Record{Path: g.cfg.Path, Conn: g.conn(), Start: start}
	t, ok := g.targets.next()
	if !ok {
		rec.Outcome, rec.Err = report.Other, "no instances"
		return rec
	}
	rec.Target = t.hostPort
	ctx, cancel := context.WithTimeout(ctx, g.cfg.timeout)
	defer cancel()
	var rd io.Reader
	if g.cfg.Method != http.MethodGet && g.cfg.Method != http.MethodHead {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, g.cfg.Method, t.url, rd)
	if err != nil {
		rec.Outcome, rec.Err = report.Other, err.Error()
		return rec
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "lastcall-loadgen")
	resp, err := g.client.Do(req)
	if err == nil {
		rec.Status = resp.StatusCode
		rec.Pod = resp.Header.Get("X-Processed-By")
		// a cut body is a failure too: read it all
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	rec.Latency = time.Since(start)
	rec.Outcome = classify(err, rec.Status)
	switch {
	case err != nil:
		rec.Err = err.Error()
	case rec.Outcome != report.OK:
		rec.Err = fmt.Sprintf("HTTP %d", rec.Status)
	}
	return rec
}

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
		// net/http's errServerClosedIdle, unexported
		strings.Contains(err.Error(), "server closed idle connection"):
		return report.Reset
	default:
		return report.Other
	}
}
