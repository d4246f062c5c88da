package graceful_test

import (
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

// endpoint is a test server that answers as configured and counts what it processed.
func endpoint(t *testing.T, shuttingDown bool, processed *atomic.Int32) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if shuttingDown {
			w.Header().Set(graceful.MarkerHeader, "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		processed.Add(1)
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// refused is an address that refuses connections.
func refused(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func TestRetryTransport(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		hosts     func(t *testing.T, ok *atomic.Int32) []string
		wantErr   bool
		wantCode  int
		processed int32
	}{
		{"marker: POST retried elsewhere with its body", http.MethodPost,
			func(t *testing.T, ok *atomic.Int32) []string {
				return []string{endpoint(t, true, ok), endpoint(t, false, ok)}
			}, false, 200, 1},
		{"refused: GET retried", http.MethodGet,
			func(t *testing.T, ok *atomic.Int32) []string { return []string{refused(t), endpoint(t, false, ok)} }, false, 200, 1},
		{"refused: POST not retried", http.MethodPost,
			func(t *testing.T, ok *atomic.Int32) []string { return []string{refused(t), endpoint(t, false, ok)} }, true, 0, 0},
		{"every endpoint shutting down: the last answer is returned", http.MethodPost,
			func(t *testing.T, ok *atomic.Int32) []string {
				return []string{endpoint(t, true, ok), endpoint(t, true, ok)}
			}, false, 503, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ok atomic.Int32
			hosts := tt.hosts(t, &ok)
			// A picker that always starts with the first host, so the order is the test's.
			client := &http.Client{Transport: &graceful.RetryTransport{Picker: ordered(hosts), MaxTries: 3}}
			req, _ := http.NewRequest(tt.method, "http://svc/orders", strings.NewReader("order-1"))
			resp, err := client.Do(req)
			if tt.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatal("no error")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.wantCode || (tt.wantCode == 200 && string(body) != "order-1") {
					t.Errorf("got %d %q, want %d", resp.StatusCode, body, tt.wantCode)
				}
			}
			if ok.Load() != tt.processed {
				t.Errorf("processed %d times, want %d", ok.Load(), tt.processed)
			}
		})
	}
}

func TestRetryTransportBounds(t *testing.T) {
	var tries atomic.Int32
	slowDown := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tries.Add(1)
		w.Header().Set(graceful.MarkerHeader, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer slowDown.Close()
	host := strings.TrimPrefix(slowDown.URL, "http://")
	client := &http.Client{Transport: &graceful.RetryTransport{Picker: graceful.NewStatic(host), MaxTries: 4}}
	resp, err := client.Get("http://svc/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tries.Load() != 4 {
		t.Errorf("%d tries, want MaxTries 4", tries.Load())
	}

	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer hang.Close()
	client = &http.Client{Transport: &graceful.RetryTransport{Picker: graceful.NewStatic(strings.TrimPrefix(hang.URL, "http://")), Timeout: 200 * time.Millisecond}}
	start := time.Now()
	if resp, err := client.Get("http://svc/"); err == nil {
		resp.Body.Close()
		t.Fatal("no error from a hanging endpoint")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %s with a 200ms Timeout", el)
	}

	resp, err = (&http.Client{Transport: &graceful.RetryTransport{Picker: graceful.NewStatic()}}).Get("http://svc/")
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, graceful.ErrNoEndpoint) {
		t.Errorf("empty picker: %v", err)
	}
}

type ordered []string

func (o ordered) Pick(tried []string) (string, error) {
	for _, h := range o {
		if !slices.Contains(tried, h) {
			return h, nil
		}
	}
	return o[len(o)-1], nil
}
