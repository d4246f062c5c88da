//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/lastcall-dev/lastcall/graceful"
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

// h2Conn is a raw HTTP/2 client connection, to see the frames the server sends.
type h2Conn struct {
	t      *testing.T
	wmu    sync.Mutex
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	events chan h2Event
}

// h2Event is what the test needs of a frame, copied out of the framer's buffers.
type h2Event struct {
	kind      string // SETTINGS, HEADERS, DATA, GOAWAY, RST_STREAM
	stream    uint32
	status    string
	header    []string // header names
	endStream bool
	lastID    uint32
	code      http2.ErrCode
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &h2Conn{t: t, fr: http2.NewFramer(conn, conn), events: make(chan h2Event, 64)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)
	c.write(func() error { return c.fr.WriteSettings() })
	go c.read()
	return c
}

func (c *h2Conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := f(); err != nil {
		c.t.Error(err)
	}
}

func (c *h2Conn) read() {
	defer close(c.events)
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.write(func() error { return c.fr.WriteSettingsAck() })
				c.events <- h2Event{kind: "SETTINGS"}
			}
		case *http2.MetaHeadersFrame:
			e := h2Event{kind: "HEADERS", stream: f.StreamID, status: f.PseudoValue("status"), endStream: f.StreamEnded()}
			for _, hf := range f.RegularFields() {
				e.header = append(e.header, hf.Name)
			}
			c.events <- e
		case *http2.DataFrame:
			c.events <- h2Event{kind: "DATA", stream: f.StreamID, endStream: f.StreamEnded()}
		case *http2.GoAwayFrame:
			c.events <- h2Event{kind: "GOAWAY", lastID: f.LastStreamID, code: f.ErrCode}
		case *http2.RSTStreamFrame:
			c.events <- h2Event{kind: "RST_STREAM", stream: f.StreamID, code: f.ErrCode}
		}
	}
}

func (c *h2Conn) get(stream uint32, authority, path string) {
	c.write(func() error {
		c.encBuf.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", path}} {
			_ = c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: c.encBuf.Bytes(), EndStream: true, EndHeaders: true})
	})
}

// until collects events until one satisfies done.
func (c *h2Conn) until(done func(h2Event) bool) []h2Event {
	c.t.Helper()
	var got []h2Event
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-c.events:
			if !ok {
				c.t.Fatalf("connection closed; frames so far: %+v", got)
			}
			got = append(got, e)
			if done(e) {
				return got
			}
		case <-timeout:
			c.t.Fatalf("timed out; frames so far: %+v", got)
		}
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
	busy := dialH2(t, in.addr)
	busy.get(1, in.addr, "/slow")
	<-entered
	used := dialH2(t, in.addr)
	used.get(1, in.addr, "/quick")
	used.until(func(e h2Event) bool { return e.stream == 1 && e.endStream })
	fresh := dialH2(t, in.addr) // no request yet
	fresh.until(func(e h2Event) bool { return e.kind == "SETTINGS" })

	in.srv.Drain("test")
	for _, c := range []struct {
		name   string
		conn   *h2Conn
		lastID uint32
	}{{"busy", busy, 1}, {"used", used, 1}, {"fresh", fresh, 0}} {
		got := c.conn.until(func(e h2Event) bool { return e.kind == "GOAWAY" })
		if e := got[len(got)-1]; e.code != http2.ErrCodeNo || e.lastID != c.lastID {
			t.Errorf("%s connection: GOAWAY %v, last stream %d; want NO_ERROR, %d", c.name, e.code, e.lastID, c.lastID)
		}
		for _, e := range got {
			if e.kind == "RST_STREAM" {
				t.Errorf("%s connection: stream %d reset (%v) by the drain", c.name, e.stream, e.code)
			}
		}
	}
	close(release)
	got := busy.until(func(e h2Event) bool { return e.stream == 1 && e.endStream })
	for _, e := range got {
		if e.kind == "HEADERS" && e.stream == 1 && e.status != "200" {
			t.Errorf("in-flight stream 1 after the GOAWAY: %+v, want its 200", e)
		}
		if e.kind == "RST_STREAM" {
			t.Errorf("stream %d reset (%v)", e.stream, e.code)
		}
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
