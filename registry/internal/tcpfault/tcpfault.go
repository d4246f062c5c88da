// Package tcpfault is a loopback TCP proxy that makes a server look dead or hung on demand, so
// tests can share one real server per package and still break one client's view of it.
package tcpfault

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy forwards connections to a target until Kill or Freeze.
type Proxy struct {
	// Addr is where clients connect instead of the target, host:port.
	Addr   string
	target string
	ln     net.Listener
	frozen atomic.Bool
	killed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// New starts a proxy to target on a free loopback port.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("tcpfault: listen: %w", err)
	}
	p := &Proxy{Addr: ln.Addr().String(), target: target, ln: ln, killed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed by Kill
		}
		if !p.track(c) {
			continue
		}
		if p.frozen.Load() {
			continue // accepted, never answered: held open until Kill
		}
		p.wg.Go(func() { p.forward(c) })
	}
}

func (p *Proxy) forward(c net.Conn) {
	defer p.drop(c)
	up, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(up) {
		return
	}
	defer p.drop(up)
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, c); done <- struct{}{} }()
	go func() { p.pipe(c, up); done <- struct{}{} }()
	<-done // either side ending ends both: the deferred drops close them, so the other returns
}

// pipe copies src to dst; once the proxy is frozen, what it reads is held back.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if p.frozen.Load() {
				<-p.killed
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// track records an open connection, or closes it when the proxy is already killed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.killed:
		_ = c.Close()
		return false
	default:
		p.conns[c] = struct{}{}
		return true
	}
}

func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

// Freeze makes the server look hung, like a stopped process: new connections are accepted and
// never answered, and nothing more passes on open ones.
func (p *Proxy) Freeze() { p.frozen.Store(true) }

// Kill makes the server look dead: open connections are cut and new ones refused.
func (p *Proxy) Kill() {
	p.once.Do(func() {
		p.mu.Lock()
		close(p.killed)
		conns := p.conns
		p.conns = nil
		p.mu.Unlock()
		_ = p.ln.Close()
		for c := range conns {
			_ = c.Close()
		}
	})
}

// Close kills the proxy and waits for its goroutines.
func (p *Proxy) Close() error {
	p.Kill()
	p.wg.Wait()
	return nil
}
