package prestop

import (
	"context"
	"sync"
	"time"
)

// GapFactor sizes the quiet window from the traffic's own pauses: a window this many times the
// longest pause seen between two moves of the traffic. Three times tells a pause of steady
// traffic (each gap about the same) from its end with a wide margin, and is still short of
// the budget for traffic every few seconds.
const GapFactor = 3

// Why a quiet window was chosen, as logged.
const (
	QuietFloor   = "floor"     // no pause seen was long enough to matter: --quiet
	QuietTraffic = "traffic"   // GapFactor × the longest pause seen between two moves
	QuietCapped  = "quiet-max" // the traffic called for more than --quiet-max
	QuietOff     = "off"       // --quiet=0: no quiet wait
)

// History is when the traffic moved, as far as the helper saw: from just before it started (the
// meter's last move, when it knows one) until now.
type History struct {
	// Last is the latest move; zero when none was seen.
	Last time.Time
	// LongestGap is the longest pause between two consecutive moves seen, and Gaps how many
	// such pauses there were.
	LongestGap time.Duration
	Gaps       int
}

// Moved returns h with a move at t; a move not after h.Last adds nothing.
func (h History) Moved(t time.Time) History {
	if !t.After(h.Last) {
		return h
	}
	if !h.Last.IsZero() {
		h.Gaps++
		h.LongestGap = max(h.LongestGap, t.Sub(h.Last))
	}
	h.Last = t
	return h
}

// QuietChoice is the quiet window and why.
type QuietChoice struct {
	Window time.Duration
	Reason string
	// BeyondBudget is set when the window, counted from the last move, ends after the deadline:
	// the budget ends the wait, not quiet.
	BeyondBudget bool
}

// ChooseQuiet is the quiet window for the traffic seen in h: --quiet (floor) at least, longer
// when the traffic itself pauses longer (GapFactor × the longest gap), so that a pod that gets a
// request every few seconds is not taken for idle after one second; at most ceiling, when set,
// but never below floor (--quiet-max: traffic that never ends, such as metrics scrapes on the
// serving port, would otherwise hold every drain to its budget). since is when the window
// starts (the last move), deadline the end of the budget (zero: none); neither changes the
// window, only BeyondBudget. floor 0 turns the wait off.
func ChooseQuiet(floor, ceiling time.Duration, h History, since, deadline time.Time) QuietChoice {
	if floor <= 0 {
		return QuietChoice{Reason: QuietOff}
	}
	c := QuietChoice{Window: floor, Reason: QuietFloor}
	if w := GapFactor * h.LongestGap; w > floor {
		c = QuietChoice{Window: w, Reason: QuietTraffic}
		if top := max(ceiling, floor); ceiling > 0 && w > top {
			c = QuietChoice{Window: top, Reason: QuietCapped}
		}
	}
	c.BeyondBudget = !deadline.IsZero() && since.Add(c.Window).After(deadline)
	return c
}

// Traffic samples a meter from the helper's start, so the quiet wait knows the traffic's rhythm
// (how long it pauses) and when it last moved, and the summary knows the open connections.
// Only its goroutine calls the meter.
type Traffic struct {
	meter Meter
	every time.Duration

	mu      sync.Mutex
	st      trafficState
	waiters []*waiter

	cancel context.CancelFunc
	done   chan struct{}
}

// trafficState is what the samples so far say.
type trafficState struct {
	sampled bool
	err     error
	value   uint64
	at      time.Time // the latest sample
	hist    History
	// knows is set once the meter knew when it last moved (the app's last request, a socket's
	// last data): the quiet window may then count from a move before the quiet wait began.
	knows     bool
	open      int
	openKnown bool
}

// waiter is a goroutine waiting for a condition on the samples; ready runs under the lock after
// every sample, and once when the waiter arrives.
type waiter struct {
	ready func(now time.Time, s trafficState) bool
	ch    chan struct{}
}

// Watch starts sampling m every interval until ctx ends or Stop.
func Watch(ctx context.Context, m Meter, every time.Duration) *Traffic {
	ctx, cancel := context.WithCancel(ctx)
	t := &Traffic{meter: m, every: every, cancel: cancel, done: make(chan struct{})}
	go t.run(ctx)
	return t
}

// Stop ends the sampling and waits for the sampler until it returns or the deadline passes
// (zero: no bound), so a meter that hangs cannot make the helper outlive its budget.
func (t *Traffic) Stop(deadline time.Time) {
	t.cancel()
	if deadline.IsZero() {
		<-t.done
		return
	}
	tm := time.NewTimer(time.Until(deadline))
	defer tm.Stop()
	select {
	case <-t.done:
	case <-tm.C:
	}
}

func (t *Traffic) run(ctx context.Context) {
	defer close(t.done)
	tm := time.NewTimer(t.every)
	defer tm.Stop()
	for {
		start := time.Now()
		if !t.sample(ctx) {
			return
		}
		tm.Reset(t.nextSample() - time.Since(start))
		select {
		case <-ctx.Done():
			return
		case <-tm.C:
		}
	}
}

// MaxSampleEvery bounds how far sampling slows down for traffic that pauses long.
const MaxSampleEvery = time.Second

// nextSample is the time to the next sample (see sampleInterval).
func (t *Traffic) nextSample() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return sampleInterval(t.every, t.st.hist, t.st.knows)
}

// sampleInterval is every, or, for a meter that knows when the traffic last moved, a tenth of
// the window its pauses call for (GapFactor × the longest pause) when that is longer, at most
// MaxSampleEvery. Fifty pods draining at once each sampled every 100 ms (a socket dump each)
// through windows of 12–17 s. A tenth of the window ends the quiet wait at
// most 10% late, and cannot lengthen it: with the meter's own time of the last move, a pause is
// measured as at most two intervals, below the longest pause already seen. A meter that does
// not know (new connections from /proc) dates moves by the samples, so it keeps every.
func sampleInterval(every time.Duration, h History, knows bool) time.Duration {
	if !knows {
		return every
	}
	return max(every, min(GapFactor*h.LongestGap/10, MaxSampleEvery))
}

// sample takes one sample; false when the meter failed, which ends the sampling.
func (t *Traffic) sample(ctx context.Context) bool {
	n, err := t.meter.Activity(ctx)
	now := time.Now()
	var last time.Time
	if lm, ok := t.meter.(lastMover); ok && err == nil {
		last = lm.LastMoved()
	}
	open, openKnown := 0, false
	if cc, ok := t.meter.(connCounter); ok && err == nil {
		open, openKnown = cc.OpenConns()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return false // stopping: not the meter's fault
		}
		t.st.err = err
		t.wake(now)
		return false
	}
	s := &t.st
	switch {
	case !s.sampled:
		// The meter's own last move, from before the helper started, begins the history.
		if !last.IsZero() && !last.After(now) {
			s.hist, s.knows = s.hist.Moved(last), true
		}
	case n != s.value:
		// A move between the previous sample and this one; the meter may know exactly when.
		at := now
		if last.After(s.at) && !last.After(now) {
			at = last
		}
		s.hist = s.hist.Moved(at)
		s.knows = s.knows || !last.IsZero()
	}
	s.sampled, s.value, s.at = true, n, now
	s.open, s.openKnown = open, openKnown
	t.wake(now)
	return true
}

// wake releases every waiter whose condition now holds; the caller holds the lock.
func (t *Traffic) wake(now time.Time) {
	keep := t.waiters[:0]
	for _, w := range t.waiters {
		if w.ready(now, t.st) {
			close(w.ch)
		} else {
			keep = append(keep, w)
		}
	}
	t.waiters = keep
}

// await blocks until ready holds after a sample (or at once), or ctx ends.
func (t *Traffic) await(ctx context.Context, ready func(now time.Time, s trafficState) bool) error {
	w := &waiter{ready: ready, ch: make(chan struct{})}
	t.mu.Lock()
	if ready(time.Now(), t.st) {
		t.mu.Unlock()
		return nil
	}
	t.waiters = append(t.waiters, w)
	t.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		for i, x := range t.waiters {
			if x == w {
				t.waiters = append(t.waiters[:i], t.waiters[i+1:]...)
				break
			}
		}
		t.mu.Unlock()
		return ctx.Err()
	}
}

// AwaitQuiet returns once the traffic has not moved for the quiet window ChooseQuiet picks
// (floor at least, ceiling at most if set), checking at every sample; a meter error ends the wait with that error.
// The window counts from the last move, but not from before this call unless the meter knows
// when it last moved (the app's last request, a socket's last data): a meter that sees only
// new connections saw nothing of the traffic on connections kept alive. The choice is the
// window of the last check.
func (t *Traffic) AwaitQuiet(ctx context.Context, floor, ceiling time.Duration) (QuietChoice, error) {
	start := time.Now()
	deadline, _ := ctx.Deadline()
	var choice QuietChoice
	var err error
	waitErr := t.await(ctx, func(now time.Time, s trafficState) bool {
		if s.err != nil {
			err = s.err
			return true
		}
		if !s.sampled {
			return false
		}
		since := start
		if s.knows || s.hist.Last.After(start) {
			since = s.hist.Last
		}
		choice = ChooseQuiet(floor, ceiling, s.hist, since, deadline)
		return now.Sub(since) >= choice.Window
	})
	if err != nil {
		return choice, err
	}
	return choice, waitErr
}

// AwaitClosed returns once no inbound connection on the serving ports is open, checking at
// every sample, or when ctx ends; n is how many were open at the last sample (ok false: the
// meter does not count them).
func (t *Traffic) AwaitClosed(ctx context.Context) (n int, ok bool, err error) {
	err = t.await(ctx, func(_ time.Time, s trafficState) bool {
		n, ok = s.open, s.openKnown && s.err == nil
		return s.err != nil || (s.sampled && (!s.openKnown || s.open == 0))
	})
	return n, ok, err
}

// Open is how many inbound connections on the serving ports were open at the latest sample; ok
// is false when the meter does not count them.
func (t *Traffic) Open() (n int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.open, t.st.openKnown && t.st.err == nil
}

// History is what the samples so far saw of the traffic.
func (t *Traffic) History() History {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st.hist
}

// AwaitQuiet samples m every interval from now and returns once it has not moved for the quiet
// window (quiet at least; see Traffic.AwaitQuiet).
func AwaitQuiet(ctx context.Context, m Meter, quiet, every time.Duration) error {
	t := Watch(ctx, m, every)
	defer t.Stop(time.Time{})
	_, err := t.AwaitQuiet(ctx, quiet, 0)
	return err
}
