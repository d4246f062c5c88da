package agent

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// HandlerConfig configures the HTTP API.
type HandlerConfig struct {
	// Token, when set, must come as "Authorization: Bearer TOKEN" on /v1/ requests.
	Token string
	// DefaultTimeout and MaxTimeout bound a wait's timeout.
	DefaultTimeout, MaxTimeout time.Duration
}

// Default wait timeouts.
const (
	DefaultWaitTimeout = 30 * time.Second
	DefaultMaxTimeout  = 5 * time.Minute
)

// maxBodyBytes bounds a request body: 10,000 IPs with a few ports each.
const maxBodyBytes = 4 << 20

// Handler serves the API, /healthz (fails while the ruleset cannot be read), /livez (fails
// when the check loop is stuck) and /metrics.
func (a *Agent) Handler(cfg HandlerConfig) http.Handler {
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = DefaultWaitTimeout
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = DefaultMaxTimeout
	}
	h := &handler{a: a, cfg: cfg}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathWait, h.auth(h.wait))
	mux.HandleFunc("POST "+PathCheck, h.auth(h.check))
	mux.HandleFunc("GET "+PathCheck, h.auth(h.checkQuery))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { probe(w, a.Healthy()) })
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) { probe(w, a.Alive()) })
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.cfg.Metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}

type handler struct {
	a   *Agent
	cfg HandlerConfig
}

func probe(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "%v\n", err)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	if h.cfg.Token == "" {
		return next
	}
	want := []byte("Bearer " + h.cfg.Token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, errors.New("header Authorization: want Bearer and the agent's token"))
			return
		}
		next(w, r)
	}
}

func (h *handler) wait(w http.ResponseWriter, r *http.Request) {
	var body WaitRequest
	if !decode(w, r, &body) {
		return
	}
	req, err := h.waitRequest(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	ans, err := h.a.Wait(r.Context(), req)
	h.reply(w, ans, err)
}

func (h *handler) waitRequest(body WaitRequest) (Request, error) {
	req := Request{Until: body.Until, Timeout: h.cfg.DefaultTimeout}
	switch body.Until {
	case "":
		req.Until = UntilAll
	case UntilAll, UntilAny:
	default:
		return Request{}, badField("until", "%q: want all or any", body.Until)
	}
	if body.Timeout != "" {
		d, err := time.ParseDuration(body.Timeout)
		switch {
		case err != nil || d <= 0:
			return Request{}, badField("timeout", "%q: want a duration above zero such as 30s", body.Timeout)
		case d > h.cfg.MaxTimeout:
			return Request{}, badField("timeout", "%s is more than this agent's --max-timeout %s", d, h.cfg.MaxTimeout)
		}
		req.Timeout = d
	}
	var err error
	if req.IPs, req.Also, err = requestTargets(body.IPs, body.AlsoDraining); err != nil {
		return Request{}, err
	}
	return req, nil
}

func requestTargets(ips, also []TargetJSON) (answer, context []dataplane.Target, err error) {
	if len(ips) == 0 {
		return nil, nil, badField("ips", "empty: list at least one pod IP")
	}
	if answer, err = targets("ips", ips); err != nil {
		return nil, nil, err
	}
	if context, err = targets("alsoDraining", also); err != nil {
		return nil, nil, err
	}
	return answer, context, nil
}

func (h *handler) check(w http.ResponseWriter, r *http.Request) {
	var body CheckRequest
	if !decode(w, r, &body) {
		return
	}
	ips, also, err := requestTargets(body.IPs, body.AlsoDraining)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	h.runCheck(w, r, Request{IPs: ips, Also: also})
}

// checkQuery serves GET /v1/check?ip=A&ip=B, for people: no ports, so a full read.
func (h *handler) checkQuery(w http.ResponseWriter, r *http.Request) {
	var body []TargetJSON
	for _, ip := range r.URL.Query()["ip"] {
		body = append(body, TargetJSON{IP: ip})
	}
	ips, _, err := requestTargets(body, nil)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("query parameter %w", err))
		return
	}
	h.runCheck(w, r, Request{IPs: ips})
}

func (h *handler) runCheck(w http.ResponseWriter, r *http.Request, req Request) {
	// A check waits for a read that starts after it: the one under way, a pause, then its own.
	limit := 2*h.a.cfg.ReadTimeout + h.a.cfg.Fallback
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	ans, err := h.a.Wait(ctx, req)
	if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
		err = &ReadError{Err: fmt.Errorf("no read finished within %s", limit)}
	}
	h.reply(w, ans, err)
}

func (h *handler) reply(w http.ResponseWriter, ans Answer, err error) {
	var readErr *ReadError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, ans)
	case errors.As(err, &readErr):
		w.Header().Set("Retry-After", retryAfter(h.a.cfg.Fallback))
		if ans.Error == "" {
			ans.Error = readErr.Err.Error()
		}
		writeJSON(w, http.StatusServiceUnavailable, ans)
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusTooManyRequests, err)
	case errors.Is(err, context.Canceled):
		// The caller left (nobody reads this), or the agent is stopping.
		w.Header().Set("Retry-After", retryAfter(h.a.cfg.Fallback))
		writeError(w, http.StatusServiceUnavailable, errors.New("lastcall-node is stopping"))
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

func retryAfter(d time.Duration) string {
	return strconv.Itoa(int(math.Ceil(max(d, time.Second).Seconds())))
}

// decode reads a JSON body; a bad one is answered with 400 and false.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("Content-Type %q: want application/json", ct))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("body: %w", err))
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, errors.New("body: want one JSON object"))
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, ErrorJSON{Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
