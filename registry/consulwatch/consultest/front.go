package consultest

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Front is a loopback address whose backend changes, as a Kubernetes Service's ClusterIP or a
// DNS name does when the Consul behind it is recreated. New connections reach the backend of
// the moment. A connection stays with the backend it reached, as conntrack keeps an established
// flow on its old endpoint; once that backend has gone the connection stays open and silent, as
// packets to a deleted pod's IP go unanswered.
type Front struct {
	// Addr is what clients dial, host:port.
	Addr string
	ln   net.Listener

	mu      sync.Mutex
	backend string
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// NewFront serves backend (host:port) on a free loopback port until the test ends.
func NewFront(t testing.TB, backend string) *Front {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{Addr: ln.Addr().String(), ln: ln, backend: backend, conns: map[net.Conn]struct{}{}}
	f.wg.Go(f.accept)
	t.Cleanup(f.Close)
	return f
}

// Switch sends new connections to backend; open ones keep theirs.
func (f *Front) Switch(backend string) {
	f.mu.Lock()
	f.backend = backend
	f.mu.Unlock()
}

// Close cuts every connection and stops accepting.
func (f *Front) Close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	_ = f.ln.Close()
	f.wg.Wait()
}

func (f *Front) accept() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		backend := f.backend
		f.mu.Unlock()
		if !f.track(c) {
			return
		}
		f.wg.Go(func() { f.serve(c, backend) })
	}
}

func (f *Front) serve(c net.Conn, backend string) {
	defer f.drop(c)
	up, err := net.Dial("tcp", backend)
	if err != nil {
		_, _ = io.Copy(io.Discard, c) // nothing there: silence until the client gives up
		return
	}
	if !f.track(up) {
		return
	}
	defer f.drop(up)
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }() // the client's end ends the flow
	_, _ = io.Copy(c, up)
	// The backend went away: the client hears nothing more, however long it waits.
	_, _ = io.Copy(io.Discard, c)
}

func (f *Front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Front) drop(c net.Conn) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	_ = c.Close()
}
