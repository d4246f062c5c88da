//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// keepAlive is a raw HTTP/1.1 client connection that has had one request answered and is idle.
func keepAlive(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, "GET /first HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first request: %d close=%v, want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	return conn, br
}

// A caller that has started a request on an idle keep-alive connection when the stop comes gets
// an answer, "not processed", instead of a closed connection: net/http's Shutdown alone closes
// the connection as idle, or reads the request and drops it.
func TestStopAnswersARequestStartedOnAnIdleConnection(t *testing.T) {
	var logs logBuffer
	in := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		graceful.Config{Logger: logs.logger()})
	conn, br := keepAlive(t, in.addr)
	// The caller is writing its next request: the headers are not complete yet.
	if _, err := io.WriteString(conn, "POST /orders HTTP/1.1\r\nHost: app\r\nContent-Length: 2\r\n"); err != nil {
		t.Fatal(err)
	}
	delivered(t, conn)
	in.srv.Shutdown()
	eventually(t, "the stop waiting for the request", func() bool { return strings.Contains(logs.String(), "request under way") })
	if _, err := io.WriteString(conn, "\r\nhi"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the started request got no answer: %v\n%s", err, logs.String())
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(graceful.MarkerHeader) != "1" || !resp.Close {
		t.Errorf("answer %d %v, want 503 with %s and Connection: close", resp.StatusCode, resp.Header, graceful.MarkerHeader)
	}
	if err := in.wait(t); err != nil {
		t.Fatal(err)
	}
}

// Idle and never-used connections without a request close at once: the stop does not wait for
// them.
func TestStopClosesIdleConnectionsAtOnce(t *testing.T) {
	in := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		graceful.Config{StopTimeout: 10 * time.Second, RollbackGrace: 10 * time.Second})
	idle, br := keepAlive(t, in.addr)
	unused, err := net.Dial("tcp", in.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer unused.Close()
	t0 := time.Now()
	in.srv.Shutdown()
	for name, r := range map[string]io.Reader{"idle": br, "unused": unused} {
		if n, err := r.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("%s connection: read %d, %v; want it closed", name, n, err)
		}
	}
	_ = idle
	if err := in.wait(t); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("the stop took %s: it waited for connections without a request", took)
	}
}
