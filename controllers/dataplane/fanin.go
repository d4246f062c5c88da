package dataplane

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

// Waiter is one agent's long poll; agent.Client is the real one.
type Waiter interface {
	Wait(ctx context.Context, req agent.WaitRequest) (agent.Answer, error)
}

// Fanin keeps one long poll open per node that has an agent, while pods drain. Each poll asks
// for every draining IP the node has not yet confirmed, with until "any": it returns as soon as
// one of them is confirmed (or at WaitTimeout) and is sent again for the rest. The number of
// open connections is the number of nodes, whatever the number of draining pods; a new
// draining pod restarts the nodes' polls (coalesced over restartDelay, and a poll runs at
// least minPollAge): a node is asked at most 1/minPollAge times a second while pods keep
// joining, whatever their number.
//
// LastBackend ends an agent's wait but is final only when the controller's cache agrees that
// no ready endpoint is left; an IP last answered so is asked again every lastBackendRecheck.
type Fanin struct {
	// NewWaiter makes the client of the agent at addr (host:port).
	NewWaiter func(addr string) Waiter
	// Changed is told which pods' answers changed.
	Changed func(types.NamespacedName)
	// WaitTimeout is the long poll's timeout, NodeTimeout the extra time a poll may take
	// before it fails; a node whose polls fail for NodeTimeout counts as not answering.
	WaitTimeout, NodeTimeout time.Duration
	Now                      func() time.Time

	mu    sync.Mutex
	ctx   context.Context
	pods  map[types.NamespacedName][]agent.TargetJSON
	ips   map[string]int // how many tracked pods have each IP
	nodes map[string]*node
}

const (
	restartDelay       = 100 * time.Millisecond
	minPollAge         = 250 * time.Millisecond
	lastBackendRecheck = time.Second
)

// node is one agent's state; its fields are guarded by Fanin.mu.
type node struct {
	addr    string
	stop    context.CancelFunc
	wake    chan struct{}
	answers map[string]agent.IPAnswer
	// answered is when each answer arrived (the controller's clock).
	answered map[string]time.Time
	err      string
	// errSince is when the first of the failing polls was sent.
	errSince time.Time
}

// Start gives the fan-in the context its polls live in (the manager's).
func (f *Fanin) Start(ctx context.Context) error {
	f.mu.Lock()
	f.ctx = ctx
	f.mu.Unlock()
	<-ctx.Done()
	return nil
}

// NeedLeaderElection: only the leader writes conditions, so only it asks the agents.
func (f *Fanin) NeedLeaderElection() bool { return true }

// SetAgents starts polls for new agents (node name → host:port) and ends those of agents
// gone; false until Start.
func (f *Fanin) SetAgents(agents map[string]string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil {
		return false
	}
	if f.nodes == nil {
		f.nodes = map[string]*node{}
	}
	for name, n := range f.nodes {
		if agents[name] != n.addr {
			n.stop()
			delete(f.nodes, name)
		}
	}
	for name, addr := range agents {
		if _, ok := f.nodes[name]; ok {
			continue
		}
		ctx, stop := context.WithCancel(f.ctx)
		n := &node{addr: addr, stop: stop, wake: make(chan struct{}, 1), answers: map[string]agent.IPAnswer{}, answered: map[string]time.Time{}}
		f.nodes[name] = n
		go f.poll(ctx, n, f.NewWaiter(addr))
	}
	return true
}

// Track adds or updates a draining pod's IPs and Service ports.
func (f *Fanin) Track(pod types.NamespacedName, targets []agent.TargetJSON) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pods == nil {
		f.pods, f.ips = map[types.NamespacedName][]agent.TargetJSON{}, map[string]int{}
	}
	old, ok := f.pods[pod]
	if ok && equalTargets(old, targets) {
		return
	}
	f.untrack(old)
	for _, t := range targets {
		f.ips[t.IP]++
	}
	f.pods[pod] = targets
	for _, n := range f.nodes {
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
}

// Forget drops a pod that is gone or answered for good.
func (f *Fanin) Forget(pod types.NamespacedName) {
	f.mu.Lock()
	defer f.mu.Unlock()
	targets, ok := f.pods[pod]
	if !ok {
		return
	}
	delete(f.pods, pod)
	f.untrack(targets)
}

// untrack drops IPs no tracked pod has any more, with the nodes' answers about them; f.mu is
// held.
func (f *Fanin) untrack(targets []agent.TargetJSON) {
	for _, t := range targets {
		if f.ips[t.IP]--; f.ips[t.IP] > 0 {
			continue
		}
		delete(f.ips, t.IP)
		for _, n := range f.nodes {
			delete(n.answers, t.IP)
			delete(n.answered, t.IP)
		}
	}
}

// Agents reports, per node with an agent, what it said of ips: the least drained verdict.
func (f *Fanin) Agents(ips []string) map[string]Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]Node, len(f.nodes))
	for name, n := range f.nodes {
		out[name] = summarize(name, n, ips)
	}
	return out
}

// summarize folds a node's verdicts for a pod's IPs: the pod is drained on the node only when
// every IP is.
func summarize(name string, n *node, ips []string) Node {
	out := Node{Name: name, Err: n.err, ErrSince: n.errSince}
	rank := map[string]int{dataplane.NotRouted.String(): 0, dataplane.LastBackend.String(): 1}
	worst := -1
	for _, ip := range ips {
		a, ok := n.answers[ip]
		if !ok {
			return Node{Name: name, Err: n.err, ErrSince: n.errSince}
		}
		r, known := rank[a.Verdict]
		if !known {
			r = 2
		}
		at := a.NotRoutedAt
		if a.Verdict != dataplane.NotRouted.String() {
			at = a.CheckedAt
		}
		if r > worst {
			worst, out.Verdict = r, a.Verdict
		}
		if at != nil && at.After(out.At) {
			out.At = *at
		}
	}
	return out
}

// poll is one node's loop: a long poll for the IPs it has not confirmed, sent again when it
// answers, when it fails (after a pause), and when the set of draining pods changes.
func (f *Fanin) poll(ctx context.Context, n *node, w Waiter) {
	for ctx.Err() == nil {
		req, pods, recheck := f.request(n)
		if len(req.IPs) == 0 {
			var due <-chan time.Time
			var timer *time.Timer
			if recheck > 0 {
				timer = time.NewTimer(recheck)
				due = timer.C
			}
			select {
			case <-ctx.Done():
			case <-n.wake:
			case <-due:
			}
			if timer != nil {
				timer.Stop()
			}
			continue
		}
		sent := f.Now()
		pctx, cancel := context.WithTimeout(ctx, f.WaitTimeout+f.NodeTimeout)
		type result struct {
			a   agent.Answer
			err error
		}
		done := make(chan result, 1)
		go func() {
			a, err := w.Wait(pctx, req)
			done <- result{a, err}
		}()
		var res result
		restarted := false
		select {
		case res = <-done:
		case <-n.wake:
			// New pods drain: let their neighbours join, then ask again with all of them.
			timer := time.NewTimer(max(restartDelay, sent.Add(minPollAge).Sub(f.Now())))
			select {
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
			cancel()
			if res = <-done; res.err == nil {
				f.record(n, pods, sent, res.a, nil) // answered meanwhile: not lost
			}
			restarted = true
		}
		cancel()
		if restarted || ctx.Err() != nil {
			continue
		}
		f.record(n, pods, sent, res.a, res.err)
		if res.err != nil {
			timer := time.NewTimer(retryDelay(res.err))
			select {
			case <-ctx.Done():
			case <-timer.C:
			case <-n.wake:
			}
			timer.Stop()
		}
	}
}

// retryDelay paces a failing agent: it is asked again soon, not in a loop.
func retryDelay(err error) time.Duration {
	var se *agent.StatusError
	if errors.As(err, &se) && se.Code == http.StatusTooManyRequests {
		return 2 * time.Second
	}
	return time.Second
}

// request is the node's next poll: every draining IP it has not confirmed, the others as
// AlsoDraining; pods are the pods it asks for. recheck is when an IP last answered
// LastBackend is due again.
func (f *Fanin) request(n *node) (req agent.WaitRequest, pods map[string][]types.NamespacedName, recheck time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.Now()
	req = agent.WaitRequest{Until: agent.UntilAny, Timeout: f.WaitTimeout.String()}
	pods = map[string][]types.NamespacedName{}
	for key, targets := range f.pods {
		for _, t := range targets {
			pods[t.IP] = append(pods[t.IP], key)
			a, ok := n.answers[t.IP]
			confirmed := ok && a.Verdict == dataplane.NotRouted.String()
			if ok && a.Verdict == dataplane.LastBackend.String() {
				if due := n.answered[t.IP].Add(lastBackendRecheck).Sub(now); due > 0 {
					confirmed = true
					if recheck == 0 || due < recheck {
						recheck = due
					}
				}
			}
			if confirmed {
				// The poll must not return at once because of it.
				req.AlsoDraining = append(req.AlsoDraining, t)
				continue
			}
			req.IPs = append(req.IPs, t)
		}
	}
	return req, pods, recheck
}

// record keeps a poll's answer, and tells the pods whose verdict on this node changed.
func (f *Fanin) record(n *node, pods map[string][]types.NamespacedName, sent time.Time, a agent.Answer, err error) {
	f.mu.Lock()
	changed := map[types.NamespacedName]bool{}
	if err != nil {
		if n.err == "" {
			n.errSince = sent
			for _, ps := range pods {
				for _, p := range ps {
					changed[p] = true
				}
			}
		}
		n.err = err.Error()
	} else {
		wasFailing := n.err != ""
		n.err, n.errSince = "", time.Time{}
		for _, ip := range a.IPs {
			old, had := n.answers[ip.IP]
			if _, asked := pods[ip.IP]; !asked || f.ips[ip.IP] == 0 {
				continue // not asked, or its pod was forgotten meanwhile
			}
			n.answers[ip.IP], n.answered[ip.IP] = ip, f.Now()
			if !had || old.Verdict != ip.Verdict || wasFailing {
				for _, p := range pods[ip.IP] {
					changed[p] = true
				}
			}
		}
	}
	f.mu.Unlock()
	for p := range changed {
		f.Changed(p)
	}
}

func equalTargets(a, b []agent.TargetJSON) bool {
	return slices.EqualFunc(a, b, func(x, y agent.TargetJSON) bool {
		return x.IP == y.IP && slices.Equal(x.Ports, y.Ports)
	})
}

// AgentAddr is the agent's address on its node.
func AgentAddr(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
