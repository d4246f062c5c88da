//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/internal/h2test"
)

// Draining must not close idle HTTP/1.1 connections (that races a caller writing on one); each
// connection closes after its next response instead, and the caller reconnects.
func TestDrainClosesHTTP1ConnectionsAfterTheirNextResponse(t *testing.T) {
	in := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), graceful.Config{})
	tr := &http.Transport{Protocols: protocols(false)}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	send := func() (reused, closing bool) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, "http://"+in.addr+"/orders", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return reused, resp.Close
	}
	send()
	if reused, closing := send(); !reused || closing {
		t.Fatalf("running: reused=%v close=%v, want a kept-alive connection", reused, closing)
	}
	in.srv.Drain("test")
	if reused, closing := send(); !reused || !closing {
		t.Errorf("first request while draining: reused=%v close=%v; want the idle connection still usable, then closed", reused, closing)
	}
	if reused, closing := send(); reused || !closing {
		t.Errorf("second request while draining: reused=%v close=%v; want a new connection, closed again", reused, closing)
	}
}

// Draining sends GOAWAY (no error) on every HTTP/2 connection at once, idle ones included, not
// only with its next response: it names the last stream the server processes, so the streams in
// flight complete and the caller sends new requests on a new connection.
func TestDrainSendsGOAWAYOnEveryHTTP2ConnectionWithoutFailingStreamsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	in := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	}), graceful.Config{})
	busy := h2test.Dial(t, in.addr)
	busy.Get(1, in.addr, "/slow")
	<-entered
	used := h2test.Dial(t, in.addr)
	used.Get(1, in.addr, "/quick")
	used.Until(h2test.StreamEnded(1))
	fresh := h2test.Dial(t, in.addr) // no request yet
	fresh.Until(func(e h2test.Event) bool { return e.Kind == "SETTINGS" })

	in.srv.Drain("test")
	for _, c := range []struct {
		name   string
		conn   *h2test.Conn
		lastID uint32
	}{{"busy", busy, 1}, {"used", used, 1}, {"fresh", fresh, 0}} {
		got := c.conn.Until(func(e h2test.Event) bool { return e.Kind == "GOAWAY" })
		if e := got[len(got)-1]; e.Code != http2.ErrCodeNo || e.LastID != c.lastID {
			t.Errorf("%s connection: GOAWAY %v, last stream %d; want NO_ERROR, %d", c.name, e.Code, e.LastID, c.lastID)
		}
		for _, e := range got {
			if e.Kind == "RST_STREAM" {
				t.Errorf("%s connection: stream %d reset (%v) by the drain", c.name, e.Stream, e.Code)
			}
		}
	}
	close(release)
	got := busy.Until(h2test.StreamEnded(1))
	for _, e := range got {
		if e.Kind == "HEADERS" && e.Stream == 1 && e.Fields[":status"] != "200" {
			t.Errorf("in-flight stream 1 after the GOAWAY: %+v, want its 200", e)
		}
		if e.Kind == "RST_STREAM" {
			t.Errorf("stream %d reset (%v)", e.Stream, e.Code)
		}
	}
}

// A connection opened while draining and left idle gets its GOAWAY at the stop, so that the stop
// does not wait for it until the deadline.
func TestStopSendsGOAWAYOnHTTP2ConnectionsOpenedWhileDraining(t *testing.T) {
	in := startInstance(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		graceful.Config{RollbackGrace: 10 * time.Second})
	in.srv.Drain("test")
	late := h2test.Dial(t, in.addr)
	late.Until(func(e h2test.Event) bool { return e.Kind == "SETTINGS" })
	t0 := time.Now()
	in.srv.Shutdown()
	got := late.Until(func(e h2test.Event) bool { return e.Kind == "GOAWAY" })
	if e := got[len(got)-1]; e.Code != http2.ErrCodeNo || e.LastID != 0 {
		t.Errorf("GOAWAY %v, last stream %d; want NO_ERROR, 0", e.Code, e.LastID)
	}
	if err := in.wait(t); err != nil {
		t.Fatal(err)
	}
	// x/net closes a connection 1 s after its GOAWAY when the client does not.
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("the stop took %s: it waited for the idle HTTP/2 connection", took)
	}
}

// The same over TLS with ALPN, through net/http's client: an in-flight stream completes, and the
// requests after the drain go out on new connections, without a request on the old one first.
func TestDrainMovesTLSHTTP2Callers(t *testing.T) {
	ts := httptest.NewUnstartedServer(nil)
	ts.EnableHTTP2 = true
	ts.StartTLS()
	certs, client := ts.TLS.Certificates, ts.Client()
	ts.Close()

	entered, release := make(chan struct{}), make(chan struct{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, graceful.Config{
		Servers: []*http.Server{{TLSConfig: &tls.Config{Certificates: certs}, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				close(entered)
				<-release
			}
			_, _ = io.WriteString(w, r.Proto)
		})}},
		Listeners: []net.Listener{ln},
	})
	done := run(t, s)
	url := "https://" + ln.Addr().String()
	send := func(path string) (proto string, reused bool) {
		req, _ := http.NewRequest(http.MethodGet, url+path, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		}))
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return "", reused
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b), reused
	}
	if proto, _ := send("/quick"); proto != "HTTP/2.0" {
		t.Fatalf("before the drain: %s, want HTTP/2.0", proto)
	}
	slow := make(chan string, 1)
	go func() { p, _ := send("/slow"); slow <- p }()
	<-entered
	// The drain's GOAWAY reaches the client on its own: the idle connection is not used again.
	s.Drain("test")
	eventually(t, "a request after the drain on a new connection", func() bool {
		proto, reused := send("/quick")
		if proto != "HTTP/2.0" {
			t.Fatalf("after the drain: %q, want HTTP/2.0", proto)
		}
		return !reused
	})
	close(release)
	if p := <-slow; p != "HTTP/2.0" {
		t.Errorf("in-flight stream answered %q, want its HTTP/2.0 response", p)
	}
	s.Shutdown()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
