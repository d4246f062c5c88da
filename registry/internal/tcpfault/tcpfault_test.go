package tcpfault

import (
	"bufio"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// echo serves one line back per line, until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, wait time.Duration) (string, error) {
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	return bufio.NewReader(c).ReadString('\n')
}

func TestProxy(t *testing.T) {
	tests := []struct {
		name  string
		fault func(p *Proxy)
		check func(t *testing.T, p *Proxy, open net.Conn)
	}{
		{"forwards", func(*Proxy) {}, func(t *testing.T, _ *Proxy, open net.Conn) {
			if got, err := roundTrip(open, 5*time.Second); err != nil || got != "ping\n" {
				t.Errorf("round trip = %q, %v", got, err)
			}
		}},
		{"kill refuses new connections and cuts open ones", (*Proxy).Kill, func(t *testing.T, p *Proxy, open net.Conn) {
			if _, err := net.Dial("tcp", p.Addr); err == nil {
				t.Error("dial after Kill succeeded")
			}
			if _, err := roundTrip(open, 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("open connection after Kill: %v, want it cut", err)
			}
		}},
		{"freeze accepts and never answers", (*Proxy).Freeze, func(t *testing.T, p *Proxy, open net.Conn) {
			c, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatalf("dial after Freeze: %v", err)
			}
			defer c.Close()
			for _, conn := range []net.Conn{c, open} {
				if _, err := roundTrip(conn, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("answer after Freeze: %v, want none", err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(echo(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			open, err := net.Dial("tcp", p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer open.Close()
			if _, err := roundTrip(open, 5*time.Second); err != nil {
				t.Fatalf("before the fault: %v", err)
			}
			tt.fault(p)
			tt.check(t, p, open)
		})
	}
}
