//go:build !unix

package prestop

import "time"

// cpuUsed is unknown here.
func cpuUsed() (time.Duration, bool) { return 0, false }
