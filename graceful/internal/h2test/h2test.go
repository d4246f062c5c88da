// Package h2test is a raw HTTP/2 client connection for frame-level tests of graceful and
// graceful/grpcgraceful: it shows the frames a server sends, in order, which net/http's and
// grpc-go's clients hide.
package h2test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Conn is a client connection that has sent the preface and its SETTINGS. It answers the
// server's SETTINGS and PINGs as a client does.
type Conn struct {
	t        testing.TB
	conn     net.Conn
	wmu      sync.Mutex
	holdPing atomic.Bool
	fr       *http2.Framer
	enc      *hpack.Encoder
	encBuf   bytes.Buffer
	events   chan Event
}

// Event is what a test needs of a frame the server sent, copied out of the framer's buffers.
type Event struct {
	Kind      string // SETTINGS, PING, HEADERS, DATA, GOAWAY, RST_STREAM
	Stream    uint32
	Fields    map[string]string // HEADERS: every field, pseudo-headers (":status") included
	EndStream bool
	LastID    uint32        // GOAWAY
	Code      http2.ErrCode // GOAWAY, RST_STREAM
}

// Dial connects to addr; the connection closes when the test ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	c := &Conn{t: t, conn: conn, fr: http2.NewFramer(conn, conn), events: make(chan Event, 64)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.enc = hpack.NewEncoder(&c.encBuf)
	c.write(func() error { return c.fr.WriteSettings() })
	go c.read()
	return c
}

func (c *Conn) write(f func() error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := f(); err != nil {
		c.t.Error(err)
	}
}

func (c *Conn) read() {
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
				c.events <- Event{Kind: "SETTINGS"}
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				if data := f.Data; !c.holdPing.Load() {
					c.write(func() error { return c.fr.WritePing(true, data) })
				}
				c.events <- Event{Kind: "PING"}
			}
		case *http2.MetaHeadersFrame:
			e := Event{Kind: "HEADERS", Stream: f.StreamID, EndStream: f.StreamEnded(), Fields: map[string]string{}}
			for _, hf := range f.Fields {
				e.Fields[hf.Name] = hf.Value
			}
			c.events <- e
		case *http2.DataFrame:
			c.events <- Event{Kind: "DATA", Stream: f.StreamID, EndStream: f.StreamEnded()}
		case *http2.GoAwayFrame:
			c.events <- Event{Kind: "GOAWAY", LastID: f.LastStreamID, Code: f.ErrCode}
		case *http2.RSTStreamFrame:
			c.events <- Event{Kind: "RST_STREAM", Stream: f.StreamID, Code: f.ErrCode}
		}
	}
}

// Close closes the connection.
func (c *Conn) Close() { _ = c.conn.Close() }

// HoldPings stops answering the server's PINGs: grpc-go's second GOAWAY waits for the answer to
// the PING that follows its first.
func (c *Conn) HoldPings() { c.holdPing.Store(true) }

// Request opens stream with the header fields, in order, then body as one DATA frame; without
// a body, the HEADERS end the stream.
func (c *Conn) Request(stream uint32, fields [][2]string, body []byte) {
	c.write(func() error {
		c.encBuf.Reset()
		for _, f := range fields {
			_ = c.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: c.encBuf.Bytes(), EndStream: body == nil, EndHeaders: true}); err != nil {
			return err
		}
		if body == nil {
			return nil
		}
		return c.fr.WriteData(stream, true, body)
	})
}

// Get sends GET path on stream.
func (c *Conn) Get(stream uint32, authority, path string) {
	c.Request(stream, [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", authority}, {":path", path}}, nil)
}

// Until collects events until one satisfies done, and fails the test if the connection closes
// or 20 s pass first.
func (c *Conn) Until(done func(Event) bool) []Event {
	c.t.Helper()
	var got []Event
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

// StreamEnded is an Until condition: the server ended stream.
func StreamEnded(stream uint32) func(Event) bool {
	return func(e Event) bool { return e.Stream == stream && e.EndStream }
}
