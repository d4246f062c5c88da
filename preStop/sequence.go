package prestop

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/lastcall-dev/lastcall/registry"
)

// Drainer puts the app into drain mode (AppAdmin in production).
type Drainer interface {
	Drain(ctx context.Context) (AppStatus, error)
}

// Deps are the parts Run drives. Nil fields are skipped.
type Deps struct {
	Registries []registry.Registry
	// Deletion reads the pod's deletionTimestamp and grace period (nil when the pod is not being
	// deleted); nil without access to the Kubernetes API.
	Deletion func(ctx context.Context) (*Deletion, error)
	App      Drainer
	Meter    Meter
	Log      *slog.Logger
}

// Timing is the part of Config that shapes the sequence.
type Timing struct {
	Reserve, MaxWait, MinWait, Quiet time.Duration
	// QuietMax caps the quiet window the traffic calls for; zero: the budget alone bounds it.
	QuietMax time.Duration
	// Sample is how often traffic is sampled; Quiet/10 within [20ms, 250ms] when zero.
	Sample time.Duration
	// WaitConnections makes the helper wait, after quiet and within the budget, until callers
	// closed their inbound connections.
	WaitConnections bool
}

// TimingOf extracts Timing from a Config.
func TimingOf(c Config) Timing {
	return Timing{Reserve: c.Drain.Reserve, MaxWait: c.Drain.MaxWait, MinWait: c.MinWait, Quiet: c.Quiet,
		QuietMax: c.QuietMax, WaitConnections: c.WaitConnections}
}

// Outcomes of one registry.
const (
	Confirmed = "confirmed" // callers observably stopped finding the pod
	Failed    = "failed"    // the registry could not confirm; the fallback wait covered it
	TimedOut  = "timed-out" // the budget ended first
)

// RegistryResult is how one registry's drain went.
type RegistryResult struct {
	Name    string
	Removed int
	Outcome string
	Err     error
	Took    time.Duration
}

// Result summarises a drain.
type Result struct {
	Budget       time.Duration
	BudgetSource string
	Registries   []RegistryResult
	FellBack     bool
	Quiet        bool
	// QuietWindow is the quiet window the traffic called for, and why.
	QuietWindow QuietChoice
	// OpenConnections is how many inbound connections on the serving ports were open when the
	// helper returned (as of the latest sample), if OpenKnown.
	OpenConnections int
	OpenKnown       bool
	Elapsed         time.Duration
	// CPU is the CPU time the helper's process used until it returned, if CPUKnown.
	CPU      time.Duration
	CPUKnown bool
}

// killAtTimeout bounds the one API read that sizes the budget; with a hung API server it takes
// at most a quarter of --max-wait, so the rest still goes to the drain.
const killAtTimeout = time.Second

// Run is the drain sequence. It returns by the budget it computes in its first step, whatever
// its dependencies do, since every step runs under one deadline.
func Run(ctx context.Context, t Timing, in registry.Instance, d Deps) Result {
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	log := d.Log
	start := time.Now()
	var res Result

	// 1. Budget.
	var del *Deletion
	if d.Deletion != nil {
		kctx, cancel := context.WithTimeout(ctx, min(killAtTimeout, t.MaxWait/4))
		k, err := d.Deletion(kctx)
		cancel()
		if err != nil {
			log.WarnContext(ctx, "pod unreadable, budget from --max-wait", "err", err)
		}
		del = k
	}
	res.Budget, res.BudgetSource = Budget(start, del, t.Reserve, t.MaxWait)
	deadline := start.Add(res.Budget)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	step(ctx, log, "budget", start, nil, "budget", res.Budget, "source", res.BudgetSource, "deadline", deadline)

	// Traffic is sampled from now on: the quiet window learns how long the traffic pauses.
	var traffic *Traffic
	if d.Meter != nil {
		traffic = Watch(ctx, d.Meter, sampleEvery(t))
		defer traffic.Stop(deadline)
	}

	// 2. App drain mode: callers on keep-alive connections are told to go elsewhere.
	if d.App != nil {
		t0 := time.Now()
		st, err := d.App.Drain(ctx)
		step(ctx, log, "app-drain", t0, err, "state", st.State, "inFlight", st.InFlight)
	}

	// 3. and 4. Deregister everywhere at once; each registry then confirms on its own.
	res.Registries = drainRegistries(ctx, in, d)
	for _, r := range res.Registries {
		res.FellBack = res.FellBack || r.Outcome == Failed
	}
	if res.FellBack {
		t0 := time.Now()
		wait(ctx, t.MaxWait)
		step(ctx, log, "fallback-wait", t0, nil, "reason", "a registry could not confirm", "limit", t.MaxWait)
	}

	// 5. Traffic quiescence.
	if traffic != nil && ctx.Err() == nil {
		t0 := time.Now()
		choice, err := traffic.AwaitQuiet(ctx, t.Quiet, t.QuietMax)
		res.Quiet, res.QuietWindow = err == nil, choice
		if err != nil && ctx.Err() == nil {
			// Without a meter, a plain wait of the quiet period is the best remaining evidence.
			wait(ctx, t.Quiet)
		}
		h := traffic.History()
		step(ctx, log, "quiesce", t0, err, "quiet", t.Quiet, "window", choice.Window, "why", choice.Reason,
			"longestGap", h.LongestGap, "gaps", h.Gaps, "beyondBudget", choice.BeyondBudget, "reached", res.Quiet)
	}

	// 5b. Callers' connections: wait, within the budget, until they closed them.
	if traffic != nil && t.WaitConnections && ctx.Err() == nil {
		t0 := time.Now()
		n, known, err := traffic.AwaitClosed(ctx)
		switch {
		case !known:
			step(ctx, log, "wait-connections", t0, errors.New("the traffic meter does not count connections"))
		case err != nil:
			log.WarnContext(ctx, "callers still had connections open when the budget ended",
				"step", "wait-connections", "took", time.Since(t0), "open", n)
		default:
			step(ctx, log, "wait-connections", t0, nil, "open", n)
		}
	}

	// 6. Floor.
	if rest := t.MinWait - time.Since(start); rest > 0 {
		t0 := time.Now()
		wait(ctx, rest)
		step(ctx, log, "min-wait", t0, nil, "min", t.MinWait)
	}

	if traffic != nil {
		res.OpenConnections, res.OpenKnown = traffic.Open()
	}
	res.Elapsed = time.Since(start)
	res.CPU, res.CPUKnown = cpuUsed()
	attrs := []any{"took", res.Elapsed, "budget", res.Budget, "budgetSource", res.BudgetSource,
		"fellBack", res.FellBack, "quiet", res.Quiet, "quietWindow", res.QuietWindow.Window, "pod", in.Namespace + "/" + in.Pod}
	if res.OpenKnown {
		attrs = append(attrs, "openConnections", res.OpenConnections)
	}
	if res.CPUKnown {
		attrs = append(attrs, "cpu", res.CPU)
	}
	for _, r := range res.Registries {
		attrs = append(attrs, r.Name, r.Outcome)
	}
	log.InfoContext(ctx, "drain done", attrs...)
	return res
}

// drainRegistries runs Deregister then AwaitPropagated for every registry concurrently. It
// returns when all are done or ctx ends; a registry that ignores ctx is abandoned as TimedOut.
func drainRegistries(ctx context.Context, in registry.Instance, d Deps) []RegistryResult {
	type indexed struct {
		i int
		r RegistryResult
	}
	done := make(chan indexed, len(d.Registries)) // buffered: abandoned goroutines never block
	out := make([]RegistryResult, len(d.Registries))
	for i, reg := range d.Registries {
		out[i] = RegistryResult{Name: reg.Name(), Outcome: TimedOut, Err: context.DeadlineExceeded}
		go func() {
			t0 := time.Now()
			r := RegistryResult{Name: reg.Name()}
			rc, err := reg.Deregister(ctx, in)
			r.Removed = len(rc.Removed)
			step(ctx, d.Log, "deregister", t0, err, "registry", r.Name, "removed", rc.Names(), "version", rc.Version)
			if err == nil {
				t1 := time.Now()
				err = reg.AwaitPropagated(ctx, in, rc)
				step(ctx, d.Log, "propagate", t1, err, "registry", r.Name)
			}
			r.Err, r.Took = err, time.Since(t0)
			switch {
			case err == nil:
				r.Outcome = Confirmed
			case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
				r.Outcome = TimedOut
			default:
				r.Outcome = Failed
			}
			done <- indexed{i, r}
		}()
	}
	for range d.Registries {
		select {
		case x := <-done:
			out[x.i] = x.r
		case <-ctx.Done():
			return out
		}
	}
	return out
}

func sampleEvery(t Timing) time.Duration {
	if t.Sample > 0 {
		return t.Sample
	}
	return min(max(t.Quiet/10, 20*time.Millisecond), 250*time.Millisecond)
}

// wait sleeps for d or until ctx ends.
func wait(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// step logs one step of the sequence with its duration.
func step(ctx context.Context, log *slog.Logger, name string, t0 time.Time, err error, attrs ...any) {
	attrs = append(attrs, "step", name, "took", time.Since(t0))
	if err != nil {
		log.WarnContext(ctx, name+" failed", append(attrs, "err", err)...)
		return
	}
	log.InfoContext(ctx, name, attrs...)
}
