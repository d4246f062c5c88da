//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// endpoint kinds for the RetryTransport tests.
const (
	serving      = iota // processes the request and echoes its body
	draining            // processes it too, with the drain hint
	shuttingDown        // answers with the marker, processes nothing
	refusing            // refuses connections
	hangingUp           // reads the whole request, then closes the connection without answering
)

// endpoint starts one endpoint of the given kind; hits counts the requests it read.
func endpoint(t *testing.T, kind int, hits *atomic.Int32) string {
	t.Helper()
	if kind == refusing {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch kind {
		case draining:
			w.Header().Set(graceful.DrainingHeader, "1")
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		case shuttingDown:
			w.Header().Set(graceful.MarkerHeader, "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		case hangingUp:
			_, _ = io.ReadAll(r.Body)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
		default:
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		}
	}))
	t.Cleanup(srv.Close)
	return hostOf(srv.URL)
}

// ordered is a Picker that goes through its hosts in order, so that a test decides the tries.
type ordered []string

func (o ordered) Pick(tried []string) (string, error) {
	for _, h := range o {
		if !slices.Contains(tried, h) {
			return h, nil
		}
	}
	return o[len(o)-1], nil
}

func TestRetryTransport(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		first    int // kind of the first endpoint tried; the second one serves
		wantCode int // 0: an error
		wantHits [2]int32
	}{
		{"marker: POST retried elsewhere with its body", http.MethodPost, shuttingDown, 200, [2]int32{1, 1}},
		{"marker: PATCH retried elsewhere", http.MethodPatch, shuttingDown, 200, [2]int32{1, 1}},
		{"refused: GET retried", http.MethodGet, refusing, 200, [2]int32{0, 1}},
		{"refused: PUT retried", http.MethodPut, refusing, 200, [2]int32{0, 1}},
		{"refused: POST not retried", http.MethodPost, refusing, 0, [2]int32{0, 0}},
		// The request was written: the server may have run it, so even a GET is not repeated.
		{"hang-up after the request: GET not retried", http.MethodGet, hangingUp, 0, [2]int32{1, 0}},
		{"hang-up after the request: POST not retried", http.MethodPost, hangingUp, 0, [2]int32{1, 0}},
		{"served at once", http.MethodPost, serving, 200, [2]int32{1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits [2]atomic.Int32
			hosts := ordered{endpoint(t, tt.first, &hits[0]), endpoint(t, serving, &hits[1])}
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: &graceful.RetryTransport{Base: tr, Picker: hosts, MaxTries: 3}}
			req, _ := http.NewRequest(tt.method, "http://svc/orders", strings.NewReader("order-1"))
			resp, err := client.Do(req)
			switch {
			case tt.wantCode == 0 && err == nil:
				resp.Body.Close()
				t.Fatalf("got %d, want an error", resp.StatusCode)
			case tt.wantCode != 0 && err != nil:
				t.Fatal(err)
			case err == nil:
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode || string(body) != "order-1" {
					t.Errorf("got %d %q, want %d with the body echoed", resp.StatusCode, body, tt.wantCode)
				}
			}
			if got := [2]int32{hits[0].Load(), hits[1].Load()}; got != tt.wantHits {
				t.Errorf("endpoints hit %v times, want %v", got, tt.wantHits)
			}
		})
	}
}

func TestRetryTransportReturnsTheLastMarkedAnswer(t *testing.T) {
	var hits atomic.Int32
	host := endpoint(t, shuttingDown, &hits)
	client := &http.Client{Transport: &graceful.RetryTransport{Picker: graceful.NewStatic(host), MaxTries: 4}}
	resp, err := client.Post("http://svc/", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(graceful.MarkerHeader) == "" {
		t.Errorf("got %d %v, want the marked 503", resp.StatusCode, resp.Header)
	}
	if hits.Load() != 4 {
		t.Errorf("%d tries, want MaxTries 4", hits.Load())
	}
}

func TestRetryTransportTimeoutCoversEverything(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	client := &http.Client{Transport: &graceful.RetryTransport{Picker: graceful.NewStatic(hostOf(hang.URL)), Timeout: 200 * time.Millisecond}}
	start := time.Now()
	resp, err := client.Get("http://svc/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the deadline", err)
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %s with a 200ms Timeout", el)
	}
}

func TestRetryTransportBadUse(t *testing.T) {
	tests := []struct {
		name string
		rt   *graceful.RetryTransport
		want string
	}{
		{"no picker", &graceful.RetryTransport{}, "Picker is nil"},
		{"negative tries", &graceful.RetryTransport{Picker: graceful.NewStatic("x:1"), MaxTries: -1}, "MaxTries is -1"},
		{"negative timeout", &graceful.RetryTransport{Picker: graceful.NewStatic("x:1"), Timeout: -time.Second}, "Timeout is -1s"},
		{"no endpoint", &graceful.RetryTransport{Picker: graceful.NewStatic()}, graceful.ErrNoEndpoint.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &closeTracker{Reader: strings.NewReader("x")}
			req, _ := http.NewRequest(http.MethodPost, "http://svc/", body)
			resp, err := tt.rt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
			if !body.closed {
				t.Error("request body not closed")
			}
		})
	}
}

// A body without GetBody is buffered for the retries without changing the caller's request.
func TestRetryTransportLeavesTheRequestAlone(t *testing.T) {
	var hits [2]atomic.Int32
	hosts := ordered{endpoint(t, shuttingDown, &hits[0]), endpoint(t, serving, &hits[1])}
	body := &closeTracker{Reader: strings.NewReader("order-9")}
	req, _ := http.NewRequest(http.MethodPost, "http://svc/orders", body)
	resp, err := (&graceful.RetryTransport{Picker: hosts}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "order-9" {
		t.Errorf("second try got body %q", got)
	}
	if req.URL.Host != "svc" || req.Host != "svc" || req.GetBody != nil || req.Body != io.ReadCloser(body) || !body.closed {
		t.Errorf("request changed or body not closed: host %s/%s, GetBody %v, closed %v", req.URL.Host, req.Host, req.GetBody != nil, body.closed)
	}
}

func TestStaticPickerAvoidsTriedEndpoints(t *testing.T) {
	p := graceful.NewStatic("a:1", "b:1", "c:1")
	seen := map[string]int{}
	for range 30 {
		h, err := p.Pick([]string{"b:1"})
		if err != nil {
			t.Fatal(err)
		}
		seen[h]++
	}
	if seen["b:1"] != 0 || seen["a:1"] == 0 || seen["c:1"] == 0 {
		t.Errorf("picks %v: want a and c in turn, never the tried b", seen)
	}
	if h, err := p.Pick([]string{"a:1", "b:1", "c:1"}); err != nil || h == "" {
		t.Errorf("all tried: %q, %v; want one of them again", h, err)
	}
	p.Set()
	if _, err := p.Pick(nil); !errors.Is(err, graceful.ErrNoEndpoint) {
		t.Errorf("empty: %v", err)
	}
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

// Callers move off an endpoint that said it is going away, even with a static list; an endpoint
// is still used when no other is left.
func TestRetryTransportAvoidsEndpointsGoingAway(t *testing.T) {
	tests := []struct {
		name     string
		kind     int
		avoidFor time.Duration
		others   int   // serving endpoints besides it
		wantHits int32 // of 10 requests, how many reach it
	}{
		{"draining: left out after its first answer", draining, 0, 1, 1},
		{"refusing: left out after the first refusal", refusing, 0, 1, 1},
		{"shutting down: left out after the first marker", shuttingDown, 0, 1, 1},
		{"avoidance off", draining, -1, 1, 5},
		{"avoidance expired", draining, time.Nanosecond, 1, 5},
		{"no other endpoint: still used", draining, 0, 0, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hits, others atomic.Int32
			hosts := []string{endpoint(t, tt.kind, &hits)}
			for range tt.others {
				hosts = append(hosts, endpoint(t, serving, &others))
			}
			var tries tryCounts
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: &graceful.RetryTransport{Base: countingTransport{base: tr, counts: &tries},
				Picker: graceful.NewStatic(hosts...), AvoidFor: tt.avoidFor}}
			for range 10 {
				resp, err := client.Get("http://svc/")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
			}
			if tt.kind == refusing {
				hits.Store(int32(tries.errored.Load()))
			}
			if got := hits.Load(); got != tt.wantHits {
				t.Errorf("it got %d of 10 requests, want %d", got, tt.wantHits)
			}
		})
	}
}
