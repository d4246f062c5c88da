//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// lateApp is a handler for the late-request tests: /hold stays in flight until release is
// closed or its context ends, /slow takes slow, anything else answers "ok" at once.
type lateApp struct {
	held    chan struct{}
	release chan struct{}
	slow    time.Duration
}

func newLateApp(slow time.Duration) *lateApp {
	return &lateApp{held: make(chan struct{}, 16), release: make(chan struct{}), slow: slow}
}

func (a *lateApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/hold":
		a.held <- struct{}{}
		select {
		case <-a.release:
		case <-r.Context().Done():
		}
	case "/slow":
		time.Sleep(a.slow) // the work whose duration the server measures
	}
	_, _ = io.WriteString(w, "ok")
}

// hold sends a request that stays in flight on in until the app's release, on a connection of
// its own, and waits until it is in the handler.
func (a *lateApp) hold(t *testing.T, in *instance) {
	t.Helper()
	go func() {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		if resp, err := (&http.Client{Transport: tr}).Get("http://" + in.addr + "/hold"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	select {
	case <-a.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not start")
	}
}

// A caller that kept its connection alive sends a request while the server stops and still
// waits for another request in flight: it is served (200, Connection: close) when it can finish
// before the deadline, by what the server measured of its requests or was configured with, and
// answered "not processed" (the marked 503) when the deadline is too close.
func TestLateRequestOnAKeptAliveConnection(t *testing.T) {
	tests := []struct {
		name       string
		cfg        graceful.Config
		slow       time.Duration // the kept-alive connection's first request takes this long
		wantServed bool
	}{
		{"quick requests, time left: served", graceful.Config{StopTimeout: 10 * time.Second}, 0, true},
		{"measured 300ms, 10s left: served", graceful.Config{StopTimeout: 10 * time.Second}, 300 * time.Millisecond, true},
		{"measured 1s, under 700ms left: not processed", graceful.Config{StopTimeout: 700 * time.Millisecond}, time.Second, false},
		{"configured a minute, 10s left: not processed", graceful.Config{StopTimeout: 10 * time.Second, LateRequestBudget: time.Minute}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs logBuffer
			tt.cfg.Logger = logs.logger()
			app := newLateApp(tt.slow)
			in := startInstance(t, app, tt.cfg)
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			first := "/first"
			if tt.slow > 0 {
				first = "/slow"
			}
			if resp, err := client.Get("http://" + in.addr + first); err != nil {
				t.Fatal(err)
			} else {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			app.hold(t, in)
			in.srv.Shutdown()
			awaitState(t, in.srv, graceful.Stopping)

			reused := false
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
			})
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+in.addr+"/orders", strings.NewReader("order"))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("late request: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("late request's body: %v", err)
			}
			if !reused {
				t.Error("the late request went out on a new connection, want the kept-alive one")
			}
			if tt.wantServed {
				if resp.StatusCode != http.StatusOK || string(body) != "ok" || !resp.Close || resp.Header.Get(graceful.DrainingHeader) != "1" {
					t.Errorf("late request = %d %q close=%v %v; want 200 ok, Connection: close, %s", resp.StatusCode, body, resp.Close, resp.Header, graceful.DrainingHeader)
				}
			} else if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(graceful.MarkerHeader) != "1" || !resp.Close {
				t.Errorf("late request = %d %v; want the marked 503 with Connection: close", resp.StatusCode, resp.Header)
			}

			close(app.release)
			if err := in.wait(t); err != nil {
				t.Fatal(err)
			}
			served, rejected := uint64(0), uint64(1)
			if tt.wantServed {
				served, rejected = 1, 0
			}
			if st := in.srv.Status(); st.LateServed != served || st.LateRejected != rejected {
				t.Errorf("status %+v, want lateServed %d, lateRejected %d", st, served, rejected)
			}
			if !strings.Contains(logs.String(), "lateRequestNeeds=") {
				t.Errorf("the stop did not log its late-request rule:\n%s", logs.String())
			}
		})
	}
}

// Callers keep sending through the stop while requests are in flight: every request gets either
// a full 200 or the marked 503, never a reset or a cut answer, and every request the server
// accepted, late ones included, ends before the stop stops waiting. The callers use a second
// server on a's middleware that the stop leaves open (like TestLateRequestIsMarkedAndRetriedElsewhere):
// a new connection that reaches a listener as the stop closes it is HTTP/1.1's own race, which
// this test leaves out to see only the server's decisions.
func TestNoRequestIsCutThroughTheStop(t *testing.T) {
	const (
		callers = 8
		held    = 3
	)
	app := newLateApp(0)
	in := startInstance(t, app, graceful.Config{StopTimeout: 2 * time.Second})
	var cut atomic.Int64 // accepted requests still running when the stop's wait ended
	side := httptest.NewServer(in.srv.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Millisecond) // the work
		if in.srv.Context().Err() != nil {
			cut.Add(1) // the stop cancelled the handlers, then closes the connections
		}
		body, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "done %s", body)
	})))
	defer side.Close()
	for range held {
		app.hold(t, in)
	}

	var ok, marked atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(f string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(f, args...))
	}
	stopping := make(chan struct{})
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 20 * time.Second}
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d-%d", c, i)
				resp, err := client.Post(side.URL+"/orders", "text/plain", strings.NewReader(id))
				if err != nil {
					fail("%s: %v", id, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					fail("%s: body: %v", id, err)
					return
				case resp.StatusCode == http.StatusOK && string(body) == "done "+id:
					ok.Add(1)
				case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(graceful.MarkerHeader) == "1":
					marked.Add(1)
					select {
					case <-stopping:
						return // turned away for good: the stop's wait is over or its deadline near
					default:
						fail("%s: marked 503 before the stop", id)
						return
					}
				default:
					fail("%s: %d %q", id, resp.StatusCode, body)
					return
				}
				time.Sleep(time.Millisecond) // the caller's own pace: in-flight requests leave gaps
			}
		}()
	}
	eventually(t, "requests flowing", func() bool { return ok.Load() >= 50 })
	close(stopping)
	in.srv.Shutdown()
	awaitState(t, in.srv, graceful.Stopping)
	eventually(t, "late requests served", func() bool { return in.srv.Status().LateServed >= 50 })
	close(app.release) // the held requests end while the late ones come
	runErr := in.wait(t)
	wg.Wait()

	if len(failures) > 0 {
		t.Errorf("%d failed requests, want 0; first: %v", len(failures), failures[:min(5, len(failures))])
	}
	if n := cut.Load(); n > 0 {
		t.Errorf("%d accepted requests still running when the stop stopped waiting", n)
	}
	if runErr != nil {
		t.Errorf("Run = %v, want a clean stop", runErr)
	}
	st := in.srv.Status()
	if st.LateRejected != uint64(marked.Load()) || marked.Load() != callers {
		t.Errorf("status %+v, %d marked answers; want one per caller, each counted as rejected", st, marked.Load())
	}
	t.Logf("%d requests answered 200 (%d of them late), %d marked", ok.Load(), st.LateServed, marked.Load())
}
