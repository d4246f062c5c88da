package prestop

import "time"

// Budget sources, as logged.
const (
	FromDeletion = "deletionTimestamp"
	FromMaxWait  = "max-wait"
)

// Budget is how long the helper may run from now. killAt is the pod's deletionTimestamp (when
// the kubelet sends SIGKILL), nil when unknown: no API access, or the pod is not being deleted
// (a container restart also runs preStop). The helper must be done reserve before killAt.
func Budget(now time.Time, killAt *time.Time, reserve, maxWait time.Duration) (time.Duration, string) {
	if killAt == nil {
		return maxWait, FromMaxWait
	}
	// Past deadlines and grace periods shorter than the reserve leave nothing: return at once
	// and leave the app whatever time there is.
	return max(killAt.Sub(now)-reserve, 0), FromDeletion
}
