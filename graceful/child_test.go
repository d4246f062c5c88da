package graceful_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// childEnv selects the child mode of this test binary: "polite" handlers honour cancellation,
// "stubborn" ones ignore it.
const childEnv = "GRACEFUL_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode))
	}
	os.Exit(m.Run())
}

// child serves requests that take 300 ms (polite) or forever (stubborn) and stops on SIGTERM.
func child(mode string) int {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mode == "stubborn" {
			time.Sleep(time.Hour) // ignores r.Context() on purpose
		}
		select {
		case <-time.After(300 * time.Millisecond):
			fmt.Fprintln(w, "done")
		case <-r.Context().Done():
			http.Error(w, "rolled back", http.StatusServiceUnavailable)
		}
	})
	s, err := graceful.New(graceful.Config{
		Servers:     []*http.Server{{Addr: "127.0.0.1:0", Handler: h}},
		AdminAddr:   "127.0.0.1:0",
		StopTimeout: 2 * time.Second, RollbackGrace: 300 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	go func() {
		for s.AdminAddr() == "" || s.State() != graceful.Running {
			time.Sleep(time.Millisecond)
		}
		fmt.Printf("READY %s %s\n", s.Addrs()[0], s.AdminAddr())
	}()
	if err := s.Run(context.Background()); err != nil {
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
}

func startChild(t *testing.T, mode string) *childProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	var logs bytes.Buffer
	cmd.Stderr = &logs // the child's step logs, shown when the test fails
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("child logs:\n%s", logs.String())
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 3 || f[0] != "READY" {
		t.Fatalf("child said %q (%v)", line, err)
	}
	return &childProc{cmd: cmd, app: f[1], admin: f[2]}
}

func (c *childProc) status(t *testing.T) graceful.Status {
	t.Helper()
	resp, err := http.Get("http://" + c.admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st graceful.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// load sends n concurrent requests and waits until the child counts them all in flight.
func (c *childProc) load(t *testing.T, n int) (results chan string) {
	t.Helper()
	results = make(chan string, n)
	for range n {
		go func() {
			resp, err := http.Get("http://" + c.app + "/work")
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.status(t).InFlight < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests in flight", c.status(t).InFlight, n)
		}
		time.Sleep(5 * time.Millisecond) // the counter has no change feed to wait on
	}
	return results
}

func (c *childProc) drain(t *testing.T) {
	t.Helper()
	resp, err := http.Post("http://"+c.admin+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st := c.status(t).State; st != "draining" {
		t.Fatalf("state after POST /drain = %s", st)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestSIGTERMMidLoadFinishesInFlightAndExits0(t *testing.T) {
	c := startChild(t, "polite")
	c.drain(t)
	results := c.load(t, 20)
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if r := <-results; r != "200 done" {
			t.Errorf("in-flight request ended with %q, want 200 done", r)
		}
	}
	code := exitCode(c.cmd.Wait())
	elapsed := time.Since(start)
	if code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if elapsed > 2*time.Second+500*time.Millisecond {
		t.Errorf("exited %s after SIGTERM; budget 2s", elapsed)
	}
}

func TestHandlerIgnoringCancellationIsForcedAtTheDeadline(t *testing.T) {
	c := startChild(t, "stubborn")
	c.drain(t)
	_ = c.load(t, 5)
	start := time.Now()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := exitCode(c.cmd.Wait())
	elapsed := time.Since(start)
	if code != 3 {
		t.Errorf("exit code %d, want 3 (ErrForced)", code)
	}
	// StopTimeout 2s, then RollbackGrace 300ms, then forced.
	if elapsed < 2300*time.Millisecond || elapsed > 3300*time.Millisecond {
		t.Errorf("exited %s after SIGTERM; want the 2.3s deadline", elapsed)
	}
}
