package prestop

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Meter counts traffic: a number that grows whenever callers send something (a new inbound
// connection, bytes on one, a request). Its value means nothing; only its moves do.
type Meter interface {
	Activity(ctx context.Context) (uint64, error)
}

// lastMover is a Meter that knows when the traffic last moved, more precisely than its samples
// (the app's last request, a socket's last data), and before its first sample. Zero: unknown.
type lastMover interface {
	LastMoved() time.Time
}

// connCounter is a Meter that knows how many inbound connections were open at its latest
// sample; ok is false when it does not know.
type connCounter interface {
	OpenConns() (n int, ok bool)
}

// ProcMeter counts new inbound connections on the serving ports from /proc/net/tcp{,6} (the
// preStop hook shares the app's network namespace). It cannot see requests on connections
// callers keep alive: it is the fallback when sock_diag is unavailable.
type ProcMeter struct {
	// Root is the proc filesystem, "/proc" unless a test says otherwise.
	Root string
	// Ports are the serving ports; empty means discover them at the first sample.
	Ports []int
	// Skip are ports never taken for serving ports (the app's admin port).
	Skip []int

	prev  map[inboundKey]struct{}
	conns uint64
}

// Activity implements Meter.
func (m *ProcMeter) Activity(context.Context) (uint64, error) {
	socks, err := m.sockets()
	if err != nil {
		return 0, err
	}
	if len(m.Ports) == 0 {
		m.Ports = ServingPorts(socks, m.Skip...)
	}
	cur := Inbound(socks, m.Ports)
	for k := range cur {
		if _, old := m.prev[k]; !old && m.prev != nil {
			m.conns++
		}
	}
	m.prev = cur
	return m.conns, nil
}

// OpenConns is how many inbound connections on the serving ports were established (or being
// accepted) at the latest sample.
func (m *ProcMeter) OpenConns() (int, bool) { return len(m.prev), m.prev != nil }

func (m *ProcMeter) sockets() ([]Socket, error) {
	root := m.Root
	if root == "" {
		root = "/proc"
	}
	var all []Socket
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(root, "net", name))
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 in this namespace
		}
		if err != nil {
			return nil, fmt.Errorf("read sockets: %w", err)
		}
		socks, err := ParseProcNetTCP(f)
		_ = f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", f.Name(), err)
		}
		all = append(all, socks...)
	}
	return all, nil
}

// AppMeter is the app's own request counter (graceful's admin /status).
type AppMeter struct {
	App *AppAdmin
	// last is the app's last request start at the latest sample (zero: unknown).
	last time.Time
}

// Activity implements Meter: the app's requests so far.
func (m *AppMeter) Activity(ctx context.Context) (uint64, error) {
	st, err := m.App.Status(ctx)
	if err != nil {
		return 0, err
	}
	m.last = time.Time{}
	if t, err := time.Parse(time.RFC3339Nano, st.LastRequest); err == nil {
		m.last = t
	}
	return st.RequestsTotal, nil
}

// LastMoved is when the app says its last request started, as of the latest sample; zero
// before its first request.
func (m *AppMeter) LastMoved() time.Time { return m.last }

// ConnMeter measures callers' traffic on the serving ports from the sockets: per-socket byte
// counters over sock_diag, or, when the kernel does not answer that, new connections from
// /proc (logged once, with why). It never fails because sock_diag does.
type ConnMeter struct {
	Diag *SockDiagMeter
	Proc *ProcMeter
	Log  *slog.Logger

	onProc bool
	// base keeps the count going up across the switch to /proc, and makes the switch a move.
	base, latest uint64
}

// NewConnMeter watches ports (empty: every serving port but skip) through sock_diag, with /proc
// as the fallback.
func NewConnMeter(ports, skip []int, log *slog.Logger) *ConnMeter {
	return &ConnMeter{Diag: &SockDiagMeter{Ports: ports, Skip: skip}, Proc: &ProcMeter{Ports: ports, Skip: skip}, Log: log}
}

// Activity implements Meter.
func (m *ConnMeter) Activity(ctx context.Context) (uint64, error) {
	if !m.onProc {
		n, err := m.Diag.Activity(ctx)
		if err == nil {
			m.latest = n
			return n, nil
		}
		m.onProc = true
		m.base = m.latest + 1
		if len(m.Proc.Ports) == 0 {
			m.Proc.Ports = m.Diag.Ports
		}
		if m.Log != nil {
			m.Log.WarnContext(ctx, "per-socket counters unavailable, counting new connections from /proc instead: requests on kept-alive connections are not seen",
				"err", err)
		}
	}
	n, err := m.Proc.Activity(ctx)
	return m.base + n, err
}

// LastMoved implements lastMover while sock_diag answers; /proc cannot tell.
func (m *ConnMeter) LastMoved() time.Time {
	if m.onProc {
		return time.Time{}
	}
	return m.Diag.LastMoved()
}

// OpenConns implements connCounter.
func (m *ConnMeter) OpenConns() (int, bool) {
	if m.onProc {
		return m.Proc.OpenConns()
	}
	return m.Diag.OpenConns()
}

// Throttled samples Meter at most once per Every and answers from its latest sample in
// between. With the app's own request counter sampled at full rate, the sockets add only what the
// app does not count (open connections, bytes that are not requests), and each socket dump costs
// the kernel a walk of the host's whole socket hash table (2 to 3 ms of CPU on a 24 GiB node):
// fifty helpers sampling ten times a second used 17.5 s of CPU in one 50-pod drain.
type Throttled struct {
	Meter Meter
	Every time.Duration
	Now   func() time.Time // time.Now unless a test says otherwise

	at    time.Time
	value uint64
}

// Activity implements Meter.
func (t *Throttled) Activity(ctx context.Context) (uint64, error) {
	now := time.Now
	if t.Now != nil {
		now = t.Now
	}
	if !t.at.IsZero() && now().Sub(t.at) < t.Every {
		return t.value, nil
	}
	v, err := t.Meter.Activity(ctx)
	if err != nil {
		return 0, err
	}
	t.at, t.value = now(), v
	return v, nil
}

// LastMoved implements lastMover when Meter does.
func (t *Throttled) LastMoved() time.Time {
	if lm, ok := t.Meter.(lastMover); ok {
		return lm.LastMoved()
	}
	return time.Time{}
}

// OpenConns implements connCounter when Meter does.
func (t *Throttled) OpenConns() (int, bool) {
	if cc, ok := t.Meter.(connCounter); ok {
		return cc.OpenConns()
	}
	return 0, false
}

// Sum adds meters: the traffic moves when any of them does. It knows the latest last move any
// of them knows, and the open connections of the first that counts them.
type Sum []Meter

// Activity implements Meter; any part's error is the sum's.
func (s Sum) Activity(ctx context.Context) (uint64, error) {
	var total uint64
	for _, m := range s {
		n, err := m.Activity(ctx)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// LastMoved implements lastMover.
func (s Sum) LastMoved() time.Time {
	var last time.Time
	for _, m := range s {
		if lm, ok := m.(lastMover); ok && lm.LastMoved().After(last) {
			last = lm.LastMoved()
		}
	}
	return last
}

// OpenConns implements connCounter.
func (s Sum) OpenConns() (int, bool) {
	for _, m := range s {
		if cc, ok := m.(connCounter); ok {
			if n, ok := cc.OpenConns(); ok {
				return n, true
			}
		}
	}
	return 0, false
}
