package grpcgraceful

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/lastcall-dev/lastcall/graceful"
)

// Defaults of Retry.
const (
	DefaultMaxTries = graceful.DefaultMaxTries
	DefaultBackoff  = 50 * time.Millisecond
	maxBackoff      = time.Second
)

// Retry is the calling side of a stop: its interceptors try a call again on the same ClientConn,
// whose balancer picks a connection again, when
//   - the server answered UNAVAILABLE with the trailer MarkerKey: it did not process the call,
//     so any method may be retried. It sent GOAWAY on that connection before the answer, so the
//     balancer does not pick the connection again. The first such retry goes at once; later
//     ones wait as below, since the channel found no other ready connection than a stopping one;
//   - the call failed with UNAVAILABLE before it reached any connection (none was ready), after
//     Backoff, which doubles with each wait.
//
// Anything else is returned as is, UNAVAILABLE after the call was sent included: only the caller
// knows whether it may be repeated. Tries are bounded by MaxTries and the call's context.
//
// A server-streaming call is retried until its first response message: the interceptor keeps
// the request to send it again. Client-streaming and bidirectional calls are retried only when
// the stream could not be opened.
//
// The zero value is ready to use:
//
//	r := grpcgraceful.Retry{}
//	cc, err := grpc.NewClient(target,
//		grpc.WithChainUnaryInterceptor(r.UnaryClientInterceptor()),
//		grpc.WithChainStreamInterceptor(r.StreamClientInterceptor()))
type Retry struct {
	// MaxTries bounds the tries per call; DefaultMaxTries when zero.
	MaxTries int
	// Backoff is the wait before the first retry of a call that reached no connection;
	// DefaultBackoff when zero.
	Backoff time.Duration
}

func (r Retry) check() error {
	switch {
	case r.MaxTries < 0:
		return fmt.Errorf("grpcgraceful: Retry.MaxTries is %d: want a positive number (or zero for %d)", r.MaxTries, DefaultMaxTries)
	case r.Backoff < 0:
		return fmt.Errorf("grpcgraceful: Retry.Backoff is %s: want a positive duration (or zero for %s)", r.Backoff, DefaultBackoff)
	}
	return nil
}

func (r Retry) tries() int {
	if r.MaxTries == 0 {
		return DefaultMaxTries
	}
	return r.MaxTries
}

// wait sleeps before a retry, Backoff doubled for each earlier wait, and reports false when ctx
// ended first.
func (r Retry) wait(ctx context.Context, waited int) bool {
	d := r.Backoff
	if d == 0 {
		d = DefaultBackoff
	}
	for range waited {
		if d >= maxBackoff {
			break
		}
		d *= 2
	}
	t := time.NewTimer(min(d, maxBackoff))
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// outcome is what a failed try says about trying again.
type outcome int

const (
	final        outcome = iota // processed, or maybe processed: return the error
	notProcessed                // the server said so: retry now
	notSent                     // no connection took the call: retry after a backoff
)

// classify reads a failed try: its error, its trailer, and whether it reached a connection.
func classify(err error, trailer metadata.MD, reached bool) outcome {
	if status.Code(err) != codes.Unavailable {
		return final
	}
	if len(trailer.Get(MarkerKey)) > 0 {
		return notProcessed
	}
	if !reached {
		return notSent
	}
	return final
}

// backoff paces one call's retries.
type backoff struct {
	marked, waits int
}

// before waits, if it must, before retrying after a failure o (notProcessed or notSent), and
// reports false when ctx ended first.
func (b *backoff) before(ctx context.Context, r Retry, o outcome) bool {
	if o == notProcessed {
		b.marked++
		if b.marked == 1 {
			return true
		}
	}
	b.waits++
	return r.wait(ctx, b.waits-1)
}

// UnaryClientInterceptor returns the interceptor that retries unary calls.
func (r Retry) UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if err := r.check(); err != nil {
			return err
		}
		tries := r.tries()
		var b backoff
		for try := 1; ; try++ {
			var trailer metadata.MD
			var p peer.Peer // set only when the call got a stream on a connection
			err := invoker(ctx, method, req, reply, cc, append(opts[:len(opts):len(opts)], grpc.Trailer(&trailer), grpc.Peer(&p))...)
			if err == nil || try >= tries || ctx.Err() != nil {
				return err
			}
			if o := classify(err, trailer, p.Addr != nil); o == final || !b.before(ctx, r, o) {
				return err
			}
		}
	}
}

// StreamClientInterceptor returns the interceptor that retries streams: opening them, and a
// server-streaming call until its first response message.
func (r Retry) StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if err := r.check(); err != nil {
			return nil, err
		}
		b := new(backoff)
		open := func(try int) (grpc.ClientStream, int, error) {
			for ; ; try++ {
				cs, err := streamer(ctx, desc, cc, method, opts...)
				// Opening a stream sends nothing that a server may have processed.
				if err == nil || try >= r.tries() {
					return cs, try, err
				}
				if o := classify(err, nil, false); o == final || !b.before(ctx, r, o) {
					return cs, try, err
				}
			}
		}
		cs, try, err := open(1)
		if err != nil || desc.ClientStreams {
			return cs, err
		}
		return &replayStream{cs: cs, try: try, open: open, backoff: b, r: r, ctx: ctx}, nil
	}
}

// replayStream is a server-streaming call that keeps its request until the first response
// message, to open it again elsewhere when the server answers "not processed".
type replayStream struct {
	r       Retry
	ctx     context.Context
	open    func(try int) (grpc.ClientStream, int, error)
	backoff *backoff

	mu        sync.Mutex // guards cs against Header, Trailer and Context called beside RecvMsg
	cs        grpc.ClientStream
	try       int
	req       any
	closeSent bool
	committed bool
}

func (s *replayStream) stream() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cs
}

func (s *replayStream) Header() (metadata.MD, error) { return s.stream().Header() }
func (s *replayStream) Trailer() metadata.MD         { return s.stream().Trailer() }
func (s *replayStream) Context() context.Context     { return s.stream().Context() }

// SendMsg is called once, with the request, before the caller gets the stream.
func (s *replayStream) SendMsg(m any) error {
	s.req = m
	return s.stream().SendMsg(m)
}

func (s *replayStream) CloseSend() error {
	s.closeSent = true
	return s.stream().CloseSend()
}

func (s *replayStream) RecvMsg(m any) error {
	for {
		cs := s.stream()
		err := cs.RecvMsg(m)
		switch {
		case err == nil:
			s.committed = true
			return nil
		case s.committed || errors.Is(err, io.EOF) || s.try >= s.r.tries() || s.ctx.Err() != nil ||
			classify(err, cs.Trailer(), true) != notProcessed || !s.backoff.before(s.ctx, s.r, notProcessed):
			return err
		}
		next, try, oerr := s.open(s.try + 1)
		if oerr != nil {
			return oerr
		}
		if s.req != nil {
			if err := next.SendMsg(s.req); err != nil {
				return err
			}
		}
		if s.closeSent {
			if err := next.CloseSend(); err != nil {
				return err
			}
		}
		s.mu.Lock()
		s.cs, s.try = next, try
		s.mu.Unlock()
	}
}
