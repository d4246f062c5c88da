package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/lastcall-dev/lastcall/e2e/app/workrpc"
	"github.com/lastcall-dev/lastcall/graceful"
)

var quiet = slog.New(slog.DiscardHandler)

const wait = 10 * time.Second

func testOptions() options {
	return options{listen: "127.0.0.1:0", grpcListen: "127.0.0.1:0", admin: off, work: 5 * time.Millisecond, stopTimeout: 5 * time.Second}
}

// get sends GET / over HTTP/1.1 or h2c and returns the protocol the answer came in.
func get(t *testing.T, addr string, h2c bool) string {
	t.Helper()
	tr := &http.Transport{}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: wait}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / over %s: %s", resp.Proto, resp.Status)
	}
	return resp.Proto
}

// idleH2C opens an HTTP/2 connection with prior knowledge, waits for the server's SETTINGS and
// sends no request on it.
func idleH2C(t *testing.T, addr string) *http2.Framer {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	// the server's SETTINGS: it serves the connection as HTTP/2 from now on
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no SETTINGS from the server: %v", err)
		}
		if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
			if err := fr.WriteSettingsAck(); err != nil {
				t.Fatal(err)
			}
			return fr
		}
	}
}

// awaitGoAway reads fr's frames until a GOAWAY, acknowledging the server's SETTINGS and PINGs.
func awaitGoAway(t *testing.T, fr *http2.Framer) *http2.GoAwayFrame {
	t.Helper()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY: %v", err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			return f
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		}
	}
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// call sends Work/Do and checks the pod named in the answer's header.
func call(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var header metadata.MD
	if _, err := workrpc.Do(ctx, cc, "x", grpc.Header(&header)); err != nil {
		t.Fatalf("Work/Do: %v", err)
	}
	if v := header.Get(workrpc.ProcessedByKey); len(v) != 1 || v[0] != "pod-a" {
		t.Errorf("header %v, want %s: pod-a", header, workrpc.ProcessedByKey)
	}
}

func checkHealth(t *testing.T, cc *grpc.ClientConn) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	return resp.GetStatus()
}

// awaitLeaves waits until cc leaves state from: a GOAWAY (or a lost connection) moves a
// pick_first channel from READY to IDLE.
func awaitLeaves(t *testing.T, cc *grpc.ClientConn, from connectivity.State) connectivity.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for cc.GetState() == from {
		if !cc.WaitForStateChange(ctx, from) {
			t.Fatalf("channel still %s after %s", from, wait)
		}
	}
	return cc.GetState()
}

func TestAppServesH2CAndGRPCThroughADrain(t *testing.T) {
	t.Setenv("POD_NAME", "pod-a")
	a, err := newApp(testOptions(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.srv.Run(context.Background()) }()
	<-a.srv.Reached(graceful.Running)
	httpAddr, grpcAddr := a.srv.Addrs()[0], a.grpc.Addr()

	if p := get(t, httpAddr, false); p != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 client answered in %s", p)
	}
	if p := get(t, httpAddr, true); p != "HTTP/2.0" {
		t.Errorf("h2c client answered in %s", p)
	}
	cc := dialGRPC(t, grpcAddr)
	call(t, cc)
	if st := checkHealth(t, cc); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health while running: %s", st)
	}
	if st := cc.GetState(); st != connectivity.Ready {
		t.Fatalf("gRPC channel %s after a call", st)
	}
	idle := idleH2C(t, httpAddr)

	a.srv.Drain("test")
	// the idle HTTP/2 connection is told to go away, with no stream lost
	if f := awaitGoAway(t, idle); f.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v, want NO_ERROR", f.ErrCode)
	}
	// the gRPC connection too: the channel leaves READY, and connects again for the next call
	awaitLeaves(t, cc, connectivity.Ready)
	if st := checkHealth(t, cc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while draining: %s, want NOT_SERVING", st)
	}
	call(t, cc) // still served while draining
	if got := a.processed.Load(); got != 4 {
		t.Errorf("processed %d, want 4: 2 HTTP requests and 2 gRPC calls", got)
	}

	a.srv.Shutdown()
	awaitReturn(t, done)
}

// awaitReturn waits for the app to return, cleanly.
func awaitReturn(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("run did not return")
	}
}

func TestPlainServesH2CAndGRPCAndStopsThem(t *testing.T) {
	t.Setenv("POD_NAME", "pod-a")
	o := testOptions()
	p, err := newPlain(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background()) // SIGTERM
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.run(ctx, o, quiet) }()
	httpAddr, grpcAddr := p.httpLn.Addr().String(), p.grpcLn.Addr().String()

	if proto := get(t, httpAddr, true); proto != "HTTP/2.0" {
		t.Errorf("h2c client answered in %s", proto)
	}
	cc := dialGRPC(t, grpcAddr)
	call(t, cc)
	if st := checkHealth(t, cc); st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %s", st)
	}
	idle := idleH2C(t, httpAddr)

	cancel()
	if f := awaitGoAway(t, idle); f.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v, want NO_ERROR", f.ErrCode)
	}
	awaitLeaves(t, cc, connectivity.Ready) // GracefulStop's GOAWAY
	awaitReturn(t, done)
	// the control has nothing left to answer with: a plain caller fails
	cctx, ccancel := context.WithTimeout(context.Background(), wait)
	defer ccancel()
	if _, err := workrpc.Do(cctx, cc, "x"); err == nil {
		t.Error("a call after the stop succeeded")
	}
	if got := p.processed.Load(); got != 2 {
		t.Errorf("processed %d, want 2", got)
	}
}

func TestGRPCOff(t *testing.T) {
	o := testOptions()
	o.grpcListen = off
	a, err := newApp(o, quiet)
	if err != nil || a.grpc != nil {
		t.Errorf("newApp with --grpc-listen -: %v, gRPC server %v", err, a.grpc)
	}
	p, err := newPlain(o)
	if err != nil {
		t.Fatal(err)
	}
	defer p.httpLn.Close()
	if p.grpc != nil || p.grpcLn != nil {
		t.Error("plain app serves gRPC with --grpc-listen -")
	}
	if _, err := newPlain(options{listen: "127.0.0.1:0", grpcListen: "bad:address:x"}); err == nil || !strings.HasPrefix(err.Error(), "--grpc-listen") {
		t.Errorf("bad --grpc-listen: %v, want an error naming it", err)
	}
}
