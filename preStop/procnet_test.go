package prestop

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func parseFixture(t *testing.T, name string) []Socket {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := ParseProcNetTCP(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseProcNetTCP(t *testing.T) {
	tests := []struct {
		file  string
		index int
		want  Socket
	}{
		{"tcp", 0, Socket{netip.MustParseAddrPort("0.0.0.0:8080"), netip.MustParseAddrPort("0.0.0.0:0"), tcpListen, 1001}},
		{"tcp", 1, Socket{netip.MustParseAddrPort("127.0.0.1:9901"), netip.MustParseAddrPort("0.0.0.0:0"), tcpListen, 1002}},
		{"tcp", 2, Socket{netip.MustParseAddrPort("10.244.0.10:8080"), netip.MustParseAddrPort("10.244.0.5:50000"), tcpEstablished, 1003}},
		{"tcp", 3, Socket{netip.MustParseAddrPort("10.244.0.10:8080"), netip.MustParseAddrPort("10.244.0.6:50001"), tcpSynRecv, 0}},
		{"tcp6", 0, Socket{netip.MustParseAddrPort("[::]:9090"), netip.MustParseAddrPort("[::]:0"), tcpListen, 2001}},
		{"tcp6", 1, Socket{netip.MustParseAddrPort("[::1]:3306"), netip.MustParseAddrPort("[::]:0"), tcpListen, 2002}},
		// IPv4-mapped IPv6 is reported as plain IPv4, so one key fits both families.
		{"tcp6", 2, Socket{netip.MustParseAddrPort("10.244.0.10:9090"), netip.MustParseAddrPort("10.244.0.8:40000"), tcpEstablished, 2003}},
		{"tcp6", 3, Socket{netip.MustParseAddrPort("[2001:db8::1]:9090"), netip.MustParseAddrPort("[2001:db8::2]:40960"), tcpEstablished, 2004}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.file, tt.index), func(t *testing.T) {
			socks := parseFixture(t, tt.file)
			if got := socks[tt.index]; got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseProcNetTCPErrors(t *testing.T) {
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for name, line := range map[string]string{
		"short line":   "0: 00000000:1F90 00000000:0000 0A",
		"bad address":  "0: XYZ:1F90 00000000:0000 0A 0:0 00:0 0 0 0 1",
		"bad length":   "0: 000000:1F90 00000000:0000 0A 0:0 00:0 0 0 0 1",
		"bad port":     "0: 00000000:PORT 00000000:0000 0A 0:0 00:0 0 0 0 1",
		"bad state":    "0: 00000000:1F90 00000000:0000 ZZ 0:0 00:0 0 0 0 1",
		"bad inode":    "0: 00000000:1F90 00000000:0000 0A 0:0 00:0 0 0 0 x",
		"no separator": "0: 000000001F90 00000000:0000 0A 0:0 00:0 0 0 0 1",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseProcNetTCP(strings.NewReader(header + line + "\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
				t.Errorf("err = %v, want an error naming line 2", err)
			}
		})
	}
}

func TestServingPortsAndInbound(t *testing.T) {
	socks := append(parseFixture(t, "tcp"), parseFixture(t, "tcp6")...)
	// Loopback listeners (9901, [::1]:3306) are not reachable by callers; 9090 is the admin port here.
	if got := ServingPorts(socks); !slices.Equal(got, []int{8080, 9090}) {
		t.Errorf("ServingPorts = %v, want [8080 9090]", got)
	}
	if got := ServingPorts(socks, 9090); !slices.Equal(got, []int{8080}) {
		t.Errorf("ServingPorts without admin = %v, want [8080]", got)
	}
	// Established and SYN_RECV on 8080 count; the outbound connection from port 54321 and the
	// TIME_WAIT socket do not.
	if got := len(Inbound(socks, []int{8080})); got != 2 {
		t.Errorf("Inbound(8080) = %d connections, want 2", got)
	}
	if got := len(Inbound(socks, []int{8080, 9090})); got != 4 {
		t.Errorf("Inbound(8080, 9090) = %d connections, want 4", got)
	}
}

// procTable writes a /proc/net/tcp with n established connections to port 8080.
func procTable(t testing.TB, dir string, n, firstRemotePort int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	b.WriteString("   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n")
	for i := range n {
		fmt.Fprintf(&b, "%4d: 0A00F40A:1F90 0500F40A:%04X 01 00000000:00000000 00:00000000 00000000     0        0 %d 1 0 20 4 30 10 -1\n",
			i+1, firstRemotePort+i, 10000+firstRemotePort+i)
	}
	if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "net", "tcp"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProcMeterManySockets(t *testing.T) {
	dir := t.TempDir()
	procTable(t, dir, 5000, 20000)
	m := &ProcMeter{Root: dir}
	ctx := context.Background()
	first, err := m.Activity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first != 0 || !slices.Equal(m.Ports, []int{8080}) {
		t.Fatalf("first sample = %d, ports %v; want 0 (baseline) and [8080]", first, m.Ports)
	}
	// 100 connections close, 300 new ones open: activity grows by the new ones only.
	procTable(t, dir, 5200, 20100)
	n, err := m.Activity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 300 {
		t.Errorf("activity after 300 new connections = %d, want 300", n)
	}
	if n2, _ := m.Activity(ctx); n2 != n {
		t.Errorf("activity without change moved from %d to %d", n, n2)
	}
}

func BenchmarkParseProcNetTCP(b *testing.B) {
	dir := b.TempDir()
	procTable(b, dir, 5000, 10000)
	data, err := os.ReadFile(filepath.Join(dir, "net", "tcp"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseProcNetTCP(strings.NewReader(string(data))); err != nil {
			b.Fatal(err)
		}
	}
}
