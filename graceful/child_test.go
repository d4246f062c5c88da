//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// childEnv selects the child mode of this test binary (see child).
const childEnv = "GRACEFUL_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child is an app under real signals. "polite" handlers take 300 ms and honour cancellation;
// "stubborn" ones ignore it and never end. It tells the test what happens on stdout: READY with
// its addresses, STARTED per request, STATE on each state change. Exit codes: 0 clean, 3 forced.
func child(mode string) int {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		say("STARTED")
		if mode == "stubborn" {
			select {} // ignores r.Context() on purpose
		}
		select {
		case <-time.After(300 * time.Millisecond):
			fmt.Fprintln(w, "done")
		case <-r.Context().Done():
			http.Error(w, "rolled back", http.StatusServiceUnavailable)
		}
	})
	cfg := graceful.Config{
		Servers:   []*http.Server{{Addr: "127.0.0.1:0", Handler: h}},
		AdminAddr: "127.0.0.1:0",
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
	switch mode {
	case "polite":
		cfg.StopTimeout, cfg.RollbackGrace, cfg.SignalDrain = 2*time.Second, 300*time.Millisecond, time.Second
	case "stubborn":
		// In-flight deadline: 2.5s − 300ms rollback − 200ms component = 2s after SIGTERM.
		cfg.GracePeriod, cfg.RollbackGrace = 2500*time.Millisecond, 300*time.Millisecond
	}
	s, err := graceful.New(cfg)
	if err == nil {
		err = s.Add(graceful.Component{Name: "db", Stop: func(context.Context) error { return nil }, Budget: 200 * time.Millisecond})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		<-s.Reached(graceful.Running)
		say("READY %s %s", s.Addrs()[0], s.AdminAddr())
		for _, st := range []graceful.State{graceful.Draining, graceful.Stopping} {
			<-s.Reached(st)
			say("STATE %s", st)
		}
	}()
	err = s.Run(context.Background())
	<-reported // a quick stop must not exit before the test heard of it
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if errors.Is(err, graceful.ErrForced) {
			return 3
		}
		return 1
	}
	return 0
}

type childProc struct {
	cmd        *exec.Cmd
	app, admin string
	lines      chan string
	logs       *logBuffer
}

func startChild(t *testing.T, mode string) *childProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	c := &childProc{cmd: cmd, lines: make(chan string, 100), logs: &logBuffer{}}
	cmd.Stderr = c.logs // the child's step logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child logs:\n%s", c.logs.String())
		}
	})
	f := strings.Fields(c.await(t, "READY"))
	c.app, c.admin = f[1], f[2]
	return c
}

// await reads the child's lines until one starts with prefix, and returns it.
func (c *childProc) await(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				t.Fatalf("child exited before saying %s", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timeout:
			t.Fatalf("child did not say %s", prefix)
		}
	}
}

// load sends n concurrent requests and returns once the child's handlers have all started.
func (c *childProc) load(t *testing.T, n int) <-chan string {
	t.Helper()
	results := make(chan string, n)
	for range n {
		go func() { results <- fetch("http://" + c.app + "/work") }()
	}
	for range n {
		c.await(t, "STARTED")
	}
	return results
}

// fetch is "CODE BODY" or the error.
func fetch(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	closing := ""
	if resp.Close {
		closing = " (close)"
	}
	return fmt.Sprintf("%d %s%s", resp.StatusCode, strings.TrimSpace(string(b)), closing)
}

func (c *childProc) sigterm(t *testing.T) time.Time {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return time.Now()
}

func (c *childProc) exit(t *testing.T) int {
	t.Helper()
	err := c.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return 0
}

// lastcall-prestop drained the app; SIGTERM then stops it at once, and it exits 0 after its
// in-flight requests completed.
func TestSIGTERMAfterPreStopFinishesInFlightAndExits0(t *testing.T) {
	t.Parallel()
	c := startChild(t, "polite")
	if code, body := post(t, "http://"+c.admin+"/drain"); code != http.StatusOK || !strings.Contains(body, `"state":"draining"`) {
		t.Fatalf("POST /drain = %d %s", code, body)
	}
	results := c.load(t, 20)
	start := c.sigterm(t)
	for range 20 {
		if r := <-results; r != "200 done (close)" {
			t.Errorf("in-flight request ended with %q, want 200 done, closing its connection", r)
		}
	}
	code := c.exit(t)
	elapsed := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	// Already drained: no signal drain; 300ms of work, then the connections close.
	if elapsed > 2*time.Second {
		t.Errorf("exited %s after SIGTERM; StopTimeout is 2s", elapsed)
	}
	assertSteps(t, c.logs.String(), `msg="stop requested" .*reason="signal terminated"`, `in-flight requests done`, `component stopped" .*name=db`, `msg=stopped .*forced=false`)
}

// No preStop hook ran: the first SIGTERM drains (readiness fails, requests are still served and
// told to reconnect) for SignalDrain, then the app stops and exits 0.
func TestSIGTERMWithoutPreStopDrainsFirst(t *testing.T) {
	t.Parallel()
	c := startChild(t, "polite")
	results := c.load(t, 5)
	start := c.sigterm(t)
	c.await(t, "STATE draining")
	if code, _, _ := get(t, "http://"+c.app+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz after SIGTERM = %d, want 503", code)
	}
	if code, _, _ := get(t, "http://"+c.app+"/livez"); code != http.StatusOK {
		t.Errorf("/livez after SIGTERM = %d, want 200", code)
	}
	if r := fetch("http://" + c.app + "/work"); r != "200 done (close)" {
		t.Errorf("request during the signal drain = %q, want served, closing its connection", r)
	}
	for range 5 {
		if r := <-results; r != "200 done" {
			t.Errorf("in-flight request ended with %q, want 200 done", r)
		}
	}
	c.await(t, "STATE stopping")
	stopping := time.Since(start)
	if code := c.exit(t); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if stopping < time.Second {
		t.Errorf("stopping %s after SIGTERM, want after the 1s SignalDrain", stopping)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Errorf("exited %s after SIGTERM; SignalDrain 1s + StopTimeout 2s", elapsed)
	}
}

// A handler that ignores cancellation is cut at the deadline derived from GracePeriod, and the
// app still exits within it, reporting the forced stop.
func TestHandlerIgnoringCancellationIsForcedAtTheDeadline(t *testing.T) {
	t.Parallel()
	c := startChild(t, "stubborn")
	if code, _ := post(t, "http://"+c.admin+"/drain"); code != http.StatusOK {
		t.Fatalf("POST /drain = %d", code)
	}
	results := c.load(t, 5)
	start := c.sigterm(t)
	code := c.exit(t)
	elapsed := time.Since(start)
	if code != 3 {
		t.Errorf("exit code %d, want 3 (ErrForced)", code)
	}
	// 2s in-flight deadline, then 300ms for handlers to roll back, then forced.
	if elapsed < 2300*time.Millisecond || elapsed > 2500*time.Millisecond+500*time.Millisecond {
		t.Errorf("exited %s after SIGTERM; want 2.3s, within the 2.5s grace period", elapsed)
	}
	for range 5 {
		if r := <-results; strings.HasPrefix(r, "200") {
			t.Errorf("a request whose handler never returned got %q", r)
		}
	}
	assertSteps(t, c.logs.String(), `stop deadline passed: cancelling`, `handlers ignored cancellation`, `component stopped" .*name=db`, `msg=stopped .*forced=true`)
	if !bytes.Contains([]byte(c.logs.String()), []byte("requests still running after their context was cancelled")) {
		t.Error("Run's error does not say what was forced")
	}
}
