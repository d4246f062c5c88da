package grpcgraceful

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// conn is an accepted connection as a generation's grpc.Server sees it. It lets the Server
//   - know when a GOAWAY frame went out on it: a "not processed" answer is sent only after, so
//     that the caller's retry cannot pick this connection again (grpc-go's client drops a
//     transport as it reads the GOAWAY, before the frames that follow);
//   - take it back when a stopping grpc.Server closes it untouched: grpc-go closes a connection
//     it accepted just as GracefulStop began, without a byte read or written; the next
//     generation serves it instead.
type conn struct {
	net.Conn
	srv     *Server
	key     string // remote address: the interceptors find the connection from the call's peer
	gen     atomic.Pointer[generation]
	touched atomic.Bool

	mu     sync.Mutex // serializes scanning; grpc-go writes from one goroutine at a time anyway
	scan   frameScanner
	goAway chan struct{} // closed once a GOAWAY frame was written, or when that cannot be known

	closeOnce sync.Once
}

func newConn(c net.Conn, s *Server) *conn {
	return &conn{Conn: c, srv: s, key: c.RemoteAddr().String(), goAway: make(chan struct{})}
}

func (c *conn) Read(p []byte) (int, error) {
	c.touched.Store(true)
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	c.touched.Store(true)
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if c.scan.state != scanDone && c.scan.feed(p[:n]) {
		close(c.goAway)
	}
	c.mu.Unlock()
	return n, err
}

// Close closes the connection, unless grpc-go closes it before using it and the Server can give
// it to its next generation.
func (c *conn) Close() error {
	if !c.touched.Load() && c.srv.redeliver(c) {
		return nil
	}
	return c.closeNow()
}

func (c *conn) closeNow() error {
	var err error
	c.closeOnce.Do(func() {
		c.srv.conns.CompareAndDelete(c.key, c)
		err = c.Conn.Close()
	})
	return err
}

// awaitGoAway waits, at most d, until a GOAWAY frame was written on c. The call's context is
// not a bound: a handler that rolled back answers with its context cancelled.
func (c *conn) awaitGoAway(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.goAway:
		return true
	case <-t.C:
		return false
	}
}

// frameScanner follows the HTTP/2 frames a server writes, reading only their 9-byte headers, to
// see a GOAWAY go out. Over TLS the bytes are records, not frames: the first bytes tell, and the
// scanner then gives up and reports "sent" at once.
type frameScanner struct {
	state scanState
	hdr   [9]byte
	n     int    // header bytes held
	skip  uint32 // payload bytes left of the current frame
}

type scanState uint8

const (
	scanFirst  scanState = iota // before the first frame header, which must be SETTINGS
	scanFrames                  // following frames
	scanDone                    // a GOAWAY was seen, or the bytes are not plain HTTP/2
)

// feed takes bytes written in order and reports whether they completed a GOAWAY frame header,
// or showed that the stream is not plain HTTP/2 frames; after either it returns false.
func (f *frameScanner) feed(p []byte) bool {
	for len(p) > 0 && f.state != scanDone {
		if f.skip > 0 {
			k := min(len(p), int(f.skip)) // a frame is at most 2^24-1 bytes
			f.skip -= uint32(k)
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.n:], p)
		f.n += k
		p = p[k:]
		if f.n < len(f.hdr) {
			return false
		}
		f.n = 0
		typ := http2.FrameType(f.hdr[3])
		if f.state == scanFirst && (f.hdr[0] != 0 || typ != http2.FrameSettings) {
			f.state = scanDone // TLS records: the GOAWAY cannot be seen
			return true
		}
		f.state = scanFrames
		if typ == http2.FrameGoAway {
			f.state = scanDone
			return true
		}
		f.skip = uint32(f.hdr[0])<<16 | uint32(f.hdr[1])<<8 | uint32(f.hdr[2])
	}
	return false
}
