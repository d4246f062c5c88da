package grpcgraceful

import (
	"context"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lastcall-dev/lastcall/graceful"
)

// MarkerKey is the trailer of an answer to a call that the server did not process because it is
// shutting down: with status UNAVAILABLE, any method may be retried on another endpoint. It is
// graceful.MarkerHeader in the lower case of gRPC metadata.
const MarkerKey = "lastcall-shutdown"

// healthPrefix starts the health service's methods: health checks are not requests.
const healthPrefix = "/grpc.health.v1.Health/"

// unary counts the call like an HTTP request: graceful's in-flight count, total and last-request
// time, which its admin /status reports, and its duration, which decides whether a call that
// arrives while stopping is still served (graceful.Config.LateRequestBudget).
func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		return handler(ctx, req)
	}
	t, ok := s.g.Admit()
	if !ok {
		return nil, s.NotProcessed(ctx)
	}
	defer s.end(ctx, t.End)
	ctx, cancel := withCancelOf(ctx, s.g.Context())
	defer cancel()
	return handler(ctx, req)
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := ss.Context()
	if strings.HasPrefix(info.FullMethod, healthPrefix) {
		// A watch would hold GracefulStop until the client hangs up: it ends with the stop.
		ctx, cancel := withCancelOf(ctx, s.closing)
		defer cancel()
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
	// Counted but not timed: a stream lasts as long as its caller wants (a watch, a feed), which
	// says nothing of how long a late request needs.
	if !s.g.Begin() {
		return s.NotProcessed(ctx)
	}
	defer s.end(ctx, s.g.End)
	ctx, cancel := withCancelOf(ctx, s.g.Context())
	defer cancel()
	return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
}

// end uncounts a call with uncount. While draining or stopping, the call's connection then goes
// away too (with its generation), as an HTTP/1.1 connection closes after its response:
// connections the drain's GOAWAY reached are not concerned, those opened since are.
func (s *Server) end(ctx context.Context, uncount func()) {
	uncount()
	if s.g.State() >= graceful.Draining {
		if c := s.connOf(ctx); c != nil {
			s.rotate(c.gen.Load())
		}
	}
}

// NotProcessed answers a call that the server did not process: UNAVAILABLE with MarkerKey, so
// that Retry sends it elsewhere whatever the method. The server answers so itself to a call that
// arrives while it is stopping and cannot finish before the stop's deadline (graceful's late
// request rule); a handler whose context was cancelled at the stop deadline and that rolled back
// everything it did returns it too (return nil, s.NotProcessed(ctx)). A handler that left any
// effect behind must return something else.
//
// It first sends GOAWAY on the call's connection and waits until the frame was written (over
// plain-text HTTP/2; over TLS it cannot see the frame and does not wait), so that the caller
// never retries on that connection.
func (s *Server) NotProcessed(ctx context.Context) error {
	if c := s.connOf(ctx); c != nil {
		s.rotate(c.gen.Load())
		if !c.awaitGoAway(goAwayWait) {
			s.log.Warn("answering 'not processed' before the connection's GOAWAY was written", "peer", c.key, "waited", goAwayWait)
		}
	}
	_ = grpc.SetTrailer(ctx, metadata.Pairs(MarkerKey, "1"))
	return status.Error(codes.Unavailable, "shutting down: call not processed, retry on another endpoint")
}

// connOf finds the accepted connection a call came on.
func (s *Server) connOf(ctx context.Context) *conn {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return nil
	}
	v, ok := s.conns.Load(p.Addr.String())
	if !ok {
		return nil
	}
	return v.(*conn)
}

// withCancelOf returns ctx that also ends when other does: a call's context ends at the
// graceful.Server's stop deadline, so that its handler can roll back.
func withCancelOf(ctx, other context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(other, cancel)
	return ctx, func() {
		stop()
		cancel()
	}
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
