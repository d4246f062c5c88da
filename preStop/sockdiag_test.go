package prestop

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// diagMsg builds one SOCK_DIAG_BY_FAMILY netlink message as the kernel sends it; info < 0
// leaves out tcp_info (a request socket), else it is a tcp_info of that many bytes.
func diagMsg(seq uint32, local, remote netip.AddrPort, state uint8, cookie uint64, info int, bytesRecv uint64, sinceDataMs uint32) []byte {
	ne := binary.NativeEndian
	m := make([]byte, inetDiagMsgLen)
	m[1] = state
	binary.BigEndian.PutUint16(m[4:], local.Port())
	binary.BigEndian.PutUint16(m[6:], remote.Port())
	if local.Addr().Is4() {
		m[0] = afInet
		a, b := local.Addr().As4(), remote.Addr().As4()
		copy(m[8:], a[:])
		copy(m[24:], b[:])
	} else {
		m[0] = afInet6
		a, b := local.Addr().As16(), remote.Addr().As16()
		copy(m[8:], a[:])
		copy(m[24:], b[:])
	}
	ne.PutUint32(m[44:], uint32(cookie))
	ne.PutUint32(m[48:], uint32(cookie>>32))
	ne.PutUint32(m[68:], 4242)
	if info >= 0 {
		attr := make([]byte, 4+info)
		ne.PutUint16(attr[0:], uint16(len(attr)))
		ne.PutUint16(attr[2:], inetDiagInfo)
		if info >= tcpInfoMinWithRcv {
			ne.PutUint32(attr[4+tcpInfoDataRecv:], sinceDataMs)
			ne.PutUint64(attr[4+tcpInfoBytesRecv:], bytesRecv)
		}
		m = append(m, attr...)
		for len(m)%4 != 0 {
			m = append(m, 0)
		}
	}
	return nlMsg(sockDiagByFamily, seq, m)
}

func nlMsg(typ uint16, seq uint32, body []byte) []byte {
	ne := binary.NativeEndian
	h := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(body))
	ne.PutUint32(h[0:], uint32(nlmsgHdrLen+len(body)))
	ne.PutUint16(h[4:], typ)
	ne.PutUint32(h[8:], seq)
	return append(h, body...)
}

func TestParseDiagMessages(t *testing.T) {
	const full = 232 // tcp_info of a 6.x kernel
	v4 := netip.MustParseAddrPort
	errno := func(e syscall.Errno) []byte {
		b := make([]byte, 4)
		binary.NativeEndian.PutUint32(b, uint32(-int32(e)))
		return nlMsg(nlmsgError, 1, b)
	}
	tests := []struct {
		name     string
		data     []byte
		want     []TCPConn
		wantDone bool
		wantErr  string
	}{
		{
			name: "IPv4 established with tcp_info, then done",
			data: slices.Concat(diagMsg(1, v4("10.0.0.7:8080"), v4("10.0.0.9:50000"), tcpEstablished, 1<<40|7, full, 1234, 250), nlMsg(nlmsgDone, 1, make([]byte, 4))),
			want: []TCPConn{{Socket: Socket{v4("10.0.0.7:8080"), v4("10.0.0.9:50000"), tcpEstablished, 4242}, Family: afInet, Cookie: 1<<40 | 7,
				HasInfo: true, BytesReceived: 1234, SinceData: 250 * time.Millisecond}},
			wantDone: true,
		},
		{
			name: "IPv4-mapped IPv6 reads as IPv4; a request socket has no tcp_info",
			data: slices.Concat(
				diagMsg(1, netip.AddrPortFrom(netip.MustParseAddr("::ffff:10.0.0.7"), 8080), v4("10.0.0.9:50001"), tcpEstablished, 9, full, 10, 0),
				diagMsg(1, v4("[2001:db8::1]:8080"), v4("[2001:db8::2]:40000"), tcpNewSynRecv, 10, -1, 0, 0)),
			want: []TCPConn{
				{Socket: Socket{v4("10.0.0.7:8080"), v4("10.0.0.9:50001"), tcpEstablished, 4242}, Family: afInet6, Cookie: 9, HasInfo: true, BytesReceived: 10},
				{Socket: Socket{v4("[2001:db8::1]:8080"), v4("[2001:db8::2]:40000"), tcpNewSynRecv, 4242}, Family: afInet6, Cookie: 10},
			},
		},
		{
			name: "answers to an earlier request are skipped",
			data: slices.Concat(diagMsg(7, v4("10.0.0.7:8080"), v4("10.0.0.9:1"), tcpEstablished, 1, full, 1, 0), nlMsg(nlmsgDone, 7, nil)),
		},
		{name: "an error answer", data: errno(syscall.EPERM), wantErr: syscall.EPERM.Error()},
		{name: "tcp_info of a kernel before 4.1", data: diagMsg(1, v4("10.0.0.7:8080"), v4("10.0.0.9:1"), tcpEstablished, 1, 104, 0, 0), wantErr: "older than 4.1"},
		{name: "message longer than the datagram", data: diagMsg(1, v4("10.0.0.7:8080"), v4("10.0.0.9:1"), tcpEstablished, 1, full, 1, 0)[:60], wantErr: "netlink message of"},
		{name: "short inet_diag_msg", data: nlMsg(sockDiagByFamily, 1, make([]byte, 20)), wantErr: "inet_diag_msg of 20 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, done, err := parseDiagMessages(tt.data, 1)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) || done != tt.wantDone {
				t.Errorf("got %+v (done %v), want %+v (done %v)", got, done, tt.want, tt.wantDone)
			}
		})
	}
}

func TestDiagRequest(t *testing.T) {
	b := diagRequest(afInet6, 3)
	ne := binary.NativeEndian
	if len(b) != nlmsgHdrLen+inetDiagReqV2Len || ne.Uint32(b) != uint32(len(b)) || ne.Uint16(b[4:]) != sockDiagByFamily ||
		ne.Uint16(b[6:]) != nlmFRequest|nlmFDump || ne.Uint32(b[8:]) != 3 {
		t.Fatalf("header % x", b[:nlmsgHdrLen])
	}
	r := b[nlmsgHdrLen:]
	if r[0] != afInet6 || r[1] != ipprotoTCP || r[2] != 1<<(inetDiagInfo-1) || ne.Uint32(r[4:])&(1<<tcpTimeWait) != 0 ||
		ne.Uint32(r[4:])&(1<<tcpEstablished|1<<tcpCloseWait|1<<tcpListen) != 1<<tcpEstablished|1<<tcpCloseWait|1<<tcpListen {
		t.Errorf("request % x", r)
	}
}

const tcpTimeWait = 6

// fakeDump returns the sockets a test sets.
type fakeDump struct {
	conns []TCPConn
	err   error
}

func (f *fakeDump) dump(...uint8) ([]TCPConn, error) { return slices.Clone(f.conns), f.err }

func conn(local, remote string, state uint8, cookie, bytes uint64) TCPConn {
	return TCPConn{Socket: Socket{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote), State: state},
		Cookie: cookie, HasInfo: state != tcpNewSynRecv && state != tcpListen, BytesReceived: bytes}
}

func TestSockDiagMeterActivity(t *testing.T) {
	listen := []TCPConn{conn("0.0.0.0:8080", "0.0.0.0:0", tcpListen, 1, 0), conn("127.0.0.1:9901", "0.0.0.0:0", tcpListen, 2, 0)}
	steps := []struct {
		name     string
		conns    []TCPConn
		want     uint64 // activity
		wantOpen int
	}{
		{name: "baseline: existing bytes are not traffic", conns: []TCPConn{
			conn("10.0.0.7:8080", "10.0.0.9:50000", tcpEstablished, 10, 500),
			conn("10.0.0.7:41000", "10.0.0.50:5432", tcpEstablished, 11, 9000), // outbound: ignored
			conn("127.0.0.1:9901", "127.0.0.1:40000", tcpEstablished, 12, 70),  // admin port: ignored
		}, want: 0, wantOpen: 1},
		{name: "nothing moved", conns: []TCPConn{
			conn("10.0.0.7:8080", "10.0.0.9:50000", tcpEstablished, 10, 500),
			conn("10.0.0.7:41000", "10.0.0.50:5432", tcpEstablished, 11, 9500),
			conn("127.0.0.1:9901", "127.0.0.1:40000", tcpEstablished, 12, 140),
		}, want: 0, wantOpen: 1},
		{name: "a request on the kept-alive connection", conns: []TCPConn{
			conn("10.0.0.7:8080", "10.0.0.9:50000", tcpEstablished, 10, 620),
		}, want: 120, wantOpen: 1},
		{name: "a new connection counts with its bytes, one being accepted too", conns: []TCPConn{
			conn("10.0.0.7:8080", "10.0.0.9:50000", tcpEstablished, 10, 620),
			conn("10.0.0.7:8080", "10.0.0.9:50001", tcpEstablished, 20, 80),
			conn("10.0.0.7:8080", "10.0.0.9:50002", tcpNewSynRecv, 21, 0),
		}, want: 120 + 81 + 1, wantOpen: 3},
		{name: "the caller closed after a last request: counted, not open", conns: []TCPConn{
			conn("10.0.0.7:8080", "10.0.0.9:50000", tcpCloseWait, 10, 700),
			conn("10.0.0.7:8080", "10.0.0.9:50001", tcpEstablished, 20, 80),
		}, want: 202 + 80, wantOpen: 1},
		{name: "gone sockets take nothing away", conns: nil, want: 282, wantOpen: 0},
	}
	d := &fakeDump{}
	m := &SockDiagMeter{Skip: []int{9901}, Dump: d.dump}
	for _, s := range steps {
		d.conns = append(slices.Clone(listen), s.conns...)
		n, err := m.Activity(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		open, ok := m.OpenConns()
		if n != s.want || open != s.wantOpen || !ok {
			t.Errorf("%s: activity %d, open %d (%v); want %d, %d", s.name, n, open, ok, s.want, s.wantOpen)
		}
	}
	if !slices.Equal(m.Ports, []int{8080}) {
		t.Errorf("ports %v, want [8080]: loopback listeners and the admin port are not serving ports", m.Ports)
	}
}

func TestSockDiagMeterLastMoved(t *testing.T) {
	c := conn("10.0.0.7:8080", "10.0.0.9:50000", tcpEstablished, 10, 5)
	c.SinceData = 3 * time.Second
	old := conn("10.0.0.7:8080", "10.0.0.9:50001", tcpEstablished, 11, 5)
	old.SinceData = time.Minute
	m := &SockDiagMeter{Ports: []int{8080}, Dump: (&fakeDump{conns: []TCPConn{c, old}}).dump}
	if _, err := m.Activity(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(m.LastMoved()); got < 3*time.Second || got > 4*time.Second {
		t.Errorf("last data %s ago, want the freshest socket's 3s", got)
	}
}

// When sock_diag fails, the meter counts new connections from /proc instead, says so once,
// and its count still only goes up.
func TestConnMeterFallsBackToProc(t *testing.T) {
	dir := t.TempDir()
	procTable(t, dir, 2, 30000)
	var logs bytes.Buffer
	d := &fakeDump{conns: []TCPConn{conn("0.0.0.0:8080", "0.0.0.0:0", tcpListen, 1, 0), conn("10.244.0.10:8080", "10.244.0.5:30000", tcpEstablished, 5, 100)}}
	m := NewConnMeter(nil, nil, slog.New(slog.NewJSONHandler(&logs, nil)))
	m.Diag.Dump, m.Proc.Root = d.dump, dir
	ctx := context.Background()
	first, err := m.Activity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.LastMoved().IsZero() {
		t.Error("sock_diag meter does not know its last move")
	}
	d.err = errors.New("protocol not supported")
	values := []uint64{first}
	for i := range 3 {
		if i == 2 {
			procTable(t, dir, 3, 30000) // a new connection
		}
		n, err := m.Activity(ctx)
		if err != nil {
			t.Fatalf("fallback failed: %v", err)
		}
		values = append(values, n)
	}
	if values[1] <= values[0] || values[2] != values[1] || values[3] != values[2]+1 {
		t.Errorf("activity %v: want a move at the switch, none without traffic, one per new connection", values)
	}
	if !slices.Equal(m.Proc.Ports, []int{8080}) {
		t.Errorf("/proc meter ports %v, want the ports sock_diag found", m.Proc.Ports)
	}
	if n := strings.Count(logs.String(), "per-socket counters unavailable"); n != 1 || !strings.Contains(logs.String(), "protocol not supported") {
		t.Errorf("logged the fallback %d times, want once with why:\n%s", n, logs.String())
	}
	if !m.LastMoved().IsZero() {
		t.Error("/proc cannot know the last move")
	}
	if open, ok := m.OpenConns(); !ok || open != 3 {
		t.Errorf("open %d (%v), want 3 from /proc", open, ok)
	}
}
