package prestop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Meter counts traffic: a number that grows with every new inbound connection or request.
type Meter interface {
	Activity(ctx context.Context) (uint64, error)
}

// ProcMeter counts new inbound connections on the serving ports from /proc/net/tcp{,6} (the
// preStop hook shares the app's network namespace), plus the app's request counter when it
// exposes one.
type ProcMeter struct {
	// Root is the proc filesystem, "/proc" unless a test says otherwise.
	Root string
	// Ports are the serving ports; empty means discover them at the first sample.
	Ports []int
	// App, if set, adds its RequestsTotal; its port is never a serving port.
	App *AppAdmin

	prev  map[inboundKey]struct{}
	conns uint64
	// lastRequest is the app's last request start at the latest sample (zero: unknown).
	lastRequest time.Time
}

// LastMoved is when the app says its last request started, as of the latest sample; zero
// without the app or before its first request.
func (m *ProcMeter) LastMoved() time.Time { return m.lastRequest }

// Activity implements Meter.
func (m *ProcMeter) Activity(ctx context.Context) (uint64, error) {
	socks, err := m.sockets()
	if err != nil {
		return 0, err
	}
	if len(m.Ports) == 0 {
		var skip []int
		if m.App != nil {
			skip = append(skip, m.App.Port())
		}
		m.Ports = ServingPorts(socks, skip...)
	}
	cur := Inbound(socks, m.Ports)
	for k := range cur {
		if _, old := m.prev[k]; !old && m.prev != nil {
			m.conns++
		}
	}
	m.prev = cur
	total := m.conns
	if m.App != nil {
		st, err := m.App.Status(ctx)
		if err != nil {
			return 0, err
		}
		total += st.RequestsTotal
		m.lastRequest = time.Time{}
		if t, err := time.Parse(time.RFC3339Nano, st.LastRequest); err == nil {
			m.lastRequest = t
		}
	}
	return total, nil
}

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
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", f.Name(), err)
		}
		all = append(all, socks...)
	}
	return all, nil
}

// lastMover is a Meter that knows when it last moved before its first sample: the app's last
// request, when the app reports it.
type lastMover interface {
	LastMoved() time.Time
}

// AwaitQuiet returns once the meter has not moved for quiet, sampling every interval; a meter
// error ends the wait with that error. Sampling is the only way to see the absence of traffic.
// When the meter knows when it last moved (the app's last request), the quiet window counts
// from then rather than from the first sample: traffic that stopped during the registry waits
// (the caller's node stopped routing before the slowest node did) is not waited for twice.
func AwaitQuiet(ctx context.Context, m Meter, quiet, every time.Duration) error {
	last, err := m.Activity(ctx)
	if err != nil {
		return err
	}
	since := time.Now()
	if lm, ok := m.(lastMover); ok {
		if t := lm.LastMoved(); !t.IsZero() && t.Before(since) {
			since = t
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for time.Since(since) < quiet {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		n, err := m.Activity(ctx)
		if err != nil {
			return err
		}
		if n != last {
			last, since = n, time.Now()
		}
	}
	return nil
}
