package grpcgraceful_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"google.golang.org/grpc"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

// load runs callers that place orders (and follow one in ten) until stopped, each order once.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startLoad(ccs []*grpc.ClientConn, perConn int) *load {
	ld := &load{stop: make(chan struct{})}
	for ci, cc := range ccs {
		for w := range perConn {
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				for i := 0; ; i++ {
					select {
					case <-ld.stop:
						return
					default:
					}
					item := fmt.Sprintf("c%d-%d-%d", ci, w, i)
					var err error
					if i%10 == 9 {
						err = follow(cc, item)
					} else {
						_, _, err = place(cc, item)
					}
					ld.record(item, err)
				}
			}()
		}
	}
	return ld
}

func follow(cc *grpc.ClientConn, item string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, err := orders.Follow(ctx, cc, item)
	if err != nil {
		return err
	}
	for n := 0; ; n++ {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) && n == 3 {
				return nil
			}
			return fmt.Errorf("after %d updates: %w", n, err)
		}
	}
}

func (ld *load) record(item string, err error) {
	if err == nil {
		ld.ok.Add(1)
		return
	}
	ld.failed.Add(1)
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if ld.firstErr == nil {
		ld.firstErr = fmt.Errorf("%s: %w", item, err)
	}
}

func (ld *load) end() {
	close(ld.stop)
	ld.wg.Wait()
}

// Two instances under load from clients whose Retry round-robins over both. One drains, then
// stops with a call in flight, while the clients keep it in their resolver, the worst a registry
// can do: zero failed calls and none processed twice.
func TestZeroFailedCallsThroughDrainAndStop(t *testing.T) {
	g := NewWithT(t)
	l := newLedger()
	slow := func(in *instance) { in.svc.work = time.Millisecond }
	a := startInstance(t, "a", l, graceful.Config{}, grpcgraceful.Config{}, slow)
	b := startInstance(t, "b", l, graceful.Config{}, grpcgraceful.Config{}, slow)
	var seen attempts
	var ccs []*grpc.ClientConn
	for range 4 {
		ccs = append(ccs, dial(t, &grpcgraceful.Retry{}, &seen, a.addr(), b.addr()))
	}
	ld := startLoad(ccs, 4)
	defer func() {
		select {
		case <-ld.stop:
		default:
			ld.end()
		}
	}()
	g.Eventually(func() int { return min(l.count("a"), l.count("b")) }).Should(BeNumerically(">=", 100))

	a.g.Drain("test")
	atDrain := l.count("a")
	// Clients reconnect to a, which serves while it drains, and get GOAWAY again after a call.
	g.Eventually(func() int { return l.count("a") }).Should(BeNumerically(">=", atDrain+100))

	held := make(chan error, 1)
	go func() { _, _, err := place(dial(t, nil, nil, a.addr()), "hold"); held <- err }()
	a.awaitHeld(t)
	a.g.Shutdown()
	<-a.g.Reached(graceful.Stopping)
	atStopping := l.count("b")
	g.Eventually(func() int { return l.count("b") }).Should(BeNumerically(">=", atStopping+100))

	close(a.svc.release)
	g.Expect(<-held).To(Succeed())
	g.Expect(a.wait(t)).To(Succeed())
	atStop := l.count("b")
	g.Eventually(func() int { return l.count("b") }).Should(BeNumerically(">=", atStop+100))
	ld.end()

	g.Expect(ld.failed.Load()).To(BeZero(), "first failure: %v", ld.firstErr)
	g.Expect(l.twice()).To(BeEmpty())
	g.Expect(l.processedBy("hold")).To(Equal([]string{"a"}))
	t.Logf("%d calls, %d tries, %d answered not processed; a processed %d, b %d",
		ld.ok.Load(), seen.total.Load(), seen.marked.Load(), l.count("a"), l.count("b"))
}
