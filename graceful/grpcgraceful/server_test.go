package grpcgraceful_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

func TestNewRejectsBadConfig(t *testing.T) {
	g, err := graceful.New(graceful.Config{AdminAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		g    *graceful.Server
		cfg  grpcgraceful.Config
		want string
	}{
		{"no graceful server", nil, grpcgraceful.Config{}, "graceful.Server is nil"},
		{"negative budget", g, grpcgraceful.Config{Budget: -time.Second}, "Config.Budget is -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := grpcgraceful.New(tt.g, tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
	// The component's budget must fit in the grace period, as any graceful.Component's.
	tight, err := graceful.New(graceful.Config{AdminAddr: "-", GracePeriod: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := grpcgraceful.New(tight, grpcgraceful.Config{Budget: 2 * time.Second}); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("budget beyond the grace period: err = %v, want one saying it does not fit", err)
	}
}

func TestRegisterServiceRejectsMistakes(t *testing.T) {
	g, err := graceful.New(graceful.Config{AdminAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := grpcgraceful.New(g, grpcgraceful.Config{})
	if err != nil {
		t.Fatal(err)
	}
	orders.Register(s, &orderService{})
	for name, register := range map[string]func(){
		"twice":           func() { orders.Register(s, &orderService{}) },
		"not implemented": func() { s.RegisterService(&orders.ServiceDesc, struct{}{}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(r.(string), orders.Service) {
					t.Errorf("recovered %v, want a panic naming the service", r)
				}
			}()
			register()
		})
	}
	info := s.GetServiceInfo()
	if m := info[orders.Service].Methods; len(m) != 2 || m[0].Name != "Place" || m[1].Name != "Follow" || !m[1].IsServerStream {
		t.Errorf("service info %+v", info)
	}
	if _, ok := info[healthpb.Health_ServiceDesc.ServiceName]; !ok {
		t.Errorf("service info %+v lacks the health service", info)
	}
}

// gRPC calls count like HTTP requests: in flight, total and last request in the admin /status
// that lastcall-prestop reads. Health checks do not count.
func TestCallsCountInTheAdminStatus(t *testing.T) {
	g := NewWithT(t)
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	cc := dial(t, nil, nil, in.addr())
	status := func() graceful.Status {
		resp, err := http.Get("http://" + in.g.AdminAddr() + "/status")
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		var st graceful.Status
		g.Expect(json.NewDecoder(resp.Body).Decode(&st)).To(Succeed())
		return st
	}
	_, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(status()).To(Equal(graceful.Status{State: "running"}))

	held := make(chan error, 1)
	go func() { _, _, err := place(cc, "hold"); held <- err }()
	in.awaitHeld(t)
	st := status()
	g.Expect(st.InFlight).To(BeEquivalentTo(1))
	g.Expect(st.RequestsTotal).To(BeEquivalentTo(1))
	last, err := time.Parse(time.RFC3339Nano, st.LastRequest)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(last).To(BeTemporally("~", time.Now(), 10*time.Second))

	close(in.svc.release)
	g.Expect(<-held).To(Succeed())
	stream, err := orders.Follow(context.Background(), cc, "streamed")
	g.Expect(err).NotTo(HaveOccurred())
	for {
		if _, err := stream.Recv(); err != nil {
			g.Expect(err).To(MatchError(io.EOF))
			break
		}
	}
	g.Eventually(status).Should(And(HaveField("InFlight", BeEquivalentTo(0)), HaveField("RequestsTotal", BeEquivalentTo(2))))
}

// The standard health service says SERVING while running and NOT_SERVING from the drain on; a
// health watch ends with the stop instead of holding it.
func TestHealthFollowsTheStates(t *testing.T) {
	g := NewWithT(t)
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	cc := dial(t, nil, nil, in.addr())
	health := healthpb.NewHealthClient(cc)
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN
		}
		return resp.GetStatus()
	}
	g.Eventually(check).WithArguments("").Should(Equal(healthpb.HealthCheckResponse_SERVING))
	g.Expect(check(orders.Service)).To(Equal(healthpb.HealthCheckResponse_SERVING))
	watch, err := health.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	g.Expect(err).NotTo(HaveOccurred())
	first, err := watch.Recv()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(first.GetStatus()).To(Equal(healthpb.HealthCheckResponse_SERVING))

	in.g.Drain("test")
	g.Eventually(check).WithArguments("").Should(Equal(healthpb.HealthCheckResponse_NOT_SERVING))
	g.Expect(check(orders.Service)).To(Equal(healthpb.HealthCheckResponse_NOT_SERVING))

	t0 := time.Now()
	in.g.Shutdown()
	g.Expect(in.wait(t)).To(Succeed())
	g.Expect(time.Since(t0)).To(BeNumerically("<", grpcgraceful.DefaultBudget), "the watch held the stop")
	for {
		if _, err := watch.Recv(); err != nil {
			break
		}
	}
}

// Draining reaches a real client's idle connection: grpc-go drops it on the GOAWAY and connects
// again for its next call (here to the same instance, which keeps serving while it drains).
// The call in flight at the drain completes.
func TestDrainMovesIdleClientsAndFinishesCallsInFlight(t *testing.T) {
	g := NewWithT(t)
	in := startInstance(t, "a", newLedger(), graceful.Config{}, grpcgraceful.Config{})
	idle, err := grpc.NewClient("passthrough:///"+in.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	g.Expect(err).NotTo(HaveOccurred())
	defer idle.Close()
	_, _, err = place(idle, "warm up")
	g.Expect(err).NotTo(HaveOccurred())
	// grpc-go hands the balancer's new picker to RPCs before it updates the channel's state
	// (balancer_wrapper.go, UpdateState), so a call can succeed while GetState still says
	// CONNECTING for a moment.
	g.Eventually(idle.GetState).Should(Equal(connectivity.Ready))
	busy := dial(t, nil, nil, in.addr())
	held := make(chan error, 1)
	go func() { _, _, err := place(busy, "hold"); held <- err }()
	in.awaitHeld(t)

	in.g.Drain("test")
	// pick_first stays idle after a GOAWAY until the next call.
	g.Eventually(idle.GetState).Should(Equal(connectivity.Idle))
	by, _, err := place(idle, "after the drain")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(by).To(Equal("a"))
	close(in.svc.release)
	g.Expect(<-held).To(Succeed())
	g.Expect(in.svc.l.processedBy("hold")).To(Equal([]string{"a"}))
}

// A stopping instance refuses new connections and sends GOAWAY on the others: callers that
// still list it move to the other instance without a failed call. A call that crossed the GOAWAY
// may still be served by the stopping instance, as a late call that can finish in time.
func TestCallersMoveOffAStoppingInstance(t *testing.T) {
	g := NewWithT(t)
	l := newLedger()
	a := startInstance(t, "a", l, graceful.Config{}, grpcgraceful.Config{})
	b := startInstance(t, "b", l, graceful.Config{}, grpcgraceful.Config{})
	cc := dial(t, &grpcgraceful.Retry{}, nil, a.addr(), b.addr())
	n := 0
	answered := func(want string) { // by an instance: the client is connected to it
		g.Eventually(func() string {
			n++
			item := fmt.Sprint("warm up ", n)
			_, _, err := place(cc, item)
			g.Expect(err).NotTo(HaveOccurred())
			return l.processedBy(item)[0]
		}).Should(Equal(want))
	}
	answered("a")
	answered("b")

	held := make(chan error, 1)
	go func() { _, _, err := place(dial(t, nil, nil, a.addr()), "hold"); held <- err }()
	a.awaitHeld(t)
	a.g.Shutdown()
	<-a.g.Reached(graceful.Stopping)
	aBefore := l.count("a")
	by := ""
	for range 200 {
		n++
		var err error
		by, _, err = place(cc, fmt.Sprint("late ", n))
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(by).To(Equal("b"))
	g.Expect(l.twice()).To(BeEmpty())
	g.Expect(l.count("a")-aBefore).To(BeNumerically("==", a.g.Status().LateServed), "a processed only late calls it could serve")

	close(a.svc.release)
	g.Expect(<-held).To(Succeed())
	g.Expect(a.wait(t)).To(Succeed())
	g.Expect(l.processedBy("hold")).To(Equal([]string{"a"}))
}

// Handlers cancelled at the stop deadline roll back and answer NotProcessed: the caller's Retry
// places the order on the other instance, once, and opens the server-streaming call there too.
func TestRolledBackCallsAreRetriedOnAnotherInstance(t *testing.T) {
	g := NewWithT(t)
	l := newLedger()
	a := startInstance(t, "a", l, graceful.Config{StopTimeout: 100 * time.Millisecond, RollbackGrace: 5 * time.Second}, grpcgraceful.Config{}, withRollback)
	b := startInstance(t, "b", l, graceful.Config{}, grpcgraceful.Config{})
	// The client knows only a when it calls, and both once the calls are held there, as a
	// registry's client would see a scale-up.
	cc, r := dialResolver(t, &grpcgraceful.Retry{}, nil, a.addr())
	placed := make(chan error, 1)
	go func() {
		by, _, err := place(cc, "hold@a")
		if err == nil && by != "b" {
			err = fmt.Errorf("answered by %s, want b", by)
		}
		placed <- err
	}()
	followed := make(chan []string, 1)
	go func() {
		var got []string
		defer func() { followed <- got }()
		stream, err := orders.Follow(context.Background(), cc, "hold@a stream")
		if err != nil {
			got = append(got, err.Error())
			return
		}
		for {
			m, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					got = append(got, err.Error())
				}
				return
			}
			got = append(got, m.GetValue())
		}
	}()
	a.awaitHeld(t)
	a.awaitHeld(t)
	r.UpdateState(addresses(a.addr(), b.addr()))
	probes := 0
	g.Eventually(func() (string, error) {
		probes++
		by, _, err := place(cc, fmt.Sprint("probe ", probes))
		return by, err
	}).Should(Equal("b"))
	a.g.Shutdown()
	g.Expect(<-placed).To(Succeed(), "the rolled-back order, retried on b")
	g.Expect(<-followed).To(Equal([]string{"b 0", "b 1", "b 2"}), "the rolled-back stream, opened again on b")
	g.Expect(a.wait(t)).To(Succeed())
	g.Expect(l.processedBy("hold@a")).To(Equal([]string{"b"}))
	g.Expect(l.processedBy("hold@a stream")).To(Equal([]string{"b"}))
	g.Expect(l.twice()).To(BeEmpty())
}

// GracefulStop is bounded by the budget: a stream whose handler ignores its cancelled context is
// cut, and Run reports the forced stop in time.
func TestStopIsBoundedWhenAHandlerHangs(t *testing.T) {
	g := NewWithT(t)
	in := startInstance(t, "a", newLedger(),
		graceful.Config{StopTimeout: 50 * time.Millisecond, RollbackGrace: 50 * time.Millisecond},
		grpcgraceful.Config{Budget: 300 * time.Millisecond})
	cc := dial(t, nil, nil, in.addr())
	stream, err := orders.Follow(context.Background(), cc, "hang")
	g.Expect(err).NotTo(HaveOccurred())
	in.awaitHeld(t)

	t0 := time.Now()
	in.g.Shutdown()
	g.Expect(in.wait(t)).To(MatchError(graceful.ErrForced))
	g.Expect(time.Since(t0)).To(BeNumerically("<", 5*time.Second))
	_, err = stream.Recv()
	g.Expect(status.Code(err)).To(Equal(codes.Unavailable))
}

// Retry tries again only what was not processed: an UNAVAILABLE from a handler that ran is
// returned as is; a call that reached no connection is tried MaxTries times.
func TestRetryTriesAgainOnlyWhatWasNotProcessed(t *testing.T) {
	g := NewWithT(t)
	l := newLedger()
	in := startInstance(t, "a", l, graceful.Config{}, grpcgraceful.Config{})

	var seen attempts
	cc := dial(t, &grpcgraceful.Retry{}, &seen, in.addr())
	_, _, err := place(cc, "fail")
	g.Expect(status.Code(err)).To(Equal(codes.Unavailable))
	g.Expect(seen.total.Load()).To(BeEquivalentTo(1))
	g.Expect(l.processedBy("fail")).To(Equal([]string{"a"}))

	ln := listen(t)
	closed := ln.Addr().String()
	ln.Close()
	var nowhereSeen attempts
	nowhere := dial(t, &grpcgraceful.Retry{MaxTries: 4, Backoff: time.Millisecond}, &nowhereSeen, closed)
	_, _, err = place(nowhere, "x")
	g.Expect(status.Code(err)).To(Equal(codes.Unavailable))
	g.Expect(nowhereSeen.total.Load()).To(BeEquivalentTo(4))
	_, err = orders.Follow(context.Background(), nowhere, "x")
	g.Expect(status.Code(err)).To(Equal(codes.Unavailable))

	bad := dial(t, &grpcgraceful.Retry{MaxTries: -1}, nil, in.addr())
	_, _, err = place(bad, "x")
	g.Expect(err).To(MatchError(ContainSubstring("Retry.MaxTries is -1")))
	_, err = grpcgraceful.Retry{Backoff: -1}.StreamClientInterceptor()(context.Background(), &grpc.StreamDesc{}, bad, "/x/y", nil)
	g.Expect(err).To(MatchError(ContainSubstring("Retry.Backoff")))
}
