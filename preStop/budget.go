package prestop

import "time"

// Budget sources, as logged.
const (
	FromDeletion = "deletionTimestamp"
	// FromSqueeze: the grace period left cannot hold both the drain budget and the reserve, and
	// each got its share.
	FromSqueeze = "deletionTimestamp, squeezed"
	FromMaxWait = "max-wait"
)

// Budget is how long the helper may run from now. killAt is the pod's deletionTimestamp (when
// the kubelet sends SIGKILL), nil when unknown: no API access, or the pod is not being deleted
// (a container restart also runs preStop). The helper is done reserve before killAt when the
// time left holds maxWait + reserve, and longer grace periods are not capped by maxWait.
//
// When the time left cannot hold both (a grace period shorter than the drain budget plus the
// reserve, which lastcall-controller warns about as GraceTooShort), it is split between the
// drain and the app in proportion to what each asked for: keeping the whole reserve would cut
// the drain to what is left of it, often less than the dataplane takes to stop routing (with a
// 12 s grace, 20 s budget and 10 s reserve: 2 s), while most apps stop in far less than their
// reserve; the split gives 8 s and 4 s.
func Budget(now time.Time, killAt *time.Time, reserve, maxWait time.Duration) (time.Duration, string) {
	if killAt == nil {
		return maxWait, FromMaxWait
	}
	left := killAt.Sub(now)
	switch {
	case left <= 0:
		return 0, FromDeletion
	case left >= maxWait+reserve || reserve <= 0:
		return max(left-reserve, 0), FromDeletion
	}
	share := float64(maxWait) / float64(maxWait+reserve)
	return time.Duration(float64(left) * share).Round(time.Millisecond), FromSqueeze
}
