package grpcgraceful_test

import (
	"bytes"
	"io"
	"math"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

// h2Conn is a raw HTTP/2 client connection, to see the frames a gRPC server sends.
type h2Conn struct {
	t      *testing.T
	wmu    sync.Mutex
	fr     *http2.Framer
	enc    *hpack.Encoder
	encBuf bytes.Buffer
	events chan h2Event
}

// h2Event is what a test needs of a frame, copied out of the framer's buffers.
type h2Event struct {
	kind      string // HEADERS, DATA, GOAWAY, PING, RST_STREAM
	stream    uint32
	fields    map[string]string
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

// read reports the frames, answering SETTINGS and PING as a client does.
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
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				data := f.Data
				c.write(func() error { return c.fr.WritePing(true, data) })
				c.events <- h2Event{kind: "PING"}
			}
		case *http2.MetaHeadersFrame:
			e := h2Event{kind: "HEADERS", stream: f.StreamID, endStream: f.StreamEnded(), fields: map[string]string{}}
			for _, hf := range f.Fields {
				e.fields[hf.Name] = hf.Value
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

// place sends a Place call on stream.
func (c *h2Conn) place(stream uint32, authority, item string) {
	msg, err := proto.Marshal(wrapperspb.String(item))
	if err != nil {
		c.t.Fatal(err)
	}
	frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...) // uncompressed, length-prefixed
	c.write(func() error {
		c.encBuf.Reset()
		for _, f := range [][2]string{
			{":method", "POST"}, {":scheme", "http"}, {":authority", authority}, {":path", orders.PlaceMethod},
			{"content-type", "application/grpc"}, {"te", "trailers"},
		} {
			_ = c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: c.encBuf.Bytes(), EndHeaders: true}); err != nil {
			return err
		}
		return c.fr.WriteData(stream, true, frame)
	})
}

// until collects events until one satisfies done.
func (c *h2Conn) until(done func(h2Event) bool) []h2Event {
	c.t.Helper()
	var got []h2Event
	timeout := time.After(20 * time.Second)
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

// Draining sends GOAWAY on an idle connection, in grpc-go's two steps (grpc/grpc-go#1387): first
// one that still covers every stream, with a PING; once the PING is answered, one with the last
// stream the server processed.
func TestDrainSendsGOAWAYOnIdleConnections(t *testing.T) {
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	c := dialH2(t, in.addr())
	c.place(1, in.addr(), "before the drain")
	c.until(func(e h2Event) bool { return e.stream == 1 && e.endStream })

	in.g.Drain("test")
	got := c.until(func(e h2Event) bool { return e.kind == "GOAWAY" && e.lastID != math.MaxInt32 })
	var first, ping bool
	for _, e := range got {
		switch {
		case e.kind == "GOAWAY" && e.lastID == math.MaxInt32 && e.code == http2.ErrCodeNo:
			first = true
		case e.kind == "PING" && first:
			ping = true
		case e.kind == "GOAWAY" && (!ping || e.lastID != 1 || e.code != http2.ErrCodeNo):
			t.Errorf("second GOAWAY %+v: want NO_ERROR, last stream 1, after the first GOAWAY and its PING", e)
		}
	}
	if !first || !ping {
		t.Errorf("frames %+v: want GOAWAY(NO_ERROR, 2^31-1), PING, then GOAWAY(NO_ERROR, 1)", got)
	}
}

// A call that arrives while the server stops is answered UNAVAILABLE with the marker, and only
// after a GOAWAY on its connection: a client reads the GOAWAY first and does not send its retry
// on this connection.
func TestLateCallIsAnsweredNotProcessedAfterGOAWAY(t *testing.T) {
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	holder := dial(t, nil, nil, in.addr())
	held := make(chan error, 1)
	go func() { _, _, err := place(holder, "hold"); held <- err }()
	in.awaitHeld(t)
	in.g.Shutdown()
	<-in.g.Reached(graceful.Stopping) // the held call keeps it there

	c := dialH2(t, in.addr())
	c.place(1, in.addr(), "late")
	got := c.until(func(e h2Event) bool { return e.stream == 1 && e.endStream })
	answer := got[len(got)-1]
	if answer.kind != "HEADERS" || answer.fields["grpc-status"] != "14" || answer.fields[grpcgraceful.MarkerKey] != "1" {
		t.Errorf("answer %+v: want trailers with grpc-status 14 (UNAVAILABLE) and %s: 1", answer, grpcgraceful.MarkerKey)
	}
	goAwayFirst := false
	for _, e := range got {
		goAwayFirst = goAwayFirst || e.kind == "GOAWAY"
	}
	if !goAwayFirst {
		t.Errorf("frames %+v: want a GOAWAY before the answer", got)
	}
	if by := in.svc.l.processedBy("late"); len(by) != 0 {
		t.Errorf("late call processed by %v", by)
	}

	close(in.svc.release)
	if err := <-held; err != nil {
		t.Errorf("the call in flight at the stop: %v", err)
	}
	if err := in.wait(t); err != nil {
		t.Fatal(err)
	}
}
