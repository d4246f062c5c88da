package grpcgraceful_test

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

// A real grpc-go client sends a call on the connection it keeps, and the call reaches the
// server's accounting only once the server is stopping, while another call is in flight (as a
// call that crossed the stop's GOAWAY does): it is served when it can finish before the stop's
// deadline, and answered UNAVAILABLE with MarkerKey, not processed, when the deadline is too
// close.
func TestLateCallWhileStopping(t *testing.T) {
	tests := []struct {
		name       string
		cfg        graceful.Config
		wantServed bool
	}{
		{"time left: served", graceful.Config{StopTimeout: 10 * time.Second}, true},
		{"deadline too close: not processed", graceful.Config{StopTimeout: 10 * time.Second, LateRequestBudget: time.Minute}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			arrived, gate := make(chan struct{}), make(chan struct{})
			var openGate sync.Once
			defer openGate.Do(func() { close(gate) })
			// grpc.UnaryInterceptor runs outside the accounting interceptors: the late call
			// waits there, uncounted, until the server is stopping.
			delay := grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				if v, ok := req.(*wrapperspb.StringValue); ok && v.GetValue() == "late" {
					close(arrived)
					<-gate
				}
				return handler(ctx, req)
			})
			l := newLedger()
			in := startInstance(t, "a", l, tt.cfg, grpcgraceful.Config{Options: []grpc.ServerOption{delay}})
			cc := dial(t, nil, nil, in.addr())
			held := make(chan error, 1)
			go func() { _, _, err := place(cc, "hold"); held <- err }()
			in.awaitHeld(t)

			type answer struct {
				by      string
				trailer metadata.MD
				err     error
			}
			late := make(chan answer, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				var a answer
				a.by, a.err = orders.Place(ctx, cc, "late", grpc.Trailer(&a.trailer))
				late <- a
			}()
			g.Eventually(arrived).Should(BeClosed())
			in.g.Shutdown()
			g.Eventually(in.g.Reached(graceful.Stopping)).Should(BeClosed())
			openGate.Do(func() { close(gate) })
			var got answer
			g.Eventually(late).Should(Receive(&got))

			if tt.wantServed {
				g.Expect(got.err).NotTo(HaveOccurred())
				g.Expect(got.by).To(Equal("a"))
				g.Expect(l.processedBy("late")).To(Equal([]string{"a"}))
			} else {
				g.Expect(status.Code(got.err)).To(Equal(codes.Unavailable), "%v", got.err)
				g.Expect(got.trailer.Get(grpcgraceful.MarkerKey)).To(Equal([]string{"1"}))
				g.Expect(l.processedBy("late")).To(BeEmpty())
			}
			close(in.svc.release)
			g.Expect(<-held).To(Succeed())
			g.Expect(in.wait(t)).To(Succeed())
			st := in.g.Status()
			if tt.wantServed {
				g.Expect([]uint64{st.LateServed, st.LateRejected}).To(Equal([]uint64{1, 0}))
			} else {
				g.Expect([]uint64{st.LateServed, st.LateRejected}).To(Equal([]uint64{0, 1}))
			}
		})
	}
}
