package grpcgraceful_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ledger records which instance processed each order: every order must be processed once.
type ledger struct {
	mu sync.Mutex
	by map[string][]string
}

func newLedger() *ledger { return &ledger{by: map[string][]string{}} }

func (l *ledger) record(item, instance string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.by[item] = append(l.by[item], instance)
}

func (l *ledger) processedBy(item string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.by[item]...)
}

// twice lists the orders processed more than once.
func (l *ledger) twice() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for item, by := range l.by {
		if len(by) > 1 {
			out = append(out, fmt.Sprintf("%s by %v", item, by))
		}
	}
	return out
}

func (l *ledger) count(instance string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, by := range l.by {
		for _, b := range by {
			if b == instance {
				n++
			}
		}
	}
	return n
}

// orderService is one instance's implementation. An item starting with "hold" waits until
// release is closed (only on instance x for "hold@x"); with rollback set, a held call whose
// context ends answers NotProcessed. An item starting with "hang" waits until the test ends,
// whatever its context. An item starting with "reject" is answered NotProcessed (only on instance
// x for "reject@x"), and counted in rejected. An item starting with "fail" is processed, then
// answered UNAVAILABLE.
type orderService struct {
	name     string
	l        *ledger
	work     time.Duration
	entered  chan string
	release  chan struct{}
	hang     chan struct{}
	srv      *grpcgraceful.Server
	rollback bool
	rejected atomic.Int64
}

// only reports whether item, which starts with prefix, concerns this instance: "prefix@x" only
// instance x.
func (o *orderService) only(item, prefix string) bool {
	if !strings.HasPrefix(item, prefix) {
		return false
	}
	_, at, ok := strings.Cut(item, "@")
	return !ok || strings.HasPrefix(at, o.name)
}

func (o *orderService) hold(ctx context.Context, item string) error {
	if o.only(item, "reject") {
		o.rejected.Add(1)
		return o.srv.NotProcessed(ctx)
	}
	if strings.HasPrefix(item, "hang") {
		o.entered <- item
		<-o.hang
		return nil
	}
	if !o.only(item, "hold") {
		return nil
	}
	o.entered <- item
	select {
	case <-o.release:
		return nil
	case <-ctx.Done():
		if o.rollback {
			return o.srv.NotProcessed(ctx)
		}
		return status.FromContextError(ctx.Err()).Err()
	}
}

func (o *orderService) Place(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	if err := o.hold(ctx, in.GetValue()); err != nil {
		return nil, err
	}
	if o.work > 0 {
		t := time.NewTimer(o.work)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	o.l.record(in.GetValue(), o.name)
	if strings.HasPrefix(in.GetValue(), "fail") {
		return nil, status.Error(codes.Unavailable, "processed, then failed")
	}
	return wrapperspb.String(o.name), nil
}

// Follow sends three updates of the item, each naming the instance.
func (o *orderService) Follow(in *wrapperspb.StringValue, stream grpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	if err := o.hold(stream.Context(), in.GetValue()); err != nil {
		return err
	}
	o.l.record(in.GetValue(), o.name)
	for i := range 3 {
		if err := stream.Send(wrapperspb.String(fmt.Sprintf("%s %d", o.name, i))); err != nil {
			return err
		}
	}
	return nil
}

// instance is one app replica on loopback: a graceful.Server serving gRPC only.
type instance struct {
	name string
	g    *graceful.Server
	s    *grpcgraceful.Server
	svc  *orderService
	done chan error // Run's result, put back by whoever takes it
}

// withRollback makes held calls answer NotProcessed when their context ends.
func withRollback(in *instance) { in.svc.rollback = true }

func startInstance(t *testing.T, name string, l *ledger, gcfg graceful.Config, cfg grpcgraceful.Config, opts ...func(*instance)) *instance {
	t.Helper()
	gcfg.AdminAddr = "127.0.0.1:0"
	gcfg.Signals = []os.Signal{} // the test process's signals are not the instance's
	if gcfg.Logger == nil {
		gcfg.Logger = quietLogger()
	}
	g, err := graceful.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr == "" && cfg.Listener == nil {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = gcfg.Logger
	}
	s, err := grpcgraceful.New(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, g: g, s: s, done: make(chan error, 1),
		svc: &orderService{name: name, l: l, srv: s, entered: make(chan string, 16), release: make(chan struct{}), hang: make(chan struct{})}}
	for _, o := range opts {
		o(in)
	}
	orders.Register(s, in.svc)
	go func() { in.done <- g.Run(context.Background()) }()
	t.Cleanup(func() {
		g.Shutdown()
		select {
		case <-in.svc.release:
		default:
			close(in.svc.release)
		}
		close(in.svc.hang)
		in.done <- <-in.done
	})
	select {
	case <-g.Reached(graceful.Running):
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not start", name)
	}
	return in
}

func (in *instance) addr() string { return in.s.Addr() }

// wait returns Run's result.
func (in *instance) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-in.done:
		in.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: Run did not return", in.name)
		return nil
	}
}

// awaitHeld waits until a held call entered the handler.
func (in *instance) awaitHeld(t *testing.T) {
	t.Helper()
	select {
	case <-in.svc.entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the held call did not start", in.name)
	}
}

// attempts records every try a client made, inside the retrying interceptor: who answered and
// whether the answer was marked "not processed".
type attempts struct {
	total, marked atomic.Int64
}

func (a *attempts) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	var tr metadata.MD
	err := invoker(ctx, method, req, reply, cc, append(opts[:len(opts):len(opts)], grpc.Trailer(&tr))...)
	a.total.Add(1)
	if len(tr.Get(grpcgraceful.MarkerKey)) > 0 {
		a.marked.Add(1)
	}
	return err
}

// dial connects to the instances with round_robin over their addresses, as a client of a
// headless Service or a registry does, through Retry unless retry is nil.
func dial(t *testing.T, retry *grpcgraceful.Retry, seen *attempts, addrs ...string) *grpc.ClientConn {
	t.Helper()
	cc, _ := dialResolver(t, retry, seen, addrs...)
	return cc
}

// addresses is what a resolver gives for the instances at addrs.
func addresses(addrs ...string) resolver.State {
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	return state
}

// dialResolver is dial, with the resolver to change the addresses.
func dialResolver(t *testing.T, retry *grpcgraceful.Retry, seen *attempts, addrs ...string) (*grpc.ClientConn, *manual.Resolver) {
	t.Helper()
	r := manual.NewBuilderWithScheme("lastcall")
	r.InitialState(addresses(addrs...))
	opts := []grpc.DialOption{
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	}
	if retry != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor()), grpc.WithChainStreamInterceptor(retry.StreamClientInterceptor()))
	}
	if seen != nil {
		opts = append(opts, grpc.WithChainUnaryInterceptor(seen.interceptor))
	}
	cc, err := grpc.NewClient(r.Scheme()+":///orders", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, r
}

// place calls Place and reports who answered.
func place(cc *grpc.ClientConn, item string) (string, peer.Peer, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var p peer.Peer
	by, err := orders.Place(ctx, cc, item, grpc.Peer(&p))
	return by, p, err
}

// listen opens a loopback listener.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func init() {
	// Generous for a loaded 2-core machine: conditions still end the waits as soon as they hold.
	SetDefaultEventuallyTimeout(20 * time.Second)
	SetDefaultEventuallyPollingInterval(5 * time.Millisecond)
}
