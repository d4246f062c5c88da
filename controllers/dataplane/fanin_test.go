package dataplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

// scriptedAgent answers polls from verdicts the test sets (Routed by default), long-polling
// until one IP is final; it counts requests and how many were open at once.
type scriptedAgent struct {
	mu       sync.Mutex
	verdicts map[string]string
	fail     error
	reqs     []agent.WaitRequest
	open     int
	maxOpen  int
}

func (a *scriptedAgent) Wait(ctx context.Context, req agent.WaitRequest) (agent.Answer, error) {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.open++
	a.maxOpen = max(a.maxOpen, a.open)
	a.mu.Unlock()
	defer func() { a.mu.Lock(); a.open--; a.mu.Unlock() }()
	for {
		a.mu.Lock()
		fail := a.fail
		var ans agent.Answer
		final := false
		now := time.Now()
		for _, t := range req.IPs {
			v := a.verdicts[t.IP]
			if v == "" {
				v = "Routed"
			}
			final = final || v == "NotRouted" || v == "LastBackend"
			ans.IPs = append(ans.IPs, agent.IPAnswer{IP: t.IP, Verdict: v, NotRoutedAt: &now, CheckedAt: &now})
		}
		a.mu.Unlock()
		if fail != nil {
			return agent.Answer{}, fail
		}
		if final {
			return ans, nil
		}
		select {
		case <-ctx.Done():
			return agent.Answer{}, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (a *scriptedAgent) set(ip, verdict string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.verdicts[ip] = verdict
}

func (a *scriptedAgent) requests() []agent.WaitRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.reqs)
}

func startFanin(t *testing.T, nodes ...string) (*Fanin, map[string]*scriptedAgent) {
	t.Helper()
	agents := map[string]*scriptedAgent{}
	addrs := map[string]string{}
	for _, n := range nodes {
		agents[n+":9902"] = &scriptedAgent{verdicts: map[string]string{}}
		addrs[n] = n + ":9902"
	}
	f := &Fanin{NewWaiter: func(addr string) Waiter { return agents[addr] }, Changed: func(types.NamespacedName) {},
		WaitTimeout: 5 * time.Second, NodeTimeout: 5 * time.Second, Now: time.Now}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = f.Start(ctx) }()
	gomega.NewWithT(t).Eventually(func() bool { return f.SetAgents(addrs) }).Should(gomega.BeTrue())
	byNode := map[string]*scriptedAgent{}
	for _, n := range nodes {
		byNode[n] = agents[addrs[n]]
	}
	return f, byNode
}

func TestFaninOnePollPerNodeForEveryDrainingPod(t *testing.T) {
	f, agents := startFanin(t, "n1", "n2")
	g := gomega.NewWithT(t)
	pods := []types.NamespacedName{{Namespace: "a", Name: "p1"}, {Namespace: "a", Name: "p2"}, {Namespace: "a", Name: "p3"}}
	for i, p := range pods {
		f.Track(p, []agent.TargetJSON{{IP: fmt.Sprintf("10.0.0.%d", i+1)}})
	}
	for _, a := range agents {
		g.Eventually(func() []agent.TargetJSON {
			reqs := a.requests()
			if len(reqs) == 0 {
				return nil
			}
			return reqs[len(reqs)-1].IPs
		}).Should(gomega.HaveLen(3), "the node's poll asks for every draining IP")
	}
	agents["n1"].set("10.0.0.2", "NotRouted")
	g.Eventually(func() string { return f.Agents([]string{"10.0.0.2"})["n1"].Verdict }).Should(gomega.Equal("NotRouted"))
	g.Eventually(func() []agent.TargetJSON {
		reqs := agents["n1"].requests()
		return reqs[len(reqs)-1].AlsoDraining
	}).Should(gomega.ConsistOf(agent.TargetJSON{IP: "10.0.0.2"}), "a confirmed IP is still named as draining")
	if got := f.Agents([]string{"10.0.0.1", "10.0.0.2"})["n1"].Verdict; got != "Routed" {
		t.Errorf("a pod is drained on a node only when all its IPs are: got %q", got)
	}
	for name, a := range agents {
		a.mu.Lock()
		if a.maxOpen > 1 {
			t.Errorf("%s had %d polls open at once, want 1", name, a.maxOpen)
		}
		if len(a.reqs) > 6 {
			t.Errorf("%s was asked %d times for 3 pods and one answer", name, len(a.reqs))
		}
		a.mu.Unlock()
	}
}

func TestFaninAsksLastBackendAgainWithoutSpinning(t *testing.T) {
	f, agents := startFanin(t, "n1")
	a := agents["n1"]
	a.set("10.0.0.9", "LastBackend")
	f.Track(types.NamespacedName{Namespace: "a", Name: "solo"}, []agent.TargetJSON{{IP: "10.0.0.9"}})
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return f.Agents([]string{"10.0.0.9"})["n1"].Verdict }).Should(gomega.Equal("LastBackend"))
	a.set("10.0.0.9", "NotRouted") // another endpoint became ready: kube-proxy drops the fallback
	g.Eventually(func() string { return f.Agents([]string{"10.0.0.9"})["n1"].Verdict }).WithTimeout(3 * time.Second).Should(gomega.Equal("NotRouted"))
	if n := len(a.requests()); n > 4 {
		t.Errorf("%d polls in about a second: LastBackend is re-asked in a loop", n)
	}
}

func TestFaninRecordsFailuresFromThePollsStart(t *testing.T) {
	f, agents := startFanin(t, "n1")
	a := agents["n1"]
	a.mu.Lock()
	a.fail = errors.New("connection refused")
	a.mu.Unlock()
	before := time.Now()
	f.Track(types.NamespacedName{Namespace: "a", Name: "p"}, []agent.TargetJSON{{IP: "10.0.0.1"}})
	g := gomega.NewWithT(t)
	g.Eventually(func() string { return f.Agents([]string{"10.0.0.1"})["n1"].Err }).Should(gomega.Equal("connection refused"))
	if since := f.Agents([]string{"10.0.0.1"})["n1"].ErrSince; since.Before(before) || since.After(time.Now()) {
		t.Errorf("ErrSince %s, want the failing poll's start", since)
	}
	a.mu.Lock()
	a.fail = nil
	a.verdicts["10.0.0.1"] = "NotRouted"
	a.mu.Unlock()
	g.Eventually(func() Node { return f.Agents([]string{"10.0.0.1"})["n1"] }).WithTimeout(3*time.Second).
		Should(gomega.And(gomega.HaveField("Err", ""), gomega.HaveField("Verdict", "NotRouted")), "an answer clears the failure")
	f.Forget(types.NamespacedName{Namespace: "a", Name: "p"})
	if v := f.Agents([]string{"10.0.0.1"})["n1"].Verdict; v != "" {
		t.Errorf("a forgotten pod's answers stay: %q", v)
	}
}
