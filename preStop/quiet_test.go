package prestop

import (
	"context"
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
// end it at 20 ms.
func TestAwaitQuietLastMoveDoesNotHideNewTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := &lastMovedMeter{meter: meter{moving: 4}, at: time.Now().Add(-20 * time.Millisecond)}
		start := time.Now()
		if err := AwaitQuiet(context.Background(), m, 40*time.Millisecond, 5*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		// the meter moved at samples 2 to 4 (5, 10, 15 ms in): quiet from 15 ms on
		if el, want := time.Since(start), 15*time.Millisecond+40*time.Millisecond; el != want {
			t.Errorf("returned after %s, want %s", el, want)
		}
	})
}

// ProcMeter takes the app's lastRequest as its last move.
func TestProcMeterLastMovedFromApp(t *testing.T) {
	const at = "2026-11-30T04:58:34.917187309Z"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"state":"draining","inFlight":0,"requestsTotal":7,"lastRequest":"` + at + `"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	procTable(t, dir, 0, 10)
	m := &ProcMeter{Root: dir, Ports: []int{8080}, App: NewAppAdmin(srv.URL)}
	if _, err := m.Activity(context.Background()); err != nil {
		t.Fatal(err)
	}
	want, _ := time.Parse(time.RFC3339Nano, at)
	if got := m.LastMoved(); !got.Equal(want) {
		t.Errorf("LastMoved %s, want the app's lastRequest %s", got, want)
	}
}
