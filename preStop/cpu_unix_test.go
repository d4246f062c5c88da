//go:build unix

package prestop

import (
	"testing"
	"time"
)

// The reported CPU time is this process's and grows with the work it does.
func TestCPUUsedGrowsWithWork(t *testing.T) {
	before, ok := cpuUsed()
	if !ok {
		t.Fatal("cpuUsed: unknown on a unix system")
	}
	// Spin until the process has used 20 ms more CPU, or fail after 5 s of wall time.
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for time.Now().Before(deadline) {
		for i := range 100_000 {
			x += i
		}
		if now, _ := cpuUsed(); now-before >= 20*time.Millisecond {
			return
		}
	}
	t.Fatalf("5 s of spinning added less than 20 ms of CPU time (%d)", x)
}
