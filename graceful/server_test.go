package graceful_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

func newServer(t *testing.T, cfg graceful.Config) *graceful.Server {
	t.Helper()
	if cfg.Servers == nil {
		cfg.Servers = []*http.Server{{Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") })}}
	}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	cfg.Signals = []os.Signal{}
	cfg.Logger = quietLogger()
	s, err := graceful.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBadUseFailsClearly(t *testing.T) {
	srv := []*http.Server{{}}
	tests := []struct {
		name string
		cfg  graceful.Config
		want string
	}{
		{"no servers", graceful.Config{}, "Config.Servers is empty"},
		{"negative stop timeout", graceful.Config{Servers: srv, StopTimeout: -time.Second}, "Config.StopTimeout"},
		{"negative rollback grace", graceful.Config{Servers: srv, RollbackGrace: -1}, "Config.RollbackGrace"},
		{"negative signal drain", graceful.Config{Servers: srv, SignalDrain: -1}, "Config.SignalDrain"},
		{"public admin", graceful.Config{Servers: srv, AdminAddr: "0.0.0.0:9901"}, "not a loopback address"},
		{"admin on a pod IP", graceful.Config{Servers: srv, AdminAddr: "10.1.2.3:9901"}, "AllowPublicAdmin"},
		{"bad admin address", graceful.Config{Servers: srv, AdminAddr: "9901"}, "Config.AdminAddr"},
		{"listeners do not match", graceful.Config{Servers: srv, Listeners: make([]net.Listener, 2)}, "Listeners"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := graceful.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	if _, err := graceful.New(graceful.Config{Servers: srv, AdminAddr: "0.0.0.0:9901", AllowPublicAdmin: true}); err != nil {
		t.Errorf("AllowPublicAdmin: %v", err)
	}
	for _, addr := range []string{"127.0.0.1:9901", "[::1]:9901", "localhost:9901", "-"} {
		if _, err := graceful.New(graceful.Config{Servers: srv, AdminAddr: addr}); err != nil {
			t.Errorf("admin %s: %v", addr, err)
		}
	}

	s := newServer(t, graceful.Config{})
	for _, c := range []graceful.Component{{Name: "", Stop: stopNop}, {Name: "db"}, {Name: "db", Stop: stopNop, Budget: -time.Second}} {
		if err := s.Add(c); err == nil {
			t.Errorf("Add(%+v) accepted", c)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	awaitState(t, s, graceful.Running)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("second Run: %v", err)
	}
	if err := s.Add(graceful.Component{Name: "late", Stop: stopNop}); err == nil {
		t.Error("Add after Run accepted")
	}
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func stopNop(context.Context) error { return nil }

func TestComponentsStopInReverseOrderWithinTheirBudgets(t *testing.T) {
	s := newServer(t, graceful.Config{})
	var mu sync.Mutex
	var events []string
	record := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	for _, name := range []string{"db", "cache", "consumer"} {
		c := graceful.Component{Name: name, Budget: 200 * time.Millisecond,
			Start: func(context.Context) error { record("start " + name); return nil },
			Stop:  func(context.Context) error { record("stop " + name); return nil }}
		if name == "cache" {
			c.Stop = func(context.Context) error { record("stop cache"); select {} } // hangs, ignoring its context
		}
		if err := s.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	awaitState(t, s, graceful.Running)
	start := time.Now()
	s.Shutdown()
	err := <-done
	elapsed := time.Since(start)
	if !errors.Is(err, graceful.ErrForced) || !strings.Contains(err.Error(), "cache") {
		t.Errorf("Run = %v, want ErrForced naming cache", err)
	}
	want := "start db,start cache,start consumer,stop consumer,stop cache,stop db"
	if got := strings.Join(events, ","); got != want {
		t.Errorf("order = %s\nwant    %s", got, want)
	}
	if elapsed > 200*time.Millisecond+500*time.Millisecond {
		t.Errorf("stop took %s; the hanging component's budget is 200ms", elapsed)
	}
	if s.State() != graceful.Stopped {
		t.Errorf("state %s, want stopped", s.State())
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	s := newServer(t, graceful.Config{})
	var stopped []string
	_ = s.Add(graceful.Component{Name: "db", Stop: func(context.Context) error { stopped = append(stopped, "db"); return nil }})
	_ = s.Add(graceful.Component{Name: "queue", Start: func(context.Context) error { return errors.New("broker down") }, Stop: stopNop})
	err := s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "start queue: broker down") {
		t.Errorf("Run = %v", err)
	}
	if len(stopped) != 1 {
		t.Errorf("stopped %v, want [db]", stopped)
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
	return resp.StatusCode, resp.Header, string(b)
}

func TestAdminEndpointAndHealth(t *testing.T) {
	s := newServer(t, graceful.Config{})
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	awaitState(t, s, graceful.Running)
	app, admin := "http://"+s.Addrs()[0], "http://"+s.AdminAddr()

	if code, _, _ := get(t, app+"/readyz"); code != 200 {
		t.Errorf("readyz while running = %d", code)
	}
	for range 3 {
		get(t, app+"/work")
	}
	_, _, body := get(t, admin+"/status")
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	// lastcall-prestop reads these exact fields; health probes are not counted.
	if st["state"] != "running" || st["inFlight"] != 0.0 || st["requestsTotal"] != 3.0 || st["lastRequest"] == "" {
		t.Errorf("status = %s", body)
	}
	if code, _, _ := get(t, admin+"/drain"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain = %d, want 405", code)
	}
	resp, err := http.Post(admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, u := range []string{app + "/readyz", admin + "/readyz"} {
		if code, _, _ := get(t, u); code != 503 {
			t.Errorf("%s while draining = %d, want 503", u, code)
		}
	}
	if code, _, _ := get(t, app+"/livez"); code != 200 {
		t.Errorf("livez while draining = %d, want 200", code)
	}
	resp, err = http.Get(app + "/work")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The client transport consumes the Connection header and reports it as Close.
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Errorf("request while draining = %d, close=%v; want 200 and a closing connection", resp.StatusCode, resp.Close)
	}
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
