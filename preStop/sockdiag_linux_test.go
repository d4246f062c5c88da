//go:build linux

package prestop

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/onsi/gomega"
	"golang.org/x/sys/unix"
)

// The offsets the parser reads are the kernel's (x/sys mirrors struct tcp_info).
func TestTCPInfoOffsets(t *testing.T) {
	var ti unix.TCPInfo
	if o := unsafe.Offsetof(ti.Last_data_recv); o != tcpInfoDataRecv {
		t.Errorf("tcpi_last_data_recv at %d, parser reads %d", o, tcpInfoDataRecv)
	}
	if o := unsafe.Offsetof(ti.Bytes_received); o != tcpInfoBytesRecv {
		t.Errorf("tcpi_bytes_received at %d, parser reads %d", o, tcpInfoBytesRecv)
	}
}

// inboundOf finds the accepted side of a loopback connection in a dump.
func inboundOf(t *testing.T, conns []TCPConn, server, client net.Addr) (TCPConn, bool) {
	t.Helper()
	sp, cp := server.(*net.TCPAddr).AddrPort(), client.(*net.TCPAddr).AddrPort()
	for _, c := range conns {
		if c.Local.Port() == sp.Port() && c.Remote.Port() == cp.Port() {
			return c, true
		}
	}
	return TCPConn{}, false
}

// checkDumpSeesBytes opens a real connection on loopback (IPv4 and IPv6 when available), writes
// to it and checks the dump reports the accepted socket with the bytes received.
func checkDumpSeesBytes(t *testing.T, network, addr string) {
	g := gomega.NewWithT(t)
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	if _, err := c.Write([]byte(strings.Repeat("x", 1000))); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	g.Eventually(func(g gomega.Gomega) {
		conns, err := DumpTCP()
		g.Expect(err).NotTo(gomega.HaveOccurred())
		in, ok := inboundOf(t, conns, ln.Addr(), c.LocalAddr())
		g.Expect(ok).To(gomega.BeTrue(), "the accepted socket is in the dump")
		g.Expect(in.State).To(gomega.Equal(uint8(tcpEstablished)))
		g.Expect(in.HasInfo).To(gomega.BeTrue())
		g.Expect(in.BytesReceived).To(gomega.Equal(uint64(1000)))
		g.Expect(in.Cookie).NotTo(gomega.BeZero())
		g.Expect(in.SinceData).To(gomega.BeNumerically("<", 10*time.Second))
	}).Should(gomega.Succeed())
}

func TestDumpTCPRealSockets(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { checkDumpSeesBytes(t, "tcp4", "127.0.0.1:0") })
	t.Run("ipv6", func(t *testing.T) { checkDumpSeesBytes(t, "tcp6", "[::1]:0") })
}

// childEnv marks the unprivileged re-run of this test binary.
const childEnv = "LASTCALL_SOCKDIAG_UNPRIVILEGED_CHILD"

// sock_diag needs no privilege: the hook runs as the app's user, without capabilities. As root,
// the test runs itself again as nobody, with no capability.
func TestDumpTCPUnprivileged(t *testing.T) {
	if os.Getenv(childEnv) == "" && os.Geteuid() == 0 {
		runAsNobody(t, "TestDumpTCPUnprivileged")
		return
	}
	if os.Getenv(childEnv) != "" {
		if os.Geteuid() == 0 {
			t.Fatal("child still runs as root")
		}
		if capEff := effectiveCaps(t); capEff != "0000000000000000" {
			t.Fatalf("child has capabilities %s", capEff)
		}
	}
	checkDumpSeesBytes(t, "tcp4", "127.0.0.1:0")
}

func effectiveCaps(t *testing.T) string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return ""
}

// runAsNobody runs one test of this binary again as uid/gid 65534, from a copy nobody can read.
func runAsNobody(t *testing.T, test string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent is private to root.
	dir, err := os.MkdirTemp("", "lastcall-sockdiag-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "prestop.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"=1", "GOCACHE=/nonexistent", "HOME=/nonexistent")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: "+test) {
		t.Fatalf("unprivileged run failed (%v):\n%s", err, out)
	}
	t.Logf("as uid 65534:\n%s", out)
}

// keepAliveLoad sends GETs to url every interval over one kept-alive connection until stop,
// and leaves the connection open, as Go's client does for 90 s; lastSent is when the latest
// request was sent (Unix nanoseconds).
func keepAliveLoad(t *testing.T, client *http.Client, url string, every time.Duration, stop <-chan struct{}, sent, lastSent *atomic.Int64) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		lastSent.Store(time.Now().UnixNano())
		resp, err := client.Get(url)
		if err != nil {
			t.Errorf("request: %v", err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		sent.Add(1)
	}
}

// The target of issue 15: an app not on graceful (a plain net/http server), no --app-admin,
// steady requests on one kept-alive connection: --quiet is not reached while they flow, and is
// once they stop. New-connection counting would have called it quiet after --quiet.
func TestSockDiagMeterSeesKeepAliveRequests(t *testing.T) {
	g := gomega.NewWithT(t)
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	stop := make(chan struct{})
	var sent, lastSent atomic.Int64
	loadDone := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	go func() {
		defer close(loadDone)
		keepAliveLoad(t, client, srv.URL, 50*time.Millisecond, stop, &sent, &lastSent)
	}()
	g.Eventually(sent.Load).Should(gomega.BeNumerically(">", 2))

	// Activity grows while requests flow, on the one connection.
	m := &SockDiagMeter{Ports: []int{port}}
	ctx := context.Background()
	prev, err := m.Activity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.Eventually(func() uint64 { n, _ := m.Activity(ctx); return n }).Should(gomega.BeNumerically(">", prev))
		prev, _ = m.Activity(ctx)
	}
	if open, ok := m.OpenConns(); !ok || open != 1 {
		t.Errorf("open connections %d (%v), want the one kept alive", open, ok)
	}

	// AwaitQuiet is not reached while they flow.
	const quiet = 300 * time.Millisecond
	quietAt := make(chan time.Time, 1)
	go func() {
		err := AwaitQuiet(ctx, &SockDiagMeter{Ports: []int{port}}, quiet, 30*time.Millisecond)
		if err != nil {
			t.Errorf("AwaitQuiet: %v", err)
		}
		quietAt <- time.Now()
	}()
	g.Consistently(quietAt, 5*quiet, 50*time.Millisecond).ShouldNot(gomega.Receive(), "quiet reached while requests flow")
	close(stop)
	<-loadDone
	last := time.Unix(0, lastSent.Load())

	// ... and is reached after they stop, the connection still open.
	var at time.Time
	g.Eventually(quietAt, 10*quiet).Should(gomega.Receive(&at))
	// The kernel's clock for the last data is in jiffies: a few milliseconds either way.
	if el := at.Sub(last); el < quiet-10*time.Millisecond {
		t.Errorf("quiet %s after the last request, want at least %s", el, quiet)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want every request on one kept-alive connection", n)
	}
	if _, err := m.Activity(ctx); err != nil {
		t.Fatal(err)
	}
	if open, _ := m.OpenConns(); open != 1 {
		t.Errorf("%d open connections after quiet, want the caller's idle one", open)
	}
	t.Logf("%d requests on %d connection; quiet %s after the last", sent.Load(), conns.Load(), at.Sub(last).Round(time.Millisecond))
}

// The open-connection count follows real sockets: accepted and open counts, closed by the
// caller or by the app does not.
func TestSockDiagMeterOpenConnections(t *testing.T) {
	g := gomega.NewWithT(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	var clients, servers []net.Conn
	for range 3 {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		clients, servers = append(clients, c), append(servers, s)
	}
	defer func() {
		for _, c := range append(clients, servers...) {
			_ = c.Close()
		}
	}()
	m := &SockDiagMeter{Ports: []int{port}}
	open := func() int {
		_, err := m.Activity(context.Background())
		g.Expect(err).NotTo(gomega.HaveOccurred())
		n, ok := m.OpenConns()
		g.Expect(ok).To(gomega.BeTrue())
		return n
	}
	g.Expect(open()).To(gomega.Equal(3))
	_ = clients[0].Close() // the caller closed: CLOSE_WAIT on the app's side
	g.Eventually(open).Should(gomega.Equal(2))
	_ = servers[1].Close() // the app closed: FIN_WAIT
	g.Eventually(open).Should(gomega.Equal(1))
	// An outbound connection from the same process is not inbound.
	other, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	out, err := net.Dial("tcp4", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	g.Consistently(open, 100*time.Millisecond, 20*time.Millisecond).Should(gomega.Equal(1))
}

// A Go server on ":port" listens as IPv6 and accepts IPv4 callers as IPv6 sockets: after its
// first sample the meter dumps that family alone, and still sees an IPv4 caller's bytes.
func TestSockDiagMeterDumpsTheListenersFamily(t *testing.T) {
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ln.Addr().(*net.TCPAddr).IP.To4() != nil {
		t.Skip("no dual-stack listener here")
	}
	port := ln.Addr().(*net.TCPAddr).Port
	var asked [][]uint8
	m := &SockDiagMeter{Ports: []int{port}, Dump: func(families ...uint8) ([]TCPConn, error) {
		asked = append(asked, families)
		return DumpTCP(families...)
	}}
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	before, err := m.Activity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(s, make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	after, err := m.Activity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if after-before != 5 {
		t.Errorf("activity moved by %d, want the IPv4 caller's 5 bytes", after-before)
	}
	if len(asked) != 2 || len(asked[0]) != 0 || !slices.Equal(asked[1], []uint8{afInet6}) {
		t.Errorf("families asked %v, want every family, then IPv6 alone", asked)
	}
}

// BenchmarkDumpTCP is the CPU time (user + system: the kernel walks the host's whole
// established-socket hash table for each family, however few sockets the namespace has) one
// socket dump costs, for both families and for one.
//
//	go test -run '^$' -bench DumpTCP ./preStop/
func BenchmarkDumpTCP(b *testing.B) {
	for _, v := range []struct {
		name     string
		families []uint8
	}{{"both-families", nil}, {"ipv6-only", []uint8{afInet6}}} {
		b.Run(v.name, func(b *testing.B) {
			before, ok := cpuUsed()
			if !ok {
				b.Skip("no CPU time here")
			}
			n := 0
			for b.Loop() {
				if _, err := DumpTCP(v.families...); err != nil {
					b.Fatal(err)
				}
				n++
			}
			after, _ := cpuUsed()
			b.ReportMetric(float64((after-before)/time.Microsecond)/float64(n), "cpu-µs/dump")
		})
	}
}
