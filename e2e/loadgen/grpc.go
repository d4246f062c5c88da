package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	"github.com/lastcall-dev/lastcall/e2e/app/workrpc"
	"github.com/lastcall-dev/lastcall/e2e/report"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
)

// grpcTarget is the service path's gRPC target: host:port, or dns:///host:port, as grpc-go's
// NewClient takes it (its default resolver is DNS).
func grpcTarget(raw string) (fixed, error) {
	hostPort := strings.TrimPrefix(raw, "dns:///")
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil || host == "" || port == "" || strings.Contains(hostPort, "/") {
		return fixed{}, fmt.Errorf("%q, want a gRPC target such as web.ns.svc.cluster.local:9090 or dns:///web.ns.svc.cluster.local:9090", raw)
	}
	return fixed{url: raw, hostPort: hostPort}, nil
}

// grpcCaller calls lastcall.e2e.Work/Do with grpc-go's defaults, as a caller that tuned
// nothing: pick_first, one connection per ClientConn, no retry (unless Config.Retry), no
// keepalive pings, reconnecting on GOAWAY.
//   - service path: one ClientConn to the Service's name, so one connection through
//     kube-proxy to one pod at a time, until that pod sends GOAWAY or the connection breaks.
//   - consul path: one ClientConn per instance, created on first use and kept for the run, the
//     instance picked per call as for HTTP; an instance that left Consul's list gets no more
//     calls, and its idle ClientConn does not reconnect.
//   - consul path with Retry: one ClientConn over Consul's passing instances (a resolver fed
//     by the watch, round_robin), since grpcgraceful.Retry retries on the same ClientConn and
//     relies on its balancer to pick another instance.
type grpcCaller struct {
	opts []grpc.DialOption
	// shared is the one ClientConn of the service path and of the consul path with Retry
	shared *grpc.ClientConn
	err    error // of creating shared

	mu     sync.Mutex
	byAddr map[string]*grpc.ClientConn
}

func newGRPCCaller(cfg Config, t targets) *grpcCaller {
	c := &grpcCaller{
		opts:   []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		byAddr: map[string]*grpc.ClientConn{},
	}
	if cfg.Retry {
		r := grpcgraceful.Retry{}
		c.opts = append(c.opts, grpc.WithChainUnaryInterceptor(r.UnaryClientInterceptor()))
	}
	switch tg := t.(type) {
	case fixed:
		c.shared, c.err = grpc.NewClient(tg.url, c.opts...)
	case *consulTargets:
		if cfg.Retry {
			r := manual.NewBuilderWithScheme("consul")
			tg.subscribe(func(list []target) {
				var st resolver.State
				for _, x := range list {
					st.Addresses = append(st.Addresses, resolver.Address{Addr: x.hostPort})
				}
				r.UpdateState(st)
			})
			opts := append(c.opts, grpc.WithResolvers(r), //nolint:gocritic // a copy with more options
				grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
			c.shared, c.err = grpc.NewClient(r.Scheme()+":///"+cfg.Service, opts...)
		}
	}
	return c
}

// conn is the ClientConn for a call to t.
func (c *grpcCaller) conn(t target) (*grpc.ClientConn, error) {
	if c.shared != nil || c.err != nil {
		return c.shared, c.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.byAddr[t.hostPort]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(t.hostPort, c.opts...)
	if err != nil {
		return nil, err
	}
	c.byAddr[t.hostPort] = cc
	return cc, nil
}

// grpcPayload is what a call sends, as the HTTP requests' body.
const grpcPayload = `{"work":1}`

func (c *grpcCaller) call(ctx context.Context, t target, rec *report.Record) {
	cc, err := c.conn(t)
	if err != nil {
		rec.Outcome, rec.Err = report.Other, err.Error()
		return
	}
	var header, trailer metadata.MD
	var p peer.Peer
	_, err = workrpc.Do(ctx, cc, grpcPayload, grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&p))
	if v := header.Get(workrpc.ProcessedByKey); len(v) > 0 {
		rec.Pod = v[0]
	}
	if c.shared != nil && rec.Path == report.PathConsul && p.Addr != nil {
		rec.Target = p.Addr.String() // the balancer's pick
	}
	rec.Outcome = classifyGRPC(err, trailer)
	if err != nil {
		rec.Err = err.Error()
		if notProcessed(trailer) {
			rec.Err += " (" + grpcgraceful.MarkerKey + ": not processed)"
		}
	}
}

func (c *grpcCaller) close() {
	if c.shared != nil {
		_ = c.shared.Close()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.byAddr {
		_ = cc.Close()
	}
}

// notProcessed reports grpcgraceful's answer to a call it did not process.
func notProcessed(trailer metadata.MD) bool { return len(trailer.Get(grpcgraceful.MarkerKey)) > 0 }

// classifyGRPC sorts how a call ended into the report's classes, as classify does for HTTP: an
// answer with an error status is 5xx (UNAVAILABLE "not processed" included: a plain caller
// fails it, as it fails graceful's 503), a deadline is a timeout, and a connection refused or
// lost under the call (UNAVAILABLE or INTERNAL from grpc-go's transport) is refused or reset.
func classifyGRPC(err error, trailer metadata.MD) report.Outcome {
	if err == nil {
		return report.OK
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.OK:
		return report.OK
	case codes.DeadlineExceeded:
		return report.Timeout
	case codes.Canceled:
		return report.Other
	case codes.Unavailable, codes.Internal, codes.Unknown:
		switch msg := st.Message(); {
		case notProcessed(trailer):
			return report.Status5xx
		case strings.Contains(msg, "connection refused"):
			return report.Refused
		case lostConnection(msg):
			return report.Reset
		case st.Code() == codes.Unavailable:
			// no connection to send it on, for another reason (name resolution, no address)
			return report.Other
		}
	}
	return report.Status5xx
}
