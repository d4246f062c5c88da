package graceful

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// HTTP/1.1 cannot tell a caller that an idle keep-alive connection is about to close: one that
// closes while the caller writes a request on it loses the request, which the caller may not
// send again if it is not idempotent. The stop therefore closes idle HTTP/1.1 connections itself,
// before net/http's Shutdown, and only those without a request on its way: a connection with
// request bytes in its socket, or with the start of a request already read, is left until the
// request is answered ("not processed", Connection: close), or until the close deadline.
// net/http's Shutdown would close it as idle, or read the request and drop it unanswered
// (golang/go#65802), as it does with every request it reads once shutting down.

// conns follows the connections of the app servers: their state, and the bytes read since each
// became idle. It also closes the listeners, which Run owns, before the idle connections.
type conns struct {
	mu        sync.Mutex
	state     map[*trackedConn]http.ConnState
	listeners []net.Listener
	closing   bool          // closeIdle began: a connection accepted now closes unless a request came
	changed   chan struct{} // a state changed; buffered: a pending wake-up is enough
}

func newConns() *conns {
	return &conns{state: make(map[*trackedConn]http.ConnState), changed: make(chan struct{}, 1)}
}

// listen wraps ln so that its connections are tracked.
func (cs *conns) listen(ln net.Listener) net.Listener {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.listeners = append(cs.listeners, ln)
	return &trackingListener{Listener: ln, cs: cs}
}

// hook returns the ConnState hook that tracks connections, calling the app's own too.
func (cs *conns) hook(app func(net.Conn, http.ConnState)) func(net.Conn, http.ConnState) {
	return func(c net.Conn, st http.ConnState) {
		if tc := tracked(c); tc != nil {
			cs.mu.Lock()
			switch _, known := cs.state[tc]; {
			case !known:
				// closeIdle closed it, or it is HTTP/2: Accept tracks every connection from the start
			case tc.http2(c):
				// HTTP/2 reports idle and active too, but its GOAWAY closes it, once the caller
				// read the last frames: closing it here could reset them.
				delete(cs.state, tc)
			case st == http.StateClosed, st == http.StateHijacked:
				delete(cs.state, tc)
			case st == http.StateIdle:
				tc.idleAt.Store(tc.read.Load())
				cs.state[tc] = st
			default:
				cs.state[tc] = st
			}
			cs.mu.Unlock()
			select {
			case cs.changed <- struct{}{}:
			default:
			}
		}
		if app != nil {
			app(c, st)
		}
	}
}

// tracked finds the trackedConn under the connection net/http reports.
func tracked(c net.Conn) *trackedConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tc, _ := c.(*trackedConn)
	return tc
}

// closeIdle closes the listeners, then every new or idle connection without a request on its
// way, until no connection is left or ctx ends; it waits for the others to be answered and
// closed, or to become idle. An active connection may be about to go idle: its handler returned
// but net/http still writes the response; once Shutdown began, net/http would close it instead,
// whatever the caller is sending. It returns how many connections it closed and how many at
// most had a request under way.
func (cs *conns) closeIdle(ctx context.Context, log *slog.Logger) (closed, waited int) {
	cs.mu.Lock()
	cs.closing = true
	for _, ln := range cs.listeners {
		_ = ln.Close() // net/http's Serve returns; its connections go on
	}
	cs.mu.Unlock()
	for {
		underWay, active := 0, 0
		cs.mu.Lock()
		for c, st := range cs.state {
			switch {
			case c.h2.Load():
				delete(cs.state, c)
			case st != http.StateNew && st != http.StateIdle:
				active++
			case c.requestStarted():
				underWay++
			default:
				delete(cs.state, c)
				_ = c.Close() // net/http's reader sees it and forgets the connection
				closed++
			}
		}
		cs.mu.Unlock()
		if underWay+active == 0 {
			return closed, waited
		}
		if underWay > 0 && waited == 0 {
			log.Info("idle connections with a request under way: waiting for their answers", "connections", underWay)
		}
		waited = max(waited, underWay)
		select {
		case <-cs.changed:
		case <-ctx.Done():
			return closed, waited
		}
	}
}

// trackingListener tracks the connections it accepts.
type trackingListener struct {
	net.Listener
	cs *conns
}

// Accept tracks a connection from the start: net/http reports it new only after Accept returns,
// too late for a closeIdle running meanwhile.
func (l *trackingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c}
		cs := l.cs
		cs.mu.Lock()
		if cs.closing && !tc.requestStarted() {
			cs.mu.Unlock()
			_ = c.Close() // accepted as the listener closed: nothing was sent on it yet
			continue
		}
		cs.state[tc] = http.StateNew
		cs.mu.Unlock()
		return tc, nil
	}
}

// trackedConn counts the bytes read from an accepted connection. It is what the app's ConnState
// and ConnContext hooks get; NetConn returns the accepted connection itself.
type trackedConn struct {
	net.Conn
	read   atomic.Uint64
	idleAt atomic.Uint64 // read when the connection last became idle
	h2     atomic.Bool   // it speaks HTTP/2
	first  [4]byte       // the first bytes read, to tell the HTTP/2 preface; reader only
	firstN int
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(uint64(n))
	if c.firstN < len(c.first) {
		c.firstN += copy(c.first[c.firstN:], p[:n])
		if c.firstN == len(c.first) && string(c.first[:]) == "PRI " { // no HTTP/1 method
			c.h2.Store(true)
		}
	}
	return n, err
}

// http2 reports whether the connection speaks HTTP/2: h2c starts with the preface, and over TLS
// ALPN chose h2. as is what net/http reports the connection as.
func (c *trackedConn) http2(as net.Conn) bool {
	if c.h2.Load() {
		return true
	}
	if tc, ok := as.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
		c.h2.Store(true)
		return true
	}
	return false
}

// NetConn returns the accepted connection, as tls.Conn's NetConn does.
func (c *trackedConn) NetConn() net.Conn { return c.Conn }

// CloseWrite lets net/http half-close the connection before closing it, as it does a
// *net.TCPConn's, so that a caller reads the last response before the close.
func (c *trackedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// ReadFrom keeps net/http's sendfile path of a *net.TCPConn.
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// requestStarted reports a request on its way on a new or idle connection: bytes read since it
// became idle (net/http reads a request's start before it calls the connection active), or
// bytes waiting in its socket.
func (c *trackedConn) requestStarted() bool {
	return c.read.Load() != c.idleAt.Load() || unreadBytes(c.Conn)
}
