package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/kubeproxy"
)

// fakeProbe is a dataplane whose routes the test sets. Each read takes readTime and sees the
// routes as they were when it started.
type fakeProbe struct {
	mu       sync.Mutex
	state    map[netip.Addr]dataplane.State
	err      error
	readTime time.Duration
	reads    [][]dataplane.Target
	pings    int
}

func newFakeProbe() *fakeProbe { return &fakeProbe{state: map[netip.Addr]dataplane.State{}} }

func (f *fakeProbe) set(ip string, s dataplane.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state[netip.MustParseAddr(ip)] = s
}

func (f *fakeProbe) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *fakeProbe) Check(ctx context.Context, ips []netip.Addr) (map[netip.Addr]dataplane.Verdict, error) {
	targets := make([]dataplane.Target, len(ips))
	for i, ip := range ips {
		targets[i].IP = ip
	}
	r, err := f.CheckTargets(ctx, targets)
	return r.Verdicts, err
}

func (f *fakeProbe) CheckTargets(_ context.Context, targets []dataplane.Target) (dataplane.Result, error) {
	f.mu.Lock()
	state, err := maps.Clone(f.state), f.err
	f.reads = append(f.reads, targets)
	f.mu.Unlock()
	time.Sleep(f.readTime)
	if err != nil {
		return dataplane.Result{}, err
	}
	out := map[netip.Addr]dataplane.Verdict{}
	for _, t := range targets {
		v := dataplane.Verdict{State: state[t.IP]}
		if v.State != dataplane.NotRouted {
			v.Routes = []dataplane.Route{{Service: "demo/web:http", Chain: "KUBE-SVC-X", Endpoint: netip.AddrPortFrom(t.IP, 8080), Fallback: v.State == dataplane.LastBackend}}
		}
		out[t.IP] = v
	}
	return dataplane.Result{Verdicts: out, Targeted: dataplane.HavePorts(targets)}, nil
}

func (f *fakeProbe) Ping(context.Context, dataplane.Family) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings++
	return f.err
}

func (f *fakeProbe) readCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reads)
}

// fakeSyncs is kube-proxy's metrics; sync() records a finished sync now.
type fakeSyncs struct {
	mu   sync.Mutex
	last time.Time
	err  error
}

func (s *fakeSyncs) Sync(context.Context) (kubeproxy.Sync, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return kubeproxy.Sync{}, s.err
	}
	return kubeproxy.Sync{Last: map[string]time.Time{"IPv4": s.last}, Pending: 0}, nil
}

func (s *fakeSyncs) sync() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = time.Now()
}

func (s *fakeSyncs) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err = err
}

// metric returns the value of the sample of name whose labels include labels.
func metric(t *testing.T, a *Agent, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := a.cfg.Metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue samples
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func target(ip string) dataplane.Target { return dataplane.Target{IP: netip.MustParseAddr(ip)} }

// started runs an agent in the bubble until the test ends.
func started(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a := New(cfg)
	runUntilCleanup(t, a)
	synctest.Wait()
	return a
}

// runUntilCleanup runs a until the test ends; cleanups registered later run before it stops.
func runUntilCleanup(t *testing.T, a *Agent) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

type result struct {
	ans Answer
	err error
	at  time.Time
}

// waitAsync starts a Wait and returns where its result arrives.
func waitAsync(a *Agent, req Request) <-chan result {
	ch := make(chan result, 1)
	go func() {
		ans, err := a.Wait(context.Background(), req)
		ch <- result{ans, err, time.Now()}
	}()
	return ch
}

func pending(ch <-chan result) bool {
	select {
	case r := <-ch:
		panic(fmt.Sprintf("answered early: %+v", r))
	default:
		return true
	}
}

func verdicts(ans Answer) map[string]string {
	out := map[string]string{}
	for _, ip := range ans.IPs {
		out[ip.IP] = ip.Verdict
	}
	return out
}

// A wait reads at once, then again only when kube-proxy finished a sync; the read after the
// sync ends it, and the answer says when the node was first seen not routing.
func TestWaitEndsOnTheReadAfterASync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe, syncs := newFakeProbe(), &fakeSyncs{}
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: syncs, Node: "n1"})
		t0 := time.Now()
		ch := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll, Timeout: time.Minute})
		synctest.Wait()
		if n := probe.readCount(); n != 1 {
			t.Fatalf("%d reads on arrival, want 1", n)
		}

		// kube-proxy changes the rules; until it reports a sync, only the periodic re-read looks.
		probe.set("10.0.0.1", dataplane.NotRouted)
		time.Sleep(5 * time.Second)
		pending(ch)
		if n := probe.readCount(); n != 1 {
			t.Fatalf("%d reads without a sync, want 1", n)
		}
		syncs.sync()
		time.Sleep(DefaultSyncPoll)
		synctest.Wait()
		r := <-ch
		if r.err != nil || !r.ans.Done || r.ans.TimedOut || verdicts(r.ans)["10.0.0.1"] != "NotRouted" {
			t.Fatalf("got %+v, %v", r.ans, r.err)
		}
		if got := r.at.Sub(t0); got < 5*time.Second || got > 5*time.Second+DefaultSyncPoll {
			t.Errorf("answered after %v, want within %v of the sync at 5s", got, DefaultSyncPoll)
		}
		ip := r.ans.IPs[0]
		if ip.NotRoutedAt == nil || !ip.NotRoutedAt.Equal(r.at) || ip.RoutedSeenAt == nil || !ip.RoutedSeenAt.Equal(t0.UTC()) {
			t.Errorf("notRoutedAt %v, routedSeenAt %v", ip.NotRoutedAt, ip.RoutedSeenAt)
		}
		if r.ans.Node != "n1" || r.ans.KubeProxy.Metrics != "ok" || r.ans.KubeProxy.LastSync == nil {
			t.Errorf("answer %+v", r.ans)
		}
		for trigger, want := range map[string]float64{TriggerRequest: 1, TriggerSync: 1, TriggerPeriodic: 0} {
			if got := metric(t, a, "lastcall_node_check_triggers_total", "trigger", trigger); got != want {
				t.Errorf("trigger %s: %v, want %v", trigger, got, want)
			}
		}
	})
}

// Without a sync, a wait is re-read every Recheck.
func TestPeriodicRecheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}, Recheck: 3 * time.Second})
		ch := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll, Timeout: 10 * time.Second})
		time.Sleep(9 * time.Second)
		synctest.Wait()
		if n := probe.readCount(); n != 4 { // 0, 3, 6, 9 s
			t.Errorf("%d reads in 9 s, want 4", n)
		}
		r := <-ch
		if !r.ans.TimedOut || r.ans.Done || verdicts(r.ans)["10.0.0.1"] != "Routed" || len(r.ans.IPs[0].Routes) != 1 {
			t.Errorf("timeout answer %+v", r.ans)
		}
	})
}

// Concurrent waits share reads: a read covers every open wait, and one that arrives during a
// read gets the next, which starts only after a pause as long as the read.
func TestWaitsShareReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe, syncs := newFakeProbe(), &fakeSyncs{}
		probe.readTime = time.Second
		a := started(t, Config{Probe: probe, Syncs: syncs})
		t0 := time.Now()
		var chans []<-chan result
		for i := range 50 {
			ip := fmt.Sprintf("10.0.1.%d", i)
			probe.set(ip, dataplane.Routed)
			chans = append(chans, waitAsync(a, Request{IPs: []dataplane.Target{target(ip)}, Until: UntilAll, Timeout: time.Minute}))
		}
		time.Sleep(500 * time.Millisecond)
		late := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.2.1")}, Until: UntilAll, Timeout: time.Minute})
		synctest.Wait()
		for i := range 50 {
			probe.set(fmt.Sprintf("10.0.1.%d", i), dataplane.NotRouted)
		}
		probe.set("10.0.2.1", dataplane.NotRouted)
		syncs.sync()
		for i, ch := range chans {
			if r := <-ch; r.err != nil || !r.ans.Done {
				t.Fatalf("wait %d: %+v, %v", i, r.ans, r.err)
			}
		}
		r := <-late
		if r.err != nil || !r.ans.Done {
			t.Fatalf("late wait: %+v, %v", r.ans, r.err)
		}
		probe.mu.Lock()
		reads := slices.Clone(probe.reads)
		probe.mu.Unlock()
		// Read 1 began with the waits that had arrived by then; read 2 (after a 1 s pause)
		// holds every wait still open, the late one's included.
		var sizes []int
		for _, r := range reads {
			sizes = append(sizes, len(r))
		}
		if len(reads) != 2 || len(reads[1]) != 51 || len(reads[0]) > 50 {
			t.Fatalf("reads of %v IPs, want 2 reads, the second of 51", sizes)
		}
		if got := r.at.Sub(t0); got != 3*time.Second {
			t.Errorf("late wait answered after %v, want 3s (read, pause, read)", got)
		}
	})
}

// While kube-proxy's metrics cannot be read, a wait is re-read every Fallback, and the answer
// says why.
func TestFallbackWithoutMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe, syncs := newFakeProbe(), &fakeSyncs{}
		syncs.fail(errors.New("connection refused"))
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: syncs, Fallback: 2 * time.Second})
		ch := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll, Timeout: 5 * time.Second})
		r := <-ch
		if n := probe.readCount(); n != 3 { // 0, 2, 4 s
			t.Errorf("%d reads in 5 s, want 3", n)
		}
		if r.ans.KubeProxy.Metrics != "connection refused" {
			t.Errorf("kubeProxy %+v", r.ans.KubeProxy)
		}
		if got := metric(t, a, "lastcall_node_kube_proxy_metrics_up"); got != 0 {
			t.Errorf("kube_proxy_metrics_up %v", got)
		}
		if got := metric(t, a, "lastcall_node_check_triggers_total", "trigger", TriggerFallback); got != 2 {
			t.Errorf("fallback reads %v", got)
		}
	})
}

// A failed read answers the waits it served with the error; /healthz follows.
func TestReadErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}})
		if err := a.Healthy(); err != nil {
			t.Fatalf("healthy after the first ping: %v", err)
		}
		probe.fail(fmt.Errorf("iptables IPv4: %w", dataplane.ErrRulesNotFound))
		_, err := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll, Timeout: time.Minute})
		var readErr *ReadError
		if !errors.As(err, &readErr) || !errors.Is(err, dataplane.ErrRulesNotFound) {
			t.Fatalf("got %v", err)
		}
		if err := a.Healthy(); !errors.Is(err, dataplane.ErrRulesNotFound) {
			t.Errorf("Healthy: %v", err)
		}
		if got := metric(t, a, "lastcall_node_ruleset_read_errors_total", "kind", "rules_not_found"); got != 1 {
			t.Errorf("read errors %v", got)
		}
		probe.fail(nil)
		ans, err := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1")}})
		if err != nil || ans.Error != "" || verdicts(ans)["10.0.0.1"] != "NotRouted" {
			t.Fatalf("check after recovery: %+v, %v", ans, err)
		}
		if err := a.Healthy(); err != nil {
			t.Errorf("Healthy after recovery: %v", err)
		}
	})
}

func TestUntil(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe, syncs := newFakeProbe(), &fakeSyncs{}
		probe.set("10.0.0.1", dataplane.Routed)
		probe.set("10.0.0.2", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: syncs})
		two := []dataplane.Target{target("10.0.0.1"), target("10.0.0.2")}
		all := waitAsync(a, Request{IPs: two, Until: UntilAll, Timeout: time.Minute})
		anyOne := waitAsync(a, Request{IPs: two, Until: UntilAny, Timeout: time.Minute})
		synctest.Wait()

		probe.set("10.0.0.2", dataplane.LastBackend)
		syncs.sync()
		r := <-anyOne
		if r.ans.Done || verdicts(r.ans)["10.0.0.2"] != "LastBackend" || verdicts(r.ans)["10.0.0.1"] != "Routed" {
			t.Errorf("any: %+v", r.ans)
		}
		synctest.Wait()
		pending(all)
		probe.set("10.0.0.1", dataplane.NotRouted)
		syncs.sync()
		if r := <-all; !r.ans.Done {
			t.Errorf("all: %+v", r.ans)
		}
	})
}

// A check is answered by the first read that starts after it arrives, whatever the verdict.
func TestCheckNeedsAFreshRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.readTime = 2 * time.Second
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}})
		t0 := time.Now()
		first := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}})
		time.Sleep(time.Second)
		probe.set("10.0.0.1", dataplane.NotRouted)
		second := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}})
		r1, r2 := <-first, <-second
		if verdicts(r1.ans)["10.0.0.1"] != "Routed" || r1.at.Sub(t0) != 2*time.Second {
			t.Errorf("first check: %+v after %v", r1.ans, r1.at.Sub(t0))
		}
		// The read under way when the second arrived does not answer it: 2 s read, 2 s pause, 2 s read.
		if verdicts(r2.ans)["10.0.0.1"] != "NotRouted" || r2.at.Sub(t0) != 6*time.Second {
			t.Errorf("second check: %+v after %v", r2.ans, r2.at.Sub(t0))
		}
	})
}

// notRoutedAt is the first read that saw the IP gone, across waits.
func TestNotRoutedAtSurvivesWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}})
		r1, _ := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll})
		time.Sleep(time.Minute)
		r2, _ := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll})
		if r1.IPs[0].NotRoutedAt == nil || !r2.IPs[0].NotRoutedAt.Equal(*r1.IPs[0].NotRoutedAt) || r2.IPs[0].CheckedAt.Equal(*r1.IPs[0].CheckedAt) {
			t.Errorf("first %+v, second %+v", r1.IPs[0], r2.IPs[0])
		}
		// Forgotten once nobody asked for long.
		time.Sleep(DefaultForget + DefaultHealth)
		a.mu.Lock()
		n := len(a.ips)
		a.mu.Unlock()
		if n != 0 {
			t.Errorf("%d IPs kept", n)
		}
	})
}

// The union of every wait's ports, and the IPs that are only also draining, go to the probe.
func TestTargetsCarryPortsAndContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.readTime = time.Second
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}})
		http := dataplane.ServicePort{Name: "demo/web:http", Protocol: "TCP", Port: 8080}
		metrics := dataplane.ServicePort{Name: "demo/web:metrics", Protocol: "TCP", Port: 9090}
		busy := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.9")}})
		time.Sleep(500 * time.Millisecond)
		c1 := waitAsync(a, Request{IPs: []dataplane.Target{{IP: netip.MustParseAddr("10.0.0.1"), Ports: []dataplane.ServicePort{http}}},
			Also: []dataplane.Target{{IP: netip.MustParseAddr("10.0.0.2"), Ports: []dataplane.ServicePort{http}}}})
		c2 := waitAsync(a, Request{IPs: []dataplane.Target{{IP: netip.MustParseAddr("10.0.0.1"), Ports: []dataplane.ServicePort{metrics, http}}}})
		<-busy
		r1, r2 := <-c1, <-c2
		if len(r1.ans.IPs) != 1 || len(r2.ans.IPs) != 1 {
			t.Errorf("answers for %v and %v", r1.ans.IPs, r2.ans.IPs)
		}
		probe.mu.Lock()
		defer probe.mu.Unlock()
		got := fmt.Sprint(probe.reads[1])
		want := fmt.Sprint([]dataplane.Target{
			{IP: netip.MustParseAddr("10.0.0.1"), Ports: []dataplane.ServicePort{http, metrics}},
			{IP: netip.MustParseAddr("10.0.0.2"), Ports: []dataplane.ServicePort{http}},
		})
		if got != want {
			t.Errorf("read\n%s\nwant\n%s", got, want)
		}
	})
}

func TestBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}, MaxWaits: 1, MaxIPs: 2})
		ch := waitAsync(a, Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll, Timeout: time.Minute})
		synctest.Wait()
		if _, err := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1")}}); !errors.Is(err, ErrBusy) {
			t.Errorf("second wait: %v", err)
		}
		<-ch
		if _, err := a.Wait(context.Background(), Request{IPs: []dataplane.Target{target("10.0.0.1"), target("10.0.0.2"), target("10.0.0.3")}}); !errors.Is(err, ErrBusy) {
			t.Errorf("three IPs: %v", err)
		}
	})
}

// An idle agent does not read; it pings every Health.
func TestIdlePings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		started(t, Config{Probe: probe, Syncs: &fakeSyncs{}, Health: 10 * time.Second})
		time.Sleep(35 * time.Second)
		synctest.Wait()
		probe.mu.Lock()
		defer probe.mu.Unlock()
		if len(probe.reads) != 0 || probe.pings != 4 { // 0, 10, 20, 30 s
			t.Errorf("%d reads, %d pings", len(probe.reads), probe.pings)
		}
	})
}

// A caller that leaves ends its wait; its IPs are no longer read.
func TestCallerLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		probe := newFakeProbe()
		probe.set("10.0.0.1", dataplane.Routed)
		a := started(t, Config{Probe: probe, Syncs: &fakeSyncs{}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := a.Wait(ctx, Request{IPs: []dataplane.Target{target("10.0.0.1")}, Until: UntilAll})
			done <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("got %v", err)
		}
		time.Sleep(time.Minute)
		if n := probe.readCount(); n != 1 {
			t.Errorf("%d reads after the caller left", n)
		}
	})
}
