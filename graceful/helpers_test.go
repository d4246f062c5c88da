//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// logBuffer collects a Server's log lines, to assert on the steps it logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// protocols is what a client speaks: HTTP/1.1, or HTTP/2 with prior knowledge (h2c).
func protocols(h2 bool) *http.Protocols {
	p := new(http.Protocols)
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return p
}

// serverProtocols is what the test servers speak: both, the client picks.
func serverProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// instance is one app replica on loopback, running until the test ends.
type instance struct {
	srv  *graceful.Server
	addr string
	done chan error // Run's result; put back by whoever takes it, for the cleanup
}

func startInstance(t *testing.T, h http.Handler, cfg graceful.Config) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Servers = []*http.Server{{Handler: h, Protocols: serverProtocols(), ReadHeaderTimeout: 5 * time.Second}}
	cfg.Listeners = []net.Listener{ln}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	cfg.Signals = []os.Signal{} // the test process's own signals are not the instance's
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := graceful.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{srv: s, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { in.done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Shutdown()
		in.done <- <-in.done
	})
	awaitState(t, s, graceful.Running)
	return in
}

// wait stops waiting for the instance's Run and returns its result.
func (in *instance) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-in.done:
		in.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// newServer is a Server with one app server on a free loopback port, not yet running.
func newServer(t *testing.T, cfg graceful.Config) *graceful.Server {
	t.Helper()
	if cfg.Servers == nil {
		cfg.Servers = []*http.Server{{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") })}}
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	cfg.Signals = []os.Signal{}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	s, err := graceful.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// run runs s until the test ends (or the test stops it); the channel gives Run's result.
func run(t *testing.T, s *graceful.Server) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	t.Cleanup(s.Shutdown)
	awaitState(t, s, graceful.Running)
	return done
}

func awaitState(t *testing.T, s *graceful.Server, want graceful.State) {
	t.Helper()
	select {
	case <-s.Reached(want):
	case <-time.After(10 * time.Second):
		t.Fatalf("state %s, want %s", s.State(), want)
	}
	if got := s.State(); got == graceful.Stopped && want != graceful.Stopped {
		t.Fatalf("server stopped while waiting for %s", want)
	}
}

func get(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// eventually waits until cond holds, checking it every few milliseconds, for at most 20 s: a
// condition, not a sleep, ends the wait (graceful's tests stay without Gomega, so that the module
// adds nothing to a service's graph).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
