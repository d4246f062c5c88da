package prestop

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"
	"time"
)

// lastMovedMeter is a meter that stands still and knows when it last moved.
type lastMovedMeter struct {
	meter
	at time.Time
}

func (m *lastMovedMeter) LastMoved() time.Time { return m.at }

func TestAwaitQuietCountsFromLastMove(t *testing.T) {
	const quiet, every = 40 * time.Millisecond, 5 * time.Millisecond
	tests := []struct {
		name      string
		lastMoved time.Duration // before the wait starts; < 0: in the future (another clock)
		known     bool
		want      time.Duration
	}{
		{name: "no last move known: a whole window", want: quiet},
		{name: "moved 30 ms ago: the window's rest, at the next sample", lastMoved: 30 * time.Millisecond, known: true, want: 10 * time.Millisecond},
		{name: "moved long ago: at once", lastMoved: time.Second, known: true, want: 0},
		{name: "a last move in the future is not trusted", lastMoved: -time.Second, known: true, want: quiet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := &lastMovedMeter{}
				if tt.known {
					m.at = time.Now().Add(-tt.lastMoved)
				}
				start := time.Now()
				if err := AwaitQuiet(context.Background(), m, quiet, every); err != nil {
					t.Fatal(err)
				}
				if el := time.Since(start); el != tt.want {
					t.Errorf("returned after %s, want %s", el, tt.want)
				}
			})
		})
	}
}

// A request after the wait started still restarts the window: alone, a move 20 ms ago would
// end it at 80 ms.
func TestAwaitQuietLastMoveDoesNotHideNewTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const quiet = 100 * time.Millisecond
		m := &lastMovedMeter{meter: meter{moving: 4}, at: time.Now().Add(-20 * time.Millisecond)}
		start := time.Now()
		if err := AwaitQuiet(context.Background(), m, quiet, 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// the meter moved at samples 2 to 4, about 15 ms in: quiet from then on (the longest
		// gap, about 25 ms, calls for 75 ms: under --quiet); with such a gap samples come up to
		// 7.5 ms apart, so the wait may end up to a tenth of the window late
		if el, want := time.Since(start), 15*time.Millisecond+quiet; el < want || el > want+quiet/10 {
			t.Errorf("returned after %s, want %s to %s", el, want, want+quiet/10)
		}
	})
}

// AppMeter takes the app's lastRequest as its last move.
func TestAppMeterLastMovedFromApp(t *testing.T) {
	const at = "2026-11-30T04:58:34.917187309Z"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"state":"draining","inFlight":0,"requestsTotal":7,"lastRequest":"` + at + `"}`))
	}))
	defer srv.Close()
	m := Sum{&ProcMeter{Root: t.TempDir(), Ports: []int{8080}}, &AppMeter{App: NewAppAdmin(srv.URL)}}
	n, err := m.Activity(context.Background())
	if err != nil || n != 7 {
		t.Fatalf("activity %d (%v), want the app's 7 requests", n, err)
	}
	want, _ := time.Parse(time.RFC3339Nano, at)
	if got := m.LastMoved(); !got.Equal(want) {
		t.Errorf("LastMoved %s, want the app's lastRequest %s", got, want)
	}
}

func TestHistoryMoved(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name  string
		moves []int // ms after t0
		want  History
	}{
		{name: "nothing", want: History{}},
		{name: "one move: no gap yet", moves: []int{100}, want: History{Last: at(100)}},
		{name: "steady", moves: []int{0, 100, 200, 300}, want: History{Last: at(300), LongestGap: 100 * time.Millisecond, Gaps: 3}},
		{name: "a pause", moves: []int{0, 100, 2100, 2200}, want: History{Last: at(2200), LongestGap: 2 * time.Second, Gaps: 3}},
		{name: "a move not after the last adds nothing", moves: []int{500, 200, 500}, want: History{Last: at(500)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h History
			for _, ms := range tt.moves {
				h = h.Moved(at(ms))
			}
			if h != tt.want {
				t.Errorf("got %+v, want %+v", h, tt.want)
			}
		})
	}
}

func TestChooseQuiet(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	const s = time.Second
	tests := []struct {
		name     string
		floor    time.Duration
		ceiling  time.Duration // --quiet-max
		gap      time.Duration // longest gap seen
		deadline time.Duration // after now; 0: none
		want     QuietChoice
	}{
		{name: "no traffic seen: --quiet", floor: s, want: QuietChoice{Window: s, Reason: QuietFloor}},
		{name: "busy traffic, short gaps: --quiet", floor: s, gap: 100 * time.Millisecond, want: QuietChoice{Window: s, Reason: QuietFloor}},
		{name: "gap of a third of --quiet: still --quiet", floor: 900 * time.Millisecond, gap: 300 * time.Millisecond, want: QuietChoice{Window: 900 * time.Millisecond, Reason: QuietFloor}},
		{name: "a request every 3 s: 9 s", floor: s, gap: 3 * s, want: QuietChoice{Window: 9 * s, Reason: QuietTraffic}},
		{name: "within the budget", floor: s, gap: 2 * s, deadline: 6 * s, want: QuietChoice{Window: 6 * s, Reason: QuietTraffic}},
		{name: "beyond the budget: the budget ends the wait", floor: s, gap: 3 * s, deadline: 5 * s, want: QuietChoice{Window: 9 * s, Reason: QuietTraffic, BeyondBudget: true}},
		{name: "even --quiet beyond the budget", floor: 10 * s, deadline: 5 * s, want: QuietChoice{Window: 10 * s, Reason: QuietFloor, BeyondBudget: true}},
		{name: "--quiet=0: off, whatever the traffic", gap: 3 * s, want: QuietChoice{Reason: QuietOff}},
		{name: "--quiet-max caps what the traffic calls for", floor: s, ceiling: 5 * s, gap: 15 * s, want: QuietChoice{Window: 5 * s, Reason: QuietCapped}},
		{name: "under --quiet-max: uncapped", floor: s, ceiling: 10 * s, gap: 3 * s, want: QuietChoice{Window: 9 * s, Reason: QuietTraffic}},
		{name: "--quiet-max below --quiet: capped at --quiet", floor: 2 * s, ceiling: s, gap: 3 * s, want: QuietChoice{Window: 2 * s, Reason: QuietCapped}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var deadline time.Time
			if tt.deadline > 0 {
				deadline = now.Add(tt.deadline)
			}
			h := History{Last: now, LongestGap: tt.gap, Gaps: 1}
			if got := ChooseQuiet(tt.floor, tt.ceiling, h, now, deadline); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// scripted moves at the given offsets from its first sample.
type scripted struct {
	start time.Time
	moves []time.Duration
}

func (m *scripted) Activity(context.Context) (uint64, error) {
	if m.start.IsZero() {
		m.start = time.Now()
	}
	var n uint64
	for _, d := range m.moves {
		if time.Since(m.start) >= d {
			n++
		}
	}
	return n, nil
}

// Traffic that pauses longer than --quiet is not taken for ended: the window grows to
// GapFactor × the longest pause seen since sampling began (the helper samples from its start,
// so the registry waits teach it the traffic's rhythm), and a pause shorter than that does not
// end the wait.
func TestAwaitQuietLearnsTheTrafficsPauses(t *testing.T) {
	const every, quiet = 10 * time.Millisecond, 100 * time.Millisecond
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name       string
		moves      []int // ms after the first sample
		await      int   // ms after the first sample: when the quiet wait begins
		want       time.Duration
		wantReason string
	}{
		{name: "steady fast traffic: --quiet after the last move", moves: []int{10, 20, 30, 40}, want: ms(40) + quiet, wantReason: QuietFloor},
		{name: "a move every 300 ms: 900 ms after the last", moves: []int{50, 350, 650, 950}, await: 700, want: ms(950 + 900), wantReason: QuietTraffic},
		// --quiet alone would have ended the wait at 800 ms, during the pause.
		{name: "a pause of 800 ms is not the end", moves: []int{50, 350, 650, 1450}, await: 700, want: ms(1450 + 3*800), wantReason: QuietTraffic},
		{name: "traffic that stopped before the wait: the window from the wait's start", moves: []int{50, 350}, await: 700, want: ms(700 + 900), wantReason: QuietTraffic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := &scripted{}
				for _, d := range tt.moves {
					m.moves = append(m.moves, ms(d))
				}
				start := time.Now()
				tr := Watch(context.Background(), m, every)
				defer tr.Stop(time.Time{})
				time.Sleep(ms(tt.await))
				c, err := tr.AwaitQuiet(context.Background(), quiet, 0)
				if err != nil {
					t.Fatal(err)
				}
				if el := time.Since(start); el != tt.want || c.Reason != tt.wantReason {
					t.Errorf("returned after %s (%s), want %s (%s)", el, c.Reason, tt.want, tt.wantReason)
				}
			})
		})
	}
}

func TestSampleInterval(t *testing.T) {
	every := 100 * time.Millisecond
	tests := []struct {
		name  string
		gap   time.Duration
		knows bool
		want  time.Duration
	}{
		{"no pause seen", 0, true, every},
		{"short pauses keep the base interval", 200 * time.Millisecond, true, every},
		{"a 2 s pause: a tenth of the 6 s window", 2 * time.Second, true, 600 * time.Millisecond},
		{"long pauses: at most MaxSampleEvery", 20 * time.Second, true, MaxSampleEvery},
		{"a meter that dates moves by its samples keeps the base interval", 2 * time.Second, false, every},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sampleInterval(every, History{LongestGap: tt.gap}, tt.knows); got != tt.want {
				t.Errorf("sampleInterval(%s, gap %s, knows %v) = %s, want %s", every, tt.gap, tt.knows, got, tt.want)
			}
		})
	}
}

// dated is a scripted meter that knows when it last moved, as sock_diag and the app do, and
// counts its samples.
type dated struct {
	scripted
	samples int
}

func (m *dated) Activity(ctx context.Context) (uint64, error) {
	m.samples++
	return m.scripted.Activity(ctx)
}

func (m *dated) LastMoved() time.Time {
	var last time.Time
	for _, d := range m.moves {
		if at := m.start.Add(d); !m.start.IsZero() && !at.After(time.Now()) {
			last = at
		}
	}
	return last
}

// Traffic that pauses a second at a time is sampled a tenth of its 3 s window apart, not every
// 10 ms, and the wait still ends on time: within a tenth of the window after it.
func TestSamplingSlowsForLongPauses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = 10 * time.Millisecond
		m := &dated{scripted: scripted{moves: []time.Duration{50 * time.Millisecond, 1050 * time.Millisecond, 2050 * time.Millisecond, 3050 * time.Millisecond}}}
		start := time.Now()
		tr := Watch(context.Background(), m, every)
		defer tr.Stop(time.Time{})
		time.Sleep(1500 * time.Millisecond) // the helper's registry waits: a pause seen
		c, err := tr.AwaitQuiet(context.Background(), 100*time.Millisecond, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := 3050*time.Millisecond + c.Window
		if el := time.Since(start); c.Window != 3*time.Second || el < want || el > want+c.Window/10 {
			t.Errorf("returned after %s with a %s window; want %s to %s with 3s", el, c.Window, want, want+c.Window/10)
		}
		// every 10 ms would be about 600 samples
		if m.samples > 150 {
			t.Errorf("%d samples; want the interval to grow with the pauses", m.samples)
		}
	})
}

// Throttled asks its meter at most once per Every and answers from that sample in between.
func TestThrottled(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	inner := &countingMeter{}
	th := &Throttled{Meter: inner, Every: time.Second, Now: func() time.Time { return now }}
	for i, step := range []struct {
		advance time.Duration
		want    uint64
	}{{0, 1}, {300 * time.Millisecond, 1}, {600 * time.Millisecond, 1}, {200 * time.Millisecond, 2}, {999 * time.Millisecond, 2}, {time.Millisecond, 3}} {
		now = now.Add(step.advance)
		got, err := th.Activity(context.Background())
		if err != nil || got != step.want {
			t.Errorf("sample %d: %d, %v; want %d", i, got, err, step.want)
		}
	}
	if inner.calls != 3 {
		t.Errorf("meter asked %d times, want 3", inner.calls)
	}
	inner.err = errors.New("gone")
	now = now.Add(time.Second)
	if _, err := th.Activity(context.Background()); err == nil {
		t.Error("a failing meter's error was not passed on")
	}
}

// countingMeter moves by one at each call.
type countingMeter struct {
	calls int
	err   error
}

func (m *countingMeter) Activity(context.Context) (uint64, error) {
	if m.err != nil {
		return 0, m.err
	}
	m.calls++
	return uint64(m.calls), nil
}
