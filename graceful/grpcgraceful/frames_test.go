package grpcgraceful_test

import (
	"math"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
	"github.com/lastcall-dev/lastcall/graceful/internal/h2test"
)

// placeRaw sends a Place call on stream of a raw connection.
func placeRaw(t *testing.T, c *h2test.Conn, stream uint32, authority, item string) {
	t.Helper()
	msg, err := proto.Marshal(wrapperspb.String(item))
	if err != nil {
		t.Fatal(err)
	}
	c.Request(stream, [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", authority}, {":path", orders.PlaceMethod},
		{"content-type", "application/grpc"}, {"te", "trailers"},
	}, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)) // uncompressed, length-prefixed
}

// Draining sends GOAWAY on an idle connection, in grpc-go's two steps (grpc/grpc-go#1387): first
// one that still covers every stream, with a PING; once the PING is answered, one with the last
// stream the server processed.
func TestDrainSendsGOAWAYOnIdleConnections(t *testing.T) {
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	c := h2test.Dial(t, in.addr())
	placeRaw(t, c, 1, in.addr(), "before the drain")
	c.Until(h2test.StreamEnded(1))

	in.g.Drain("test")
	got := c.Until(func(e h2test.Event) bool { return e.Kind == "GOAWAY" && e.LastID != math.MaxInt32 })
	var first, ping bool
	for _, e := range got {
		switch {
		case e.Kind == "GOAWAY" && e.LastID == math.MaxInt32 && e.Code == http2.ErrCodeNo:
			first = true
		case e.Kind == "PING" && first:
			ping = true
		case e.Kind == "GOAWAY" && (!ping || e.LastID != 1 || e.Code != http2.ErrCodeNo):
			t.Errorf("second GOAWAY %+v: want NO_ERROR, last stream 1, after the first GOAWAY and its PING", e)
		}
	}
	if !first || !ping {
		t.Errorf("frames %+v: want GOAWAY(NO_ERROR, 2^31-1), PING, then GOAWAY(NO_ERROR, 1)", got)
	}
}

// A call answered "not processed" gets its answer only after a GOAWAY on its connection: a client
// reads the GOAWAY first and does not send its retry on this connection.
func TestNotProcessedAnswerFollowsAGOAWAY(t *testing.T) {
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	c := h2test.Dial(t, in.addr())
	placeRaw(t, c, 1, in.addr(), "reject")
	got := c.Until(h2test.StreamEnded(1))
	answer := got[len(got)-1]
	if answer.Kind != "HEADERS" || answer.Fields["grpc-status"] != "14" || answer.Fields[grpcgraceful.MarkerKey] != "1" {
		t.Errorf("answer %+v: want trailers with grpc-status 14 (UNAVAILABLE) and %s: 1", answer, grpcgraceful.MarkerKey)
	}
	goAwayFirst := false
	for _, e := range got {
		goAwayFirst = goAwayFirst || e.Kind == "GOAWAY"
	}
	if !goAwayFirst {
		t.Errorf("frames %+v: want a GOAWAY before the answer", got)
	}
}

// Once stopping, the server refuses new connections and sends GOAWAY on the others; a call that
// crosses the GOAWAY and cannot finish before the stop's deadline is answered "not processed",
// and not processed.
func TestLateCallIsAnsweredNotProcessed(t *testing.T) {
	in := startInstance(t, "a", newLedger(), graceful.Config{LateRequestBudget: time.Minute}, grpcgraceful.Config{}) // more than is left
	holder := dial(t, nil, nil, in.addr())
	held := make(chan error, 1)
	go func() { _, _, err := place(holder, "hold"); held <- err }()
	in.awaitHeld(t)
	c := h2test.Dial(t, in.addr())
	c.Until(func(e h2test.Event) bool { return e.Kind == "SETTINGS" })
	c.HoldPings() // the second GOAWAY would refuse the late call without an answer
	in.g.Shutdown()
	<-in.g.Reached(graceful.Stopping) // the held call keeps it there
	c.Until(func(e h2test.Event) bool { return e.Kind == "GOAWAY" })
	if conn, err := net.DialTimeout("tcp", in.addr(), 10*time.Second); err == nil {
		conn.Close()
		t.Error("a stopping server accepted a new connection")
	}

	placeRaw(t, c, 1, in.addr(), "late")
	got := c.Until(h2test.StreamEnded(1))
	if answer := got[len(got)-1]; answer.Kind != "HEADERS" || answer.Fields["grpc-status"] != "14" || answer.Fields[grpcgraceful.MarkerKey] != "1" {
		t.Errorf("answer %+v: want trailers with grpc-status 14 (UNAVAILABLE) and %s: 1", answer, grpcgraceful.MarkerKey)
	}
	if by := in.svc.l.processedBy("late"); len(by) != 0 {
		t.Errorf("late call processed by %v", by)
	}

	c.Close() // with its PING unanswered, the connection would hold GracefulStop 5 s
	close(in.svc.release)
	if err := <-held; err != nil {
		t.Errorf("the call in flight at the stop: %v", err)
	}
	if err := in.wait(t); err != nil {
		t.Fatal(err)
	}
}
