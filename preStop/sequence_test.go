package prestop

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

// The sequence's tests run in synctest bubbles: time is the bubble's fake clock, which moves only
// when every goroutine waits, so the durations they assert are exact and take no wall time.

var pod = registry.Instance{Namespace: "shop", Pod: "web-1", UID: "u-1", IP: "10.0.0.7"}

// deaf ignores its context: Deregister blocks until the test ends.
type deaf struct{ release chan struct{} }

func (d deaf) Name() string { return "deaf" }
func (d deaf) Deregister(context.Context, registry.Instance) (registry.Receipt, error) {
	<-d.release
	return registry.Receipt{}, nil
}
func (d deaf) AwaitPropagated(context.Context, registry.Instance, registry.Receipt) error { return nil }
func (d deaf) Visible(context.Context, registry.Instance) (bool, error)                   { return false, nil }

// orderLog records which calls happened in which order.
type orderLog struct {
	mu    sync.Mutex
	calls []string
}

func (o *orderLog) add(s string) { o.mu.Lock(); o.calls = append(o.calls, s); o.mu.Unlock() }

type recordingApp struct {
	log *orderLog
	err error
}

func (a recordingApp) Drain(context.Context) (AppStatus, error) {
	a.log.add("app-drain")
	return AppStatus{State: "draining"}, a.err
}

type recordingRegistry struct {
	registry.Registry
	log *orderLog
}

func (r recordingRegistry) Deregister(ctx context.Context, in registry.Instance) (registry.Receipt, error) {
	r.log.add("deregister")
	return r.Registry.Deregister(ctx, in)
}

// meter moves for the first `moving` samples, then stays still; or fails.
type meter struct {
	calls  atomic.Int64
	moving int64
	err    error
}

func (m *meter) Activity(context.Context) (uint64, error) {
	n := m.calls.Add(1)
	if m.err != nil {
		return 0, m.err
	}
	return uint64(min(n, m.moving)), nil
}

func registered(name string, b memory.Behaviour) *memory.Registry {
	r := memory.New(name, b)
	r.Register(pod)
	return r
}

func killIn(d time.Duration) func(context.Context) (*Deletion, error) {
	return func(context.Context) (*Deletion, error) { return &Deletion{KillAt: time.Now().Add(d)}, nil }
}

func TestRunOutcomes(t *testing.T) {
	timing := Timing{Reserve: 0, MaxWait: 400 * time.Millisecond, MinWait: 0, Quiet: 30 * time.Millisecond, Sample: 5 * time.Millisecond}
	tests := []struct {
		name       string
		regs       func(t *testing.T) []registry.Registry
		killAt     func(context.Context) (*Deletion, error)
		wantBudget time.Duration
		wantSource string
		want       []string // outcome per registry
		fellBack   bool
		elapsed    time.Duration // exactly: the run is neither cut short nor late
	}{
		{
			name: "both confirm",
			regs: func(*testing.T) []registry.Registry {
				return []registry.Registry{registered("a", memory.Immediate), registered("b", memory.Immediate)}
			},
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed, Confirmed}, elapsed: timing.Quiet,
		},
		{
			name: "one hangs until the budget ends",
			regs: func(*testing.T) []registry.Registry {
				return []registry.Registry{registered("a", memory.Immediate), registered("b", memory.Hang)}
			},
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed, TimedOut}, elapsed: timing.MaxWait,
		},
		{
			name: "one ignores its context",
			regs: func(t *testing.T) []registry.Registry {
				release := make(chan struct{})
				t.Cleanup(func() { close(release) })
				return []registry.Registry{registered("a", memory.Immediate), deaf{release}}
			},
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed, TimedOut}, elapsed: timing.MaxWait,
		},
		{
			name: "one errors: fallback wait",
			regs: func(*testing.T) []registry.Registry {
				return []registry.Registry{registered("a", memory.Immediate), registered("b", memory.Fail)}
			},
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed, Failed}, fellBack: true, elapsed: timing.MaxWait,
		},
		{
			name:       "budget from deletionTimestamp",
			regs:       func(*testing.T) []registry.Registry { return []registry.Registry{registered("a", memory.Hang)} },
			killAt:     killIn(250 * time.Millisecond),
			wantBudget: 250 * time.Millisecond, wantSource: FromDeletion,
			want: []string{TimedOut}, elapsed: 250 * time.Millisecond,
		},
		{
			name:       "deletionTimestamp already past: return at once",
			regs:       func(*testing.T) []registry.Registry { return []registry.Registry{registered("a", memory.Hang)} },
			killAt:     killIn(-time.Second),
			wantBudget: 0, wantSource: FromDeletion,
			want: []string{TimedOut},
		},
		{
			name:       "API error: budget from max-wait",
			regs:       func(*testing.T) []registry.Registry { return []registry.Registry{registered("a", memory.Immediate)} },
			killAt:     func(context.Context) (*Deletion, error) { return nil, errors.New("connection refused") },
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed}, elapsed: timing.Quiet,
		},
		{
			name: "API hangs: budget from max-wait after a bounded read",
			regs: func(*testing.T) []registry.Registry { return []registry.Registry{registered("a", memory.Immediate)} },
			killAt: func(ctx context.Context) (*Deletion, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			},
			// The budget counts from the start, so the bounded read (max-wait/4) is part of it.
			wantBudget: timing.MaxWait, wantSource: FromMaxWait,
			want: []string{Confirmed}, elapsed: timing.MaxWait/4 + timing.Quiet,
		},
		{
			name:       "no registries",
			regs:       func(*testing.T) []registry.Registry { return nil },
			wantBudget: timing.MaxWait, wantSource: FromMaxWait, elapsed: timing.Quiet,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				regs := tt.regs(t)
				start := time.Now()
				res := Run(context.Background(), timing, pod, Deps{Registries: regs, Deletion: tt.killAt, Meter: &meter{moving: 1}})
				elapsed := time.Since(start)
				if res.BudgetSource != tt.wantSource || res.Budget != tt.wantBudget {
					t.Errorf("budget = %s from %s, want %s from %s", res.Budget, res.BudgetSource, tt.wantBudget, tt.wantSource)
				}
				if elapsed != tt.elapsed {
					t.Errorf("returned after %s, want %s (budget %s)", elapsed, tt.elapsed, res.Budget)
				}
				if len(res.Registries) != len(tt.want) {
					t.Fatalf("%d registry results, want %d", len(res.Registries), len(tt.want))
				}
				for i, w := range tt.want {
					if res.Registries[i].Outcome != w {
						t.Errorf("registry %s: %s (%v), want %s", res.Registries[i].Name, res.Registries[i].Outcome, res.Registries[i].Err, w)
					}
				}
				if res.FellBack != tt.fellBack {
					t.Errorf("FellBack = %v, want %v", res.FellBack, tt.fellBack)
				}
			})
		})
	}
}

func TestRunDrainsAppBeforeDeregistering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var order orderLog
		reg := recordingRegistry{Registry: registered("a", memory.Immediate), log: &order}
		res := Run(context.Background(), Timing{MaxWait: time.Second}, pod, Deps{
			Registries: []registry.Registry{reg}, App: recordingApp{log: &order},
		})
		if got := strings.Join(order.calls, ","); got != "app-drain,deregister" {
			t.Errorf("calls = %s, want app-drain,deregister", got)
		}
		if res.Registries[0].Outcome != Confirmed || res.Registries[0].Removed != 1 {
			t.Errorf("result = %+v", res.Registries[0])
		}
	})
}

func TestRunAppDrainFailureDoesNotStopTheDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var order orderLog
		reg := registered("a", memory.Immediate)
		res := Run(context.Background(), Timing{MaxWait: time.Second}, pod, Deps{
			Registries: []registry.Registry{reg}, App: recordingApp{log: &order, err: errors.New("refused")},
		})
		if reg.Deregistrations() != 1 || res.Registries[0].Outcome != Confirmed {
			t.Errorf("deregistrations = %d, outcome %s", reg.Deregistrations(), res.Registries[0].Outcome)
		}
	})
}

func TestRunWaitsForQuietTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &meter{moving: 8} // traffic for the first 8 samples
		timing := Timing{MaxWait: 5 * time.Second, Quiet: 40 * time.Millisecond, Sample: 5 * time.Millisecond}
		start := time.Now()
		res := Run(context.Background(), timing, pod, Deps{Meter: m})
		if !res.Quiet {
			t.Fatal("quiet not reached")
		}
		// The quiet period starts at the last change (the 8th sample, 7 intervals in), not before.
		if el, want := time.Since(start), 7*timing.Sample+timing.Quiet; el != want {
			t.Errorf("returned after %s, want %s: quiet measured from the last change", el, want)
		}
	})
}

func TestRunMeterFailureFallsBackToQuietWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		timing := Timing{MaxWait: 5 * time.Second, Quiet: 150 * time.Millisecond}
		start := time.Now()
		res := Run(context.Background(), timing, pod, Deps{Meter: &meter{err: errors.New("no /proc")}})
		if res.Quiet {
			t.Error("quiet reported without a working meter")
		}
		if el := time.Since(start); el != timing.Quiet {
			t.Errorf("returned after %s, want the plain quiet wait of %s", el, timing.Quiet)
		}
	})
}

func TestRunMinWaitFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		timing := Timing{MaxWait: 5 * time.Second, MinWait: 200 * time.Millisecond}
		start := time.Now()
		Run(context.Background(), timing, pod, Deps{Registries: []registry.Registry{registered("a", memory.Immediate)}})
		if el := time.Since(start); el != timing.MinWait {
			t.Errorf("returned after %s, want --min-wait %s", el, timing.MinWait)
		}
	})
}

func TestRunMinWaitNeverExceedsBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		timing := Timing{MaxWait: 150 * time.Millisecond, MinWait: 10 * time.Second}
		start := time.Now()
		Run(context.Background(), timing, pod, Deps{})
		if el := time.Since(start); el != timing.MaxWait {
			t.Errorf("returned after %s, want the budget %s", el, timing.MaxWait)
		}
	})
}

func TestRunLogsEveryStepAndASummary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		log := slog.New(slog.NewJSONHandler(&buf, nil))
		Run(context.Background(), Timing{MaxWait: time.Second, Quiet: 10 * time.Millisecond, Sample: 2 * time.Millisecond}, pod, Deps{
			Registries: []registry.Registry{registered("a", memory.Immediate)}, App: recordingApp{log: &orderLog{}},
			Meter: &meter{moving: 1}, Log: log,
		})
		out := buf.String()
		for _, s := range []string{`"step":"budget"`, `"step":"app-drain"`, `"step":"deregister"`, `"step":"propagate"`, `"step":"quiesce"`, `"msg":"drain done"`, `"a":"confirmed"`, `"version":"1"`} {
			if !strings.Contains(out, s) {
				t.Errorf("log lacks %s:\n%s", s, out)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.Contains(line, `"step"`) && !strings.Contains(line, `"took"`) {
				t.Errorf("step line without duration: %s", line)
			}
		}
	})
}

// connMeter is still traffic over n open inbound connections that callers close closeAt after
// its first sample (never when closeAt < 0).
type connMeter struct {
	start   time.Time
	closeAt time.Duration
	n       int
}

func (m *connMeter) Activity(context.Context) (uint64, error) {
	if m.start.IsZero() {
		m.start = time.Now()
	}
	return 0, nil
}

func (m *connMeter) OpenConns() (int, bool) {
	if m.closeAt >= 0 && time.Since(m.start) >= m.closeAt {
		return 0, true
	}
	return m.n, true
}

// --wait-connections waits for callers to close their connections, within the budget, never
// past it; the summary says how many were open when the helper returned.
func TestRunWaitConnections(t *testing.T) {
	const quiet, sample = 30 * time.Millisecond, 5 * time.Millisecond
	tests := []struct {
		name     string
		timing   Timing
		killAt   func(context.Context) (*Deletion, error)
		meter    Meter
		elapsed  time.Duration
		wantOpen int
		known    bool
		logs     []string
	}{
		{
			name:   "callers close at 200 ms",
			timing: Timing{MaxWait: time.Second, Quiet: quiet, Sample: sample, WaitConnections: true},
			meter:  &connMeter{n: 2, closeAt: 200 * time.Millisecond}, elapsed: 200 * time.Millisecond, known: true,
			logs: []string{`"step":"wait-connections"`, `"open":0`, `"openConnections":0`},
		},
		{
			name:   "callers never close: the budget ends the wait",
			timing: Timing{MaxWait: 400 * time.Millisecond, Quiet: quiet, Sample: sample, WaitConnections: true},
			meter:  &connMeter{n: 2, closeAt: -1}, elapsed: 400 * time.Millisecond, wantOpen: 2, known: true,
			logs: []string{`"msg":"callers still had connections open when the budget ended"`, `"open":2`, `"openConnections":2`},
		},
		{
			name:   "budget from deletionTimestamp, min-wait beyond it",
			timing: Timing{MaxWait: 5 * time.Second, MinWait: 10 * time.Second, Quiet: quiet, Sample: sample, WaitConnections: true},
			killAt: killIn(250 * time.Millisecond), meter: &connMeter{n: 1, closeAt: 3 * time.Second},
			elapsed: 250 * time.Millisecond, wantOpen: 1, known: true,
			logs: []string{`"open":1`, `"openConnections":1`},
		},
		{
			name:   "callers close after the budget",
			timing: Timing{MaxWait: 300 * time.Millisecond, Quiet: quiet, Sample: sample, WaitConnections: true},
			meter:  &connMeter{n: 3, closeAt: 350 * time.Millisecond}, elapsed: 300 * time.Millisecond, wantOpen: 3, known: true,
		},
		{
			name:   "off: returns after quiet, reporting what is open",
			timing: Timing{MaxWait: time.Second, Quiet: quiet, Sample: sample},
			meter:  &connMeter{n: 2, closeAt: -1}, elapsed: quiet, wantOpen: 2, known: true,
			logs: []string{`"openConnections":2`},
		},
		{
			name:   "a meter that does not count connections: no wait, said so",
			timing: Timing{MaxWait: time.Second, Quiet: quiet, Sample: sample, WaitConnections: true},
			meter:  &meter{moving: 1}, elapsed: quiet,
			logs: []string{`"msg":"wait-connections failed"`, "does not count connections"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var buf bytes.Buffer
				log := slog.New(slog.NewJSONHandler(&buf, nil))
				start := time.Now()
				res := Run(context.Background(), tt.timing, pod, Deps{Deletion: tt.killAt, Meter: tt.meter, Log: log})
				if el := time.Since(start); el != tt.elapsed {
					t.Errorf("returned after %s, want %s (budget %s)", el, tt.elapsed, res.Budget)
				}
				if el := time.Since(start); el > res.Budget {
					t.Errorf("returned after %s, past the budget %s", el, res.Budget)
				}
				if res.OpenConnections != tt.wantOpen || res.OpenKnown != tt.known {
					t.Errorf("open connections %d (known %v), want %d (%v)", res.OpenConnections, res.OpenKnown, tt.wantOpen, tt.known)
				}
				for _, s := range tt.logs {
					if !strings.Contains(buf.String(), s) {
						t.Errorf("log lacks %s:\n%s", s, buf.String())
					}
				}
				if !tt.known && strings.Contains(buf.String(), "openConnections") {
					t.Errorf("summary reports connections the meter does not count:\n%s", buf.String())
				}
			})
		})
	}
}

// The quiesce line says which window the traffic called for and why.
func TestRunLogsTheQuietWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		// Moves at 40, 80, 120 ms after the start: gaps of 40 ms call for 120 ms, more than
		// --quiet's 50 ms, which alone would have ended the wait at 130 ms.
		m := &scripted{moves: []time.Duration{40 * time.Millisecond, 80 * time.Millisecond, 120 * time.Millisecond}}
		start := time.Now()
		res := Run(context.Background(), Timing{MaxWait: 5 * time.Second, Quiet: 50 * time.Millisecond, Sample: 10 * time.Millisecond}, pod,
			Deps{Meter: m, Log: slog.New(slog.NewJSONHandler(&buf, nil))})
		if el := time.Since(start); el != 240*time.Millisecond || !res.Quiet {
			t.Errorf("returned after %s (quiet %v), want 240ms: 3 × the 40 ms gaps after the last move at 120 ms", el, res.Quiet)
		}
		for _, s := range []string{`"window":120000000`, `"why":"traffic"`, `"longestGap":40000000`, `"gaps":2`, `"beyondBudget":false`, `"quietWindow":120000000`} {
			if !strings.Contains(buf.String(), s) {
				t.Errorf("log lacks %s:\n%s", s, buf.String())
			}
		}
	})
}
