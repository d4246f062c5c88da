//go:build unix

package prestop

import (
	"syscall"
	"time"
)

// cpuUsed is the CPU time this process has used so far (user + system): what the helper cost
// the node, reported so a drain of many pods at once shows the helpers' share.
func cpuUsed() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
