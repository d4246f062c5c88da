package main

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// control is the HTTP API over the runs in progress.
type control struct {
	base       context.Context // runs end with it
	log        *slog.Logger
	consulWait time.Duration // for Consul's first answer before a run starts

	mu       sync.Mutex
	runs     map[string]*run
	starting map[string]bool // names reserved by a start in progress
}

// run is a named set of generators started together.
type run struct {
	name    string
	started time.Time
	cancel  context.CancelFunc
	gens    []*generator
	done    chan struct{} // closed when every generator has returned
}

func newControl(base context.Context, log *slog.Logger) *control {
	return &control{base: base, log: log, consulWait: 15 * time.Second, runs: map[string]*run{}, starting: map[string]bool{}}
}

func (c *control) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", c.start)
	mux.HandleFunc("POST /stop", c.stop)
	mux.HandleFunc("GET /status", c.status)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

// startRequest is POST /start's body.
type startRequest struct {
	Name       string   `json:"name"`
	Generators []Config `json:"generators"`
}

func decodeStart(r io.Reader) (startRequest, error) {
	var req startRequest
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("body: %w", err)
	}
	if strings.TrimSpace(req.Name) == "" {
		return req, errors.New("name: empty, want a run name")
	}
	if len(req.Generators) == 0 {
		return req, errors.New("generators: empty, want at least one")
	}
	for i := range req.Generators {
		if err := req.Generators[i].validate(i); err != nil {
			return req, err
		}
	}
	return req, nil
}

// start: 202 once every generator runs; 400 naming the bad field; 409 if the name is running;
// 502 if Consul does not answer.
func (c *control) start(w http.ResponseWriter, r *http.Request) {
	req, err := decodeStart(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		http.Error(w, oneLine(err), http.StatusBadRequest)
		return
	}
	// reserve the name: waiting for Consul below must not hold up /status or /stop
	c.mu.Lock()
	_, running := c.runs[req.Name]
	busy := running || c.starting[req.Name]
	if !busy {
		c.starting[req.Name] = true
	}
	c.mu.Unlock()
	if busy {
		http.Error(w, fmt.Sprintf("name: run %q is in progress; stop it first", req.Name), http.StatusConflict)
		return
	}
	defer func() {
		c.mu.Lock()
		delete(c.starting, req.Name)
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(c.base)
	ru := &run{name: req.Name, cancel: cancel, done: make(chan struct{})}
	log := c.log.With("run", req.Name)
	for i, cfg := range req.Generators {
		glog := log.With("path", cfg.Path, "protocol", cfg.Protocol.String(), "generator", i)
		var t targets
		switch cfg.Path {
		case report.PathConsul:
			ct, err := watchConsul(ctx, cfg, glog)
			if err != nil {
				cancel()
				http.Error(w, oneLine(fmt.Errorf("generators[%d].consulAddr: %w", i, err)), http.StatusBadRequest)
				return
			}
			// a generator that started before Consul's first answer would fail its first
			// requests with "no instances"
			wctx, wcancel := context.WithTimeout(r.Context(), c.consulWait)
			err = ct.waitReady(wctx)
			wcancel()
			if err != nil {
				cancel()
				http.Error(w, oneLine(fmt.Errorf("generators[%d].consulAddr: %w", i, err)), http.StatusBadGateway)
				return
			}
			t = ct
		default:
			t, _ = serviceTarget(cfg) // validated
		}
		ru.gens = append(ru.gens, newGenerator(cfg, t, glog))
	}
	var wg sync.WaitGroup
	for _, g := range ru.gens {
		wg.Go(func() { g.run(ctx) })
	}
	go func() { wg.Wait(); close(ru.done) }()
	ru.started = time.Now()
	c.mu.Lock()
	c.runs[req.Name] = ru
	c.mu.Unlock()
	log.Info("run started", "generators", len(ru.gens))
	writeJSON(w, r, http.StatusAccepted, map[string]any{"name": req.Name, "generators": len(ru.gens)})
}

// stop ends a run's schedule, waits for its requests in flight (each bounded by its timeout)
// and answers every record: {"records":[...]}.
func (c *control) stop(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		http.Error(w, "name: missing, want /stop?name=<run>", http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	ru, ok := c.runs[name]
	delete(c.runs, name)
	c.mu.Unlock()
	if !ok {
		http.Error(w, fmt.Sprintf("name: no run %q in progress", name), http.StatusNotFound)
		return
	}
	ru.cancel()
	<-ru.done
	recs := []report.Record{}
	for _, g := range ru.gens {
		recs = append(recs, g.take()...)
	}
	c.log.Info("run stopped", "run", name, "records", len(recs), "took", time.Since(ru.started).Round(time.Millisecond))
	writeJSON(w, r, http.StatusOK, map[string]any{"records": recs})
}

type generatorStatus struct {
	Path     report.Path `json:"path"`
	Protocol string      `json:"protocol"`
	Retry    bool        `json:"retry,omitempty"`
	Rate     float64     `json:"rate"`
	Sent     int64       `json:"sent"`
	Failed   int64       `json:"failed"`
	InFlight int         `json:"inFlight"`
}

type runStatus struct {
	Name       string            `json:"name"`
	Started    time.Time         `json:"started"`
	Generators []generatorStatus `json:"generators"`
}

// status lists the runs in progress, by name, with their counts so far.
func (c *control) status(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Runs []runStatus `json:"runs"`
	}{Runs: []runStatus{}}
	c.mu.Lock()
	for _, ru := range c.runs {
		rs := runStatus{Name: ru.name, Started: ru.started}
		for _, g := range ru.gens {
			rs.Generators = append(rs.Generators, generatorStatus{Path: g.cfg.Path, Protocol: g.cfg.Protocol.String(), Retry: g.cfg.Retry, Rate: g.cfg.Rate,
				Sent: g.sent.Load(), Failed: g.failed.Load(), InFlight: g.inFlight()})
		}
		out.Runs = append(out.Runs, rs)
	}
	c.mu.Unlock()
	slices.SortFunc(out.Runs, func(a, b runStatus) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, r, http.StatusOK, out)
}

// writeJSON answers v, gzipped when the client accepts it: a stop answer holds every record.
func writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Add("Vary", "Accept-Encoding")
	var out io.Writer = w
	if acceptsGzip(r.Header.Get("Accept-Encoding")) {
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		defer func() { _ = gz.Close() }()
		out = gz
	}
	w.WriteHeader(code)
	// the status is sent: an error here is the client gone, nothing left to tell it
	_ = json.NewEncoder(out).Encode(v)
}

// acceptsGzip reads an Accept-Encoding header: gzip, unless with q=0.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// oneLine keeps an error answer on one line.
func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }
