package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
	ConsulAddr  string      `json:"consulAddr,omitempty"`  // consul: the HTTP API to watch
	Service     string      `json:"service,omitempty"`     // consul: the service name
	Port        int         `json:"port,omitempty"`        // consul: port override (default: the instance's)
	URLPath     string      `json:"urlPath,omitempty"`     // consul: request path (default /)
	Rate        float64     `json:"rate"`                  // requests per second
	Method      string      `json:"method,omitempty"`      // default POST
	Conns       int         `json:"conns,omitempty"`       // idle keep-alive connections kept per host (default 32)
	MaxInFlight int         `json:"maxInFlight,omitempty"` // requests in flight before new ones are recorded as "client overloaded" (default 2000)
	Timeout     string      `json:"timeout,omitempty"`     // per request (default 5s)

	timeout time.Duration
}

// validate fills defaults and names the first bad field (index i in the request).
func (c *Config) validate(i int) error {
	field := func(name string) string { return fmt.Sprintf("generators[%d].%s", i, name) }
	if c.Rate <= 0 || c.Rate > 10000 {
		return fmt.Errorf("%s: %v requests/s, want more than 0 and at most 10000", field("rate"), c.Rate)
	}
	if c.Method == "" {
		c.Method = http.MethodPost
	}
	if c.Conns == 0 {
		c.Conns = 32
	}
	if c.Conns < 1 {
		return fmt.Errorf("%s: %d, want at least 1", field("conns"), c.Conns)
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 2000
	}
	if c.MaxInFlight < 1 {
		return fmt.Errorf("%s: %d, want at least 1", field("maxInFlight"), c.MaxInFlight)
	}
	c.timeout = 5 * time.Second
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 {
			return fmt.Errorf("%s: %q, want a positive duration such as 5s", field("timeout"), c.Timeout)
		}
		c.timeout = d
	}
	switch c.Path {
	case report.PathService:
		if u, err := url.Parse(c.URL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return fmt.Errorf("%s: %q, want an http:// URL", field("url"), c.URL)
		}
	case report.PathConsul:
		if u, err := url.Parse(c.ConsulAddr); err != nil || u.Host == "" {
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
	default:
		return fmt.Errorf("%s: %q, want %q or %q", field("path"), c.Path, report.PathService, report.PathConsul)
	}
	return nil
}

// targets picks where the next request goes.
type targets interface {
	next() (string, bool) // URL, false when there is none
}

type fixedTarget string

func (f fixedTarget) next() (string, bool) { return string(f), true }

// generator sends cfg.Rate requests per second, open loop (a slow answer does not slow the
// schedule), over one keep-alive transport, and records every request.
type generator struct {
	cfg     Config
	client  *http.Client
	targets targets
	slots   chan struct{} // in-flight cap
	log     *slog.Logger

	mu      sync.Mutex
	records []report.Record
	sent    atomic.Int64
	failed  atomic.Int64
}

func newGenerator(cfg Config, t targets, log *slog.Logger) *generator {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: cfg.Conns,
		MaxIdleConns:        cfg.Conns * 16,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &generator{cfg: cfg, client: &http.Client{Transport: tr}, targets: t,
		slots: make(chan struct{}, cfg.MaxInFlight), log: log}
}

// run sends until ctx ends, then waits for the requests in flight (each bounded by the timeout).
func (g *generator) run(ctx context.Context) {
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / g.cfg.Rate)
	next := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			g.client.CloseIdleConnections()
			return
		case <-timer.C:
		}
		// fire every request whose time has come (catches up after a pause of the scheduler)
		for now := time.Now(); !next.After(now); next = next.Add(interval) {
			select {
			case g.slots <- struct{}{}:
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-g.slots }()
					g.one(context.WithoutCancel(ctx))
				}()
			default:
				g.record(report.Record{Path: g.cfg.Path, Start: now, Outcome: report.Other, Err: "client overloaded: in-flight cap reached"})
			}
		}
		timer.Reset(time.Until(next))
	}
}

var body = []byte(`{"work":1}`)

func (g *generator) one(ctx context.Context) {
	start := time.Now()
	rec := report.Record{Path: g.cfg.Path, Start: start}
	target, ok := g.targets.next()
	if !ok {
		rec.Outcome, rec.Err = report.Other, "no instances"
		g.record(rec)
		return
	}
	if u, err := url.Parse(target); err == nil {
		rec.Target = u.Host
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, g.cfg.Method, target, bytes.NewReader(body))
	if err != nil {
		rec.Outcome, rec.Err = report.Other, err.Error()
		g.record(rec)
		return
	}
	req.Header.Set("Content-Type", "application/json")
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
	if err != nil {
		rec.Err = err.Error()
	} else if rec.Outcome != report.OK {
		rec.Err = fmt.Sprintf("HTTP %d", rec.Status)
	}
	g.record(rec)
}

func (g *generator) record(r report.Record) {
	g.sent.Add(1)
	if r.Outcome != report.OK {
		g.failed.Add(1)
		g.log.Debug("request failed", "path", r.Path, "target", r.Target, "outcome", r.Outcome, "err", r.Err)
	}
	g.mu.Lock()
	g.records = append(g.records, r)
	g.mu.Unlock()
}

func (g *generator) take() []report.Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.records
	g.records = nil
	return out
}

// classify sorts a request's end into the report's classes: only a 2xx answer read to its end
// is ok.
func classify(err error, status int) report.Outcome {
	if err != nil {
		var nerr net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return report.Refused
		case errors.Is(err, context.DeadlineExceeded), errors.As(err, &nerr) && nerr.Timeout():
			return report.Timeout
		case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
			errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
			strings.Contains(err.Error(), "server closed idle connection"):
			return report.Reset
		default:
			return report.Other
		}
	}
	switch {
	case status >= 200 && status < 300:
		return report.OK
	case status >= 500:
		return report.Status5xx
	default:
		return report.Other
	}
}

// decodeConfigs reads a start request.
func decodeConfigs(r io.Reader) (string, []Config, error) {
	var req struct {
		Name       string   `json:"name"`
		Generators []Config `json:"generators"`
	}
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", nil, fmt.Errorf("body: %w", err)
	}
	if req.Name == "" {
		return "", nil, errors.New("name: empty, want a run name")
	}
	if len(req.Generators) == 0 {
		return "", nil, errors.New("generators: empty, want at least one")
	}
	for i := range req.Generators {
		if err := req.Generators[i].validate(i); err != nil {
			return "", nil, err
		}
	}
	return req.Name, req.Generators, nil
}
