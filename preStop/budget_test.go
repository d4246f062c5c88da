package prestop

import (
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *Deletion { return &Deletion{KillAt: now.Add(d)} }
	// started is a helper that begins late into a deletion with the given grace period.
	started := func(late, grace time.Duration) *Deletion {
		return &Deletion{KillAt: now.Add(grace - late), Grace: grace}
	}
	tests := []struct {
		name       string
		del        *Deletion
		reserve    time.Duration
		maxWait    time.Duration
		want       time.Duration
		wantSource string
	}{
		{"grace 30s, reserve 10s", at(30 * time.Second), 10 * time.Second, 20 * time.Second, 20 * time.Second, FromDeletion},
		{"long grace is not capped by max-wait", at(300 * time.Second), 10 * time.Second, 20 * time.Second, 290 * time.Second, FromDeletion},
		{"grace holds budget and reserve exactly", at(30 * time.Second), 10 * time.Second, 20 * time.Second, 20 * time.Second, FromDeletion},
		{"squeezed: 12s for 20s + 10s, split 2:1", at(12 * time.Second), 10 * time.Second, 20 * time.Second, 8 * time.Second, FromSqueeze},
		{"squeezed below the reserve: the drain still gets its share", at(5 * time.Second), 10 * time.Second, 20 * time.Second, 3333 * time.Millisecond, FromSqueeze},
		{"squeezed with a large reserve", at(20 * time.Second), 30 * time.Second, 10 * time.Second, 5 * time.Second, FromSqueeze},
		{"default grace that holds both exactly, helper 400ms late: not squeezed", started(400*time.Millisecond, 30*time.Second), 10 * time.Second, 20 * time.Second, 19600 * time.Millisecond, FromDeletion},
		{"squeezed grace, helper 500ms late: the app keeps its share of the grace", started(500*time.Millisecond, 12*time.Second), 10 * time.Second, 20 * time.Second, 7500 * time.Millisecond, FromSqueeze},
		{"deletionTimestamp in the past", at(-3 * time.Second), 10 * time.Second, 20 * time.Second, 0, FromDeletion},
		{"deletionTimestamp now", at(0), 10 * time.Second, 20 * time.Second, 0, FromDeletion},
		{"no reserve", at(7 * time.Second), 0, 20 * time.Second, 7 * time.Second, FromDeletion},
		{"no API or not deleting", nil, 10 * time.Second, 20 * time.Second, 20 * time.Second, FromMaxWait},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, src := Budget(now, tt.del, tt.reserve, tt.maxWait)
			if got != tt.want || src != tt.wantSource {
				t.Errorf("Budget = %s (%s), want %s (%s)", got, src, tt.want, tt.wantSource)
			}
		})
	}
}
