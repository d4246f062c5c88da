//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

func stopNop(context.Context) error { return nil }

func TestNewRejectsBadConfig(t *testing.T) {
	srv := func() []*http.Server { return []*http.Server{{}} }
	tests := []struct {
		name string
		cfg  graceful.Config
		want string
	}{
		{"nil server", graceful.Config{Servers: []*http.Server{nil}}, "Config.Servers[0] is nil"},
		{"own BaseContext", graceful.Config{Servers: []*http.Server{{BaseContext: func(net.Listener) context.Context { return context.Background() }}}}, "BaseContext is set"},
		{"listeners do not match", graceful.Config{Servers: srv(), Listeners: make([]net.Listener, 2)}, "2 Listeners for 1 Servers"},
		{"nil listener", graceful.Config{Servers: srv(), Listeners: make([]net.Listener, 1)}, "Config.Listeners[0] is nil"},
		{"negative grace period", graceful.Config{Servers: srv(), GracePeriod: -time.Second}, "Config.GracePeriod is -1s"},
		{"negative stop timeout", graceful.Config{Servers: srv(), StopTimeout: -time.Second}, "Config.StopTimeout is -1s"},
		{"negative rollback grace", graceful.Config{Servers: srv(), RollbackGrace: -1}, "Config.RollbackGrace"},
		{"negative signal drain", graceful.Config{Servers: srv(), SignalDrain: -1}, "Config.SignalDrain"},
		{"negative retry after", graceful.Config{Servers: srv(), RetryAfter: -1}, "Config.RetryAfter"},
		{"grace period eaten by the drain", graceful.Config{Servers: srv(), GracePeriod: 5 * time.Second, SignalDrain: 4 * time.Second}, "leaves no time for in-flight requests"},
		{"public admin", graceful.Config{Servers: srv(), AdminAddr: "0.0.0.0:9901"}, "not a loopback address"},
		{"admin on every interface", graceful.Config{Servers: srv(), AdminAddr: ":9901"}, "not a loopback address"},
		{"admin on a pod IP", graceful.Config{Servers: srv(), AdminAddr: "10.1.2.3:9901"}, "AllowPublicAdmin"},
		{"admin by name", graceful.Config{Servers: srv(), AdminAddr: "admin.example:9901"}, "not a loopback address"},
		{"admin without port", graceful.Config{Servers: srv(), AdminAddr: "9901"}, "Config.AdminAddr"},
		{"ready path", graceful.Config{Servers: srv(), ReadyPath: "readyz"}, "Config.ReadyPath"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := graceful.New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	for _, cfg := range []graceful.Config{
		{}, // an app that serves only through components, gRPC for one
		{Servers: srv(), AdminAddr: "0.0.0.0:9901", AllowPublicAdmin: true},
		{Servers: srv(), AdminAddr: "127.0.0.1:9901"},
		{Servers: srv(), AdminAddr: "[::1]:9901"},
		{Servers: srv(), AdminAddr: "localhost:9901"},
		{Servers: srv(), AdminAddr: "-"},
		{Servers: srv(), GracePeriod: 5 * time.Second, SignalDrain: 2 * time.Second},
	} {
		if _, err := graceful.New(cfg); err != nil {
			t.Errorf("New(%+v): %v", cfg, err)
		}
	}
}

func TestAddRejectsBadComponents(t *testing.T) {
	s := newServer(t, graceful.Config{GracePeriod: 3 * time.Second, RollbackGrace: time.Second})
	if err := s.Add(graceful.Component{Name: "db", Stop: stopNop, Budget: time.Second}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		c    graceful.Component
		want string
	}{
		{"no name", graceful.Component{Stop: stopNop, Budget: time.Second}, "Name is empty"},
		{"no stop", graceful.Component{Name: "cache", Budget: time.Second}, `"cache" has no Stop`},
		{"zero budget", graceful.Component{Name: "cache", Stop: stopNop}, "Budget is 0s"},
		{"negative budget", graceful.Component{Name: "cache", Stop: stopNop, Budget: -time.Second}, "Budget is -1s"},
		// 1s rollback + 1s db + 1s cache = the whole 3s grace period: nothing left for requests.
		{"over the grace period", graceful.Component{Name: "cache", Stop: stopNop, Budget: time.Second}, "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Add(tt.c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRunTwiceAndAddAfterRunFail(t *testing.T) {
	s := newServer(t, graceful.Config{})
	done := run(t, s)
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "Run called twice") {
		t.Errorf("second Run: %v", err)
	}
	if err := s.Add(graceful.Component{Name: "late", Stop: stopNop, Budget: time.Second}); err == nil || !strings.Contains(err.Error(), "Add after Run") {
		t.Errorf("Add after Run: %v", err)
	}
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// recordingComponent records its start, its stop and the budget its Stop context carried.
type recordingComponent struct {
	mu     sync.Mutex
	events []string
	budget map[string]time.Duration
}

func (r *recordingComponent) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recordingComponent) component(name string, budget time.Duration, hang bool) graceful.Component {
	return graceful.Component{
		Name: name, Budget: budget,
		Start: func(context.Context) error { r.add("start " + name); return nil },
		Stop: func(ctx context.Context) error {
			dl, _ := ctx.Deadline()
			r.mu.Lock()
			r.budget[name] = time.Until(dl)
			r.mu.Unlock()
			r.add("stop " + name)
			if hang {
				select {} // ignores its context, like a driver stuck in a syscall
			}
			return nil
		},
	}
}

func TestComponentsStopInReverseOrderWithinTheirOwnBudgets(t *testing.T) {
	var logs logBuffer
	s := newServer(t, graceful.Config{Logger: logs.logger()})
	rec := &recordingComponent{budget: map[string]time.Duration{}}
	budgets := map[string]time.Duration{"db": 2 * time.Second, "cache": 300 * time.Millisecond, "consumer": time.Second}
	for _, name := range []string{"db", "cache", "consumer"} {
		if err := s.Add(rec.component(name, budgets[name], name == "cache")); err != nil {
			t.Fatal(err)
		}
	}
	done := run(t, s)
	start := time.Now()
	s.Shutdown()
	err := <-done
	elapsed := time.Since(start)

	if !errors.Is(err, graceful.ErrForced) || !strings.Contains(err.Error(), "component cache overran its budget of 300ms") {
		t.Errorf("Run = %v, want ErrForced naming cache", err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := "start db,start cache,start consumer,stop consumer,stop cache,stop db"
	if got := strings.Join(rec.events, ","); got != want {
		t.Errorf("order = %s\nwant    %s", got, want)
	}
	for name, b := range budgets {
		if got := rec.budget[name]; got > b || got < b-200*time.Millisecond {
			t.Errorf("%s's Stop context ends in %s, want its own budget %s", name, got, b)
		}
	}
	// The hanging cache is abandoned at its budget, and db still gets its turn.
	if elapsed < 300*time.Millisecond || elapsed > 300*time.Millisecond+time.Second {
		t.Errorf("stop took %s; the hanging component's budget is 300ms", elapsed)
	}
	if s.State() != graceful.Stopped {
		t.Errorf("state %s, want stopped", s.State())
	}
	assertSteps(t, logs.String(),
		`msg="stop requested" .*reason="Shutdown called"`,
		`msg="stopping: waiting for in-flight requests; a new request is served if it can finish before the deadline, else gets the shutdown answer"`,
		`msg="in-flight requests done"`,
		`msg="listeners and connections closed"`,
		`msg="servers stopped"`,
		`msg="component stopped" .*name=consumer`,
		`msg="component overran its budget, abandoned" .*name=cache budget=300ms`,
		`msg="component stopped" .*name=db`,
		`msg=stopped .*forced=true`,
	)
}

// assertSteps checks that the log has a line matching each pattern, in that order.
func assertSteps(t *testing.T, log string, patterns ...string) {
	t.Helper()
	lines := strings.Split(log, "\n")
	i := 0
	for _, p := range patterns {
		re := regexp.MustCompile(p)
		for i < len(lines) && !re.MatchString(lines[i]) {
			i++
		}
		if i == len(lines) {
			t.Errorf("no log line matching %q in order; log:\n%s", p, log)
			return
		}
		i++
	}
}

func TestFailedStartStopsWhatStarted(t *testing.T) {
	s := newServer(t, graceful.Config{})
	var stopped []string
	_ = s.Add(graceful.Component{Name: "db", Budget: time.Second, Stop: func(context.Context) error { stopped = append(stopped, "db"); return nil }})
	_ = s.Add(graceful.Component{Name: "queue", Budget: time.Second, Start: func(context.Context) error { return errors.New("broker down") },
		Stop: func(context.Context) error { stopped = append(stopped, "queue"); return nil }})
	err := s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "start queue: broker down") {
		t.Errorf("Run = %v", err)
	}
	if strings.Join(stopped, ",") != "db" {
		t.Errorf("stopped %v, want [db]: only what started", stopped)
	}
	select {
	case <-s.Reached(graceful.Stopped):
	default:
		t.Errorf("state %s after a failed start, want stopped", s.State())
	}
}

func TestBusyPortFailsTheStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newServer(t, graceful.Config{AdminAddr: ln.Addr().String()})
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "admin endpoint") {
		t.Errorf("Run with the admin port taken = %v", err)
	}
}

func TestAdminEndpointAndHealth(t *testing.T) {
	s := newServer(t, graceful.Config{})
	done := run(t, s)
	app, admin := "http://"+s.Addrs()[0], "http://"+s.AdminAddr()

	if code, _, _ := get(t, app+"/readyz"); code != http.StatusOK {
		t.Errorf("/readyz while running = %d", code)
	}
	_, _, body := get(t, admin+"/status")
	if body != `{"state":"running","inFlight":0,"requestsTotal":0,"lastRequest":"","lateServed":0,"lateRejected":0}` {
		t.Errorf("status before any request = %s", body)
	}
	before := time.Now()
	for range 3 {
		get(t, app+"/work")
	}
	code, hdr, body := get(t, admin+"/status")
	// lastcall-prestop reads these exact fields; health probes are not counted.
	var st map[string]any
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status = %d %s %s (%v)", code, hdr.Get("Content-Type"), body, err)
	}
	if len(st) != 6 || st["state"] != "running" || st["inFlight"] != 0.0 || st["requestsTotal"] != 3.0 {
		t.Errorf("status = %s", body)
	}
	if last, err := time.Parse(time.RFC3339Nano, st["lastRequest"].(string)); err != nil || last.Before(before.Add(-time.Second)) || time.Since(last) > time.Minute {
		t.Errorf("lastRequest %v (%v), want the time of the last request", st["lastRequest"], err)
	}
	if code, _, _ := get(t, admin+"/drain"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain = %d, want 405", code)
	}
	for range 2 { // idempotent
		if code, body := post(t, admin+"/drain"); code != http.StatusOK || !strings.Contains(body, `"state":"draining"`) {
			t.Errorf("POST /drain = %d %s", code, body)
		}
	}
	for _, u := range []string{app + "/readyz", admin + "/readyz"} {
		if code, _, _ := get(t, u); code != http.StatusServiceUnavailable {
			t.Errorf("%s while draining = %d, want 503", u, code)
		}
	}
	for _, u := range []string{app + "/livez", admin + "/livez"} {
		if code, _, _ := get(t, u); code != http.StatusOK {
			t.Errorf("%s while draining = %d, want 200", u, code)
		}
	}
	if code, _, body := get(t, app+"/work"); code != http.StatusOK || body != "hi" {
		t.Errorf("request while draining = %d %q, want it served", code, body)
	}
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.State != "stopped" || st.RequestsTotal != 4 {
		t.Errorf("final status %+v", st)
	}
}

func TestDrainWhileStartingAppliesOnceRunning(t *testing.T) {
	s := newServer(t, graceful.Config{})
	release := make(chan struct{})
	_ = s.Add(graceful.Component{Name: "slow start", Budget: time.Second, Stop: stopNop,
		Start: func(context.Context) error { <-release; return nil }})
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	s.Drain("preStop came early")
	if st := s.State(); st != graceful.Starting {
		t.Errorf("state %s during the start, want starting", st)
	}
	close(release)
	awaitState(t, s, graceful.Draining)
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// The stop deadline cancels the handlers' context; a handler that rolls back and says so with
// NotProcessed makes a clean stop, and its caller gets the retryable answer.
func TestDeadlineCancelsHandlersSoTheyRollBack(t *testing.T) {
	entered := make(chan struct{})
	cancelledAfter := make(chan time.Duration, 1)
	var stopAt time.Time
	var srv atomic.Pointer[graceful.Server]
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		cancelledAfter <- time.Since(stopAt)
		srv.Load().NotProcessed(w) // rolled back: nothing happened
	})
	in := startInstance(t, h, graceful.Config{StopTimeout: 300 * time.Millisecond, RollbackGrace: time.Second})
	srv.Store(in.srv)
	answer := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Post("http://"+in.addr+"/pay", "text/plain", strings.NewReader("10 EUR"))
		if err != nil {
			t.Error(err)
			answer <- nil
			return
		}
		resp.Body.Close()
		answer <- resp
	}()
	<-entered
	stopAt = time.Now()
	in.srv.Shutdown()
	if err := in.wait(t); err != nil {
		t.Errorf("Run = %v, want a clean stop: the handler returned within RollbackGrace", err)
	}
	if d := <-cancelledAfter; d < 300*time.Millisecond || d > 800*time.Millisecond {
		t.Errorf("handler context cancelled %s after the stop, want at StopTimeout 300ms", d)
	}
	if resp := <-answer; resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(graceful.MarkerHeader) == "" {
		t.Errorf("the rolled-back request's answer = %+v, want the marked 503 delivered", resp)
	}
}

// With GracePeriod, the in-flight deadline leaves room for the rollback and the components:
// 1.2s − 200ms rollback − 400ms of budgets = 600ms after the stop.
func TestGracePeriodDerivesTheInFlightDeadline(t *testing.T) {
	entered := make(chan struct{})
	cancelledAfter := make(chan time.Duration, 1)
	var stopAt time.Time
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		cancelledAfter <- time.Since(stopAt)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, graceful.Config{
		Servers: []*http.Server{{Handler: h}}, Listeners: []net.Listener{ln},
		GracePeriod: 1200 * time.Millisecond, RollbackGrace: 200 * time.Millisecond,
	})
	for _, name := range []string{"db", "queue"} {
		if err := s.Add(graceful.Component{Name: name, Stop: stopNop, Budget: 200 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
	}
	done := run(t, s)
	go func() {
		if resp, err := http.Get("http://" + ln.Addr().String()); err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	stopAt = time.Now()
	s.Shutdown()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if d := <-cancelledAfter; d < 600*time.Millisecond || d > 1100*time.Millisecond {
		t.Errorf("handler context cancelled %s after the stop, want at 600ms", d)
	}
	if d := time.Since(stopAt); d > 1200*time.Millisecond+500*time.Millisecond {
		t.Errorf("stop took %s, over the 1.2s grace period", d)
	}
}

// A request that reaches the middleware once the server decided to stop, and that cannot finish
// before the stop's deadline, is answered with the marker, not processed, and RetryTransport
// sends it elsewhere, POST included.
func TestLateRequestIsMarkedAndRetriedElsewhere(t *testing.T) {
	held, hold := make(chan struct{}), make(chan struct{})
	var processedByA atomic.Int32
	a := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(held)
		<-hold // keeps a in stopping while the late requests come
	}), graceful.Config{StopTimeout: 10 * time.Second, LateRequestBudget: time.Minute}) // more than is left
	// A second listener serving a's middleware outside its Servers: it stays open while a stops,
	// like a connection that was already open when the stop began.
	late := httptest.NewServer(a.srv.Wrap(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { processedByA.Add(1) })))
	defer late.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	}))
	defer b.Close()

	go func() {
		if resp, err := http.Get("http://" + a.addr + "/hold"); err == nil {
			resp.Body.Close()
		}
	}()
	<-held
	a.srv.Shutdown()
	awaitState(t, a.srv, graceful.Stopping)

	direct, err := http.Post(late.URL+"/orders", "text/plain", strings.NewReader("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	direct.Body.Close()
	if direct.StatusCode != http.StatusServiceUnavailable || direct.Header.Get(graceful.MarkerHeader) != "1" || direct.Header.Get("Retry-After") != "1" {
		t.Errorf("late request answered %d %v; want 503 with %s and Retry-After", direct.StatusCode, direct.Header, graceful.MarkerHeader)
	}
	client := &http.Client{Transport: &graceful.RetryTransport{Picker: ordered{hostOf(late.URL), hostOf(b.URL)}}}
	resp, err := client.Post("http://svc/orders", "text/plain", strings.NewReader("order-2"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != "order-2" {
		t.Errorf("retried POST = %d %q, want b's 200 echo", resp.StatusCode, got)
	}
	close(hold)
	if err := a.wait(t); err != nil {
		t.Error(err)
	}
	if n := processedByA.Load(); n != 0 {
		t.Errorf("a processed %d late requests, want 0", n)
	}
}

func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

// brokenListener fails its first Accept for good, like a listener whose socket went away.
type brokenListener struct{ net.Listener }

func (brokenListener) Accept() (net.Conn, error) { return nil, errors.New("accept broke") }

func TestServerFailureStopsEverything(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	s := newServer(t, graceful.Config{Servers: []*http.Server{{}}, Listeners: []net.Listener{brokenListener{ln}}})
	_ = s.Add(graceful.Component{Name: "db", Budget: time.Second, Stop: func(context.Context) error { close(stopped); return nil }})
	err = s.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "accept broke") {
		t.Errorf("Run = %v, want the server's failure", err)
	}
	select {
	case <-stopped:
	default:
		t.Error("components not stopped after the server failed")
	}
	if s.State() != graceful.Stopped {
		t.Errorf("state %s, want stopped", s.State())
	}
}
