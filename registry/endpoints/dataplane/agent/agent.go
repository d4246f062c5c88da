// Package agent is lastcall-node's logic: it answers, for this node, "does the dataplane still
// send new connections to these draining IPs?" to callers that wait for the answer, reading the
// ruleset as seldom as it can.
//
// One read serves every open wait. A read starts when a wait needs one that started after it
// arrived, when kube-proxy's metrics say a rule sync finished since the last read began, every
// Recheck while waits are open (the metrics say when to look, never what the rules hold), and
// every Fallback while the metrics cannot be read. Reads never overlap, and the pause after a
// read is at least as long as the read itself, so checking takes at most half a CPU however
// slow the ruleset is to read. With no wait open the agent only pings the ruleset every Health
// for /healthz.
package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/kubeproxy"
)

// Syncs reports kube-proxy's rule syncs (kubeproxy.Client).
type Syncs interface {
	Sync(ctx context.Context) (kubeproxy.Sync, error)
}

// Moder is implemented by probes that know which dataplane they read (kubeproxy.Probe).
type Moder interface {
	Mode(ctx context.Context) (mode, how string, err error)
}

// Config configures an Agent. Zero durations and limits take the defaults.
type Config struct {
	// Probe reads the ruleset; a dataplane.TargetProbe reads only given Service ports, a
	// dataplane.Pinger serves health checks cheaply.
	Probe dataplane.Probe
	// Syncs reads kube-proxy's metrics; nil means none (reads every Fallback).
	Syncs Syncs
	// Node names this node in answers.
	Node string

	// SyncPoll is how often kube-proxy's metrics are read while waits are open.
	SyncPoll time.Duration
	// Recheck is the longest time between reads while waits are open.
	Recheck time.Duration
	// Fallback is the time between reads while kube-proxy's metrics cannot be read, and before
	// a failed read is retried.
	Fallback time.Duration
	// MinGap is the least time between the end of a read and the start of the next.
	MinGap time.Duration
	// Health is how often an idle agent pings the ruleset.
	Health time.Duration
	// ReadTimeout bounds one read.
	ReadTimeout time.Duration
	// Forget is how long the verdict history of an IP no wait asks about is kept.
	Forget time.Duration
	// MaxWaits and MaxIPs bound the open waits and the IPs they ask about.
	MaxWaits, MaxIPs int

	Log     *slog.Logger
	Metrics *Metrics
}

// Defaults.
const (
	DefaultSyncPoll    = 250 * time.Millisecond
	DefaultRecheck     = 10 * time.Second
	DefaultFallback    = time.Second
	DefaultMinGap      = 100 * time.Millisecond
	DefaultHealth      = 30 * time.Second
	DefaultReadTimeout = time.Minute
	DefaultForget      = 10 * time.Minute
	DefaultMaxWaits    = 1000
	DefaultMaxIPs      = 10000
)

func (c *Config) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	set(&c.SyncPoll, DefaultSyncPoll)
	set(&c.Recheck, DefaultRecheck)
	set(&c.Fallback, DefaultFallback)
	set(&c.MinGap, DefaultMinGap)
	set(&c.Health, DefaultHealth)
	set(&c.ReadTimeout, DefaultReadTimeout)
	set(&c.Forget, DefaultForget)
	if c.MaxWaits <= 0 {
		c.MaxWaits = DefaultMaxWaits
	}
	if c.MaxIPs <= 0 {
		c.MaxIPs = DefaultMaxIPs
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics()
	}
}

// ErrBusy is returned when the agent holds as many waits or IPs as it may.
var ErrBusy = errors.New("too many open waits or IPs")

// ReadError is a failed ruleset read; the Answer beside it carries what was known before.
type ReadError struct{ Err error }

func (e *ReadError) Error() string { return "read the ruleset: " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// Request is one wait or check.
type Request struct {
	// IPs are answered for; Also are draining too (see WaitRequest.AlsoDraining).
	IPs, Also []dataplane.Target
	// Until is UntilAll or UntilAny for waits, "" for a check (answer after one fresh read).
	Until string
	// Timeout ends a wait with the latest verdicts; zero waits for ctx.
	Timeout time.Duration
}

// Agent holds the waits and reads the ruleset for them. Run must be running.
type Agent struct {
	cfg  Config
	kick chan struct{}

	mu    sync.Mutex
	waits map[*wait]struct{}
	ips   map[netip.Addr]*ipState
	// started numbers the reads: a wait needs one numbered above the count when it arrived.
	started uint64
	last    readInfo
	// lastOK is the end of the last successful read or ping, lastAccess of the last of
	// either; health the latest error of either.
	lastOK, lastAccess time.Time
	health             error
	heartbeat          time.Time
	// sync is kube-proxy's progress as last polled, syncAtRead as the last read began.
	sync, syncAtRead kubeproxy.Sync
	syncErr          error
	fullReason       string
}

type readInfo struct {
	start, end time.Time
	err        error
	targeted   bool
	reason     string
}

type wait struct {
	ips    []netip.Addr
	ports  map[netip.Addr][]dataplane.ServicePort
	until  string
	minGen uint64
	done   chan struct{}
	answer Answer
	err    error
}

// ipState is what reads said of one IP.
type ipState struct {
	verdict      dataplane.Verdict
	checked      bool
	checkedAt    time.Time
	notRoutedAt  time.Time
	routedSeenAt time.Time
	lastAsked    time.Time
}

// New returns an Agent; start Run.
func New(cfg Config) *Agent {
	cfg.defaults()
	return &Agent{
		cfg:   cfg,
		kick:  make(chan struct{}, 1),
		waits: map[*wait]struct{}{},
		ips:   map[netip.Addr]*ipState{},
		// Metrics are unknown until polled.
		syncErr: errors.New("not read yet"),
	}
}

// Wait blocks until the request is answered, its timeout passes (an Answer with TimedOut) or
// ctx ends (ctx's error). A failed read ends it with a *ReadError beside the Answer.
func (a *Agent) Wait(ctx context.Context, req Request) (Answer, error) {
	w, err := a.register(req)
	if err != nil {
		return Answer{}, err
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-w.done:
		return w.answer, w.err
	case <-timeout:
		return a.leave(ctx, w, true)
	case <-ctx.Done():
		_, _ = a.leave(ctx, w, false)
		return Answer{}, ctx.Err()
	}
}

func (a *Agent) register(req Request) (*wait, error) {
	w := &wait{until: req.Until, done: make(chan struct{}), ports: map[netip.Addr][]dataplane.ServicePort{}}
	now := time.Now()
	for _, t := range slices.Concat(req.IPs, req.Also) {
		ip := t.IP.Unmap().WithZone("")
		for _, p := range t.Ports {
			if !slices.Contains(w.ports[ip], p) {
				w.ports[ip] = append(w.ports[ip], p)
			}
		}
		if _, ok := w.ports[ip]; !ok {
			w.ports[ip] = nil
		}
	}
	for _, t := range req.IPs {
		ip := t.IP.Unmap().WithZone("")
		if !slices.Contains(w.ips, ip) {
			w.ips = append(w.ips, ip)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waits) >= a.cfg.MaxWaits {
		return nil, fmt.Errorf("%w: %d waits open", ErrBusy, len(a.waits))
	}
	if n := a.trackedWith(w); n > a.cfg.MaxIPs {
		return nil, fmt.Errorf("%w: %d IPs asked about, at most %d", ErrBusy, n, a.cfg.MaxIPs)
	}
	w.minGen = a.started + 1
	a.waits[w] = struct{}{}
	for ip := range w.ports {
		st := a.state(ip)
		st.lastAsked = now
	}
	a.cfg.Metrics.waits.Set(float64(len(a.waits)))
	return w, nil
}

// trackedWith counts the IPs of the open waits and w.
func (a *Agent) trackedWith(w *wait) int {
	seen := map[netip.Addr]struct{}{}
	for o := range a.waits {
		for ip := range o.ports {
			seen[ip] = struct{}{}
		}
	}
	for ip := range w.ports {
		seen[ip] = struct{}{}
	}
	return len(seen)
}

func (a *Agent) state(ip netip.Addr) *ipState {
	st := a.ips[ip]
	if st == nil {
		st = &ipState{}
		a.ips[ip] = st
	}
	return st
}

// leave ends w without a read: at its timeout (with the latest verdicts) or because its caller
// left.
func (a *Agent) leave(ctx context.Context, w *wait, timedOut bool) (Answer, error) {
	a.mu.Lock()
	if _, open := a.waits[w]; !open { // answered meanwhile
		a.mu.Unlock()
		return w.answer, w.err
	}
	delete(a.waits, w)
	a.cfg.Metrics.waits.Set(float64(len(a.waits)))
	ans := a.answer(w)
	a.mu.Unlock()
	ans.TimedOut = timedOut
	ans.Mode = a.mode(ctx)
	return ans, nil
}

// Run reads for the waits until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	a.ping(ctx)
	poll := time.NewTicker(a.cfg.SyncPoll)
	defer poll.Stop()
	for {
		now := time.Now()
		a.mu.Lock()
		a.heartbeat = now
		a.mu.Unlock()
		what, at := a.next(now)
		if !at.After(now) {
			if what == "health" {
				a.ping(ctx)
			} else {
				a.read(ctx, what)
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		timer := time.NewTimer(at.Sub(now))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-a.kick:
		case <-poll.C:
			if a.open() > 0 {
				a.pollSyncs(ctx)
			}
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (a *Agent) open() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.waits)
}

// next says what the loop does next, and when: a read (with its trigger) while waits are open,
// a health ping otherwise.
func (a *Agent) next(now time.Time) (what string, at time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.forget(now)
	if len(a.waits) == 0 {
		return "health", a.lastAccess.Add(a.cfg.Health)
	}
	// Triggers in order of precedence: one due now is named before a later one that is
	// overdue.
	due := func(w string, t time.Time) {
		if t.Before(now) {
			t = now
		}
		if what == "" || t.Before(at) {
			what, at = w, t
		}
	}
	for w := range a.waits {
		if w.minGen > a.started {
			due(TriggerRequest, now)
			break
		}
	}
	metrics := a.cfg.Syncs != nil && a.syncErr == nil
	if metrics && a.sync.Advanced(a.syncAtRead) {
		due(TriggerSync, now)
	}
	if a.last.err != nil {
		due(TriggerRetry, a.last.end.Add(a.cfg.Fallback))
	}
	if !metrics {
		due(TriggerFallback, a.last.start.Add(a.cfg.Fallback))
	}
	due(TriggerPeriodic, a.last.start.Add(a.cfg.Recheck))
	// Rest at least as long as the last read took.
	if earliest := a.last.end.Add(max(a.cfg.MinGap, a.last.end.Sub(a.last.start))); at.Before(earliest) {
		at = earliest
	}
	return what, at
}

// forget drops the history of IPs no wait asks about.
func (a *Agent) forget(now time.Time) {
	asked := map[netip.Addr]bool{}
	for w := range a.waits {
		for ip := range w.ports {
			asked[ip] = true
		}
	}
	for ip, st := range a.ips {
		if !asked[ip] && now.Sub(st.lastAsked) > a.cfg.Forget {
			delete(a.ips, ip)
		}
	}
	a.cfg.Metrics.ips.Set(float64(len(a.ips)))
}

// targets are the IPs of the open waits, each with the union of the ports given for it.
func (a *Agent) targets() []dataplane.Target {
	ports := map[netip.Addr][]dataplane.ServicePort{}
	for w := range a.waits {
		for ip, ps := range w.ports {
			cur, seen := ports[ip]
			if !seen {
				cur = nil
			}
			for _, p := range ps {
				if !slices.Contains(cur, p) {
					cur = append(cur, p)
				}
			}
			ports[ip] = cur
		}
	}
	out := make([]dataplane.Target, 0, len(ports))
	for ip, ps := range ports {
		slices.SortFunc(ps, func(x, y dataplane.ServicePort) int {
			return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Protocol, y.Protocol), cmp.Compare(x.Port, y.Port))
		})
		out = append(out, dataplane.Target{IP: ip, Ports: ps})
	}
	slices.SortFunc(out, func(x, y dataplane.Target) int { return x.IP.Compare(y.IP) })
	return out
}

// read reads the ruleset once for every open wait and answers those it settles.
func (a *Agent) read(ctx context.Context, trigger string) {
	a.mu.Lock()
	targets := a.targets()
	a.started++
	gen := a.started
	a.syncAtRead = a.sync
	a.mu.Unlock()

	start := time.Now()
	var res dataplane.Result
	var err error
	if len(targets) > 0 {
		rctx, cancel := context.WithTimeout(ctx, a.cfg.ReadTimeout)
		res, err = dataplane.CheckTargets(rctx, a.cfg.Probe, targets)
		cancel()
	}
	end := time.Now()
	if ctx.Err() != nil {
		return // shutting down: the waits end with their callers
	}
	read := "full"
	if res.Targeted {
		read = "targeted"
	}
	a.record(trigger, read, err, start, end)

	a.mu.Lock()
	prevErr := a.health
	a.last = readInfo{start: start, end: end, err: err, targeted: res.Targeted, reason: res.FullReason}
	a.lastAccess = end
	if err == nil {
		a.lastOK, a.health = end, nil
		a.update(res.Verdicts, start, end)
	} else {
		a.health = err
	}
	var settled []*wait
	for w := range a.waits {
		if w.minGen > gen {
			continue
		}
		if err != nil || a.settles(w) {
			settled = append(settled, w)
		}
	}
	for _, w := range settled {
		delete(a.waits, w)
		w.answer = a.answer(w)
		if err != nil {
			w.err = &ReadError{Err: err}
		}
	}
	a.cfg.Metrics.waits.Set(float64(len(a.waits)))
	fullChanged := res.FullReason != a.fullReason && err == nil
	if fullChanged {
		a.fullReason = res.FullReason
	}
	a.mu.Unlock()

	mode := a.mode(ctx)
	for _, w := range settled {
		w.answer.Mode = mode
		close(w.done)
	}
	switch {
	case err != nil && (prevErr == nil || prevErr.Error() != err.Error()):
		a.cfg.Log.Warn("cannot read the ruleset", "err", err, "retryIn", a.cfg.Fallback)
	case err == nil && prevErr != nil:
		a.cfg.Log.Info("ruleset readable again")
	}
	if fullChanged && res.FullReason != "" {
		a.cfg.Log.Warn("reading the whole ruleset although Service ports were given", "why", res.FullReason)
	}
	a.cfg.Log.Debug("ruleset read", "trigger", trigger, "ips", len(targets), "targeted", res.Targeted, "commands", res.Reads,
		"took", end.Sub(start), "answered", len(settled), "err", err)
}

// record counts a read (read: "targeted", "full", "ping") in the metrics.
func (a *Agent) record(trigger, read string, err error, start, end time.Time) {
	m := a.cfg.Metrics
	m.triggers.WithLabelValues(trigger).Inc()
	if err != nil {
		m.checks.WithLabelValues("error", read).Inc()
		m.readErrors.WithLabelValues(errorKind(err)).Inc()
		m.readable.Set(0)
		return
	}
	m.checks.WithLabelValues("ok", read).Inc()
	m.duration.WithLabelValues(read).Observe(end.Sub(start).Seconds())
	m.readable.Set(1)
}

func errorKind(err error) string {
	switch {
	case errors.Is(err, dataplane.ErrRulesNotFound):
		return "rules_not_found"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, kubeproxy.ErrUnsupportedMode):
		return "unsupported_mode"
	}
	return "command"
}

// update stores the verdicts of a read that ran from start to end.
func (a *Agent) update(verdicts map[netip.Addr]dataplane.Verdict, start, end time.Time) {
	for ip, v := range verdicts {
		st := a.state(ip)
		was := st.verdict.State
		if v.State == dataplane.NotRouted {
			if !st.checked || was != dataplane.NotRouted {
				st.notRoutedAt = end
			}
		} else {
			st.notRoutedAt, st.routedSeenAt = time.Time{}, start
		}
		changed := !st.checked || was != v.State
		st.verdict, st.checked, st.checkedAt = v, true, end
		if changed {
			a.cfg.Log.Info("verdict", "ip", ip, "verdict", v.State.String(), "routes", len(v.Routes), "routedSeenAt", timeOrNil(st.routedSeenAt))
		}
	}
	counts := map[dataplane.State]int{}
	for _, st := range a.ips {
		if st.checked {
			counts[st.verdict.State]++
		}
	}
	for _, s := range []dataplane.State{dataplane.NotRouted, dataplane.Routed, dataplane.LastBackend} {
		a.cfg.Metrics.verdicts.WithLabelValues(s.String()).Set(float64(counts[s]))
	}
}

func timeOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// settles reports whether the latest verdicts answer w.
func (a *Agent) settles(w *wait) bool {
	if w.until == "" {
		return true // a check: any read since it arrived
	}
	any := false
	for _, ip := range w.ips {
		st := a.ips[ip]
		ok := st != nil && st.checked && st.verdict.State != dataplane.Routed
		if ok {
			any = true
		} else if w.until == UntilAll {
			return false
		}
	}
	return w.until == UntilAll || any
}

// answer renders the latest verdicts for w's IPs.
func (a *Agent) answer(w *wait) Answer {
	ans := Answer{Node: a.cfg.Node, Done: true, IPs: make([]IPAnswer, 0, len(w.ips))}
	var newest time.Time
	for _, ip := range w.ips {
		st := a.ips[ip]
		ia := IPAnswer{IP: ip.String(), Verdict: VerdictUnknown}
		if st != nil && st.checked {
			ia.Verdict = st.verdict.State.String()
			ia.CheckedAt = timePtr(st.checkedAt)
			ia.NotRoutedAt = timePtr(st.notRoutedAt)
			ia.RoutedSeenAt = timePtr(st.routedSeenAt)
			for _, r := range st.verdict.Routes {
				ia.Routes = append(ia.Routes, RouteJSON{Service: r.Service, Chain: r.Chain, Endpoint: r.Endpoint.String(), Local: r.Local, Fallback: r.Fallback})
			}
			if st.checkedAt.After(newest) {
				newest = st.checkedAt
			}
		}
		if ia.Verdict != dataplane.NotRouted.String() && ia.Verdict != dataplane.LastBackend.String() {
			ans.Done = false
		}
		ans.IPs = append(ans.IPs, ia)
	}
	ans.CheckedAt = timePtr(newest)
	if a.last.err == nil && !a.last.end.IsZero() {
		ans.Read, ans.FullReason = "full", a.last.reason
		if a.last.targeted {
			ans.Read = "targeted"
		}
	}
	if a.last.err != nil {
		ans.Error = a.last.err.Error()
	}
	ans.KubeProxy = a.kubeProxyStatus()
	return ans
}

func (a *Agent) kubeProxyStatus() KubeProxyStatus {
	s := KubeProxyStatus{Metrics: "ok", LastSync: timePtr(a.sync.Newest())}
	switch {
	case a.cfg.Syncs == nil:
		s.Metrics = "not configured"
	case a.syncErr != nil:
		s.Metrics = a.syncErr.Error()
	}
	return s
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (a *Agent) mode(ctx context.Context) string {
	m, ok := a.cfg.Probe.(Moder)
	if !ok {
		return ""
	}
	mode, _, err := m.Mode(ctx)
	if err != nil {
		return ""
	}
	return mode
}

// pollSyncs reads kube-proxy's metrics.
func (a *Agent) pollSyncs(ctx context.Context) {
	if a.cfg.Syncs == nil {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, max(a.cfg.SyncPoll, time.Second))
	s, err := a.cfg.Syncs.Sync(pctx)
	cancel()
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	prevErr := a.syncErr
	a.syncErr = err
	if err == nil {
		a.sync = s
	}
	a.mu.Unlock()
	m := a.cfg.Metrics
	if err != nil {
		m.metricsUp.Set(0)
		if prevErr == nil || prevErr.Error() != err.Error() {
			a.cfg.Log.Warn("cannot read kube-proxy's metrics: re-reading the ruleset at a fixed interval while waits are open",
				"err", err, "interval", a.cfg.Fallback)
		}
		return
	}
	m.metricsUp.Set(1)
	if t := s.Newest(); !t.IsZero() {
		m.lastSync.Set(float64(t.UnixNano()) / 1e9)
	}
	if prevErr != nil {
		a.cfg.Log.Info("reading kube-proxy's metrics", "lastSync", timeOrNil(s.Newest()), "pending", s.Pending)
	}
}

// ping checks that the ruleset can be read, for /healthz, and polls kube-proxy's metrics.
func (a *Agent) ping(ctx context.Context) {
	a.pollSyncs(ctx)
	start := time.Now()
	var err error
	if p, ok := a.cfg.Probe.(dataplane.Pinger); ok {
		pctx, cancel := context.WithTimeout(ctx, a.cfg.ReadTimeout)
		err = p.Ping(pctx, dataplane.IPv4)
		if errors.Is(err, dataplane.ErrRulesNotFound) {
			if err6 := p.Ping(pctx, dataplane.IPv6); err6 == nil {
				err = nil
			}
		}
		cancel()
	}
	end := time.Now()
	if ctx.Err() != nil {
		return
	}
	a.record(TriggerHealth, "ping", err, start, end)
	a.mu.Lock()
	prev, first := a.health, a.lastAccess.IsZero()
	a.health = err
	a.lastAccess = end
	if err == nil {
		a.lastOK = end
	}
	a.mu.Unlock()
	switch {
	case err != nil && (first || prev == nil || prev.Error() != err.Error()):
		a.cfg.Log.Warn("cannot read the ruleset", "err", err)
	case err == nil && (first || prev != nil):
		mode, how := "", ""
		if m, ok := a.cfg.Probe.(Moder); ok {
			mode, how, _ = m.Mode(ctx)
		}
		a.cfg.Log.Info("ruleset readable", "mode", mode, "modeFrom", how)
	}
}

// Healthy returns why the ruleset cannot be read, or nil.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.health != nil:
		return a.health
	case a.lastOK.IsZero():
		return errors.New("the ruleset has not been read yet")
	case time.Since(a.lastOK) > 3*a.cfg.Health+a.cfg.ReadTimeout:
		return fmt.Errorf("the ruleset was last read at %s", a.lastOK.UTC().Format(time.RFC3339))
	}
	return nil
}

// Alive returns an error when the loop has not turned for longer than a read and a health
// interval can take.
func (a *Agent) Alive() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if limit := a.cfg.Health + a.cfg.ReadTimeout + 30*time.Second; !a.heartbeat.IsZero() && time.Since(a.heartbeat) > limit {
		return fmt.Errorf("the check loop last turned at %s", a.heartbeat.UTC().Format(time.RFC3339))
	}
	return nil
}

// Triggers of reads, as the metrics label them.
const (
	TriggerRequest  = "request"
	TriggerSync     = "sync"
	TriggerPeriodic = "periodic"
	TriggerFallback = "fallback"
	TriggerRetry    = "retry"
	TriggerHealth   = "health"
)
