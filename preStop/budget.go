package prestop

import "time"

// Budget sources, as logged.
const (
	FromDeletion = "deletionTimestamp"
	// FromSqueeze: the grace period cannot hold both the drain budget and the reserve, and each
	// got its share.
	FromSqueeze = "deletionTimestamp, squeezed"
	FromMaxWait = "max-wait"
)

// Deletion is what the pod's metadata says about its end.
type Deletion struct {
	// KillAt is the deletionTimestamp: when the kubelet sends SIGKILL.
	KillAt time.Time
	// Grace is the deletionGracePeriodSeconds that set KillAt; zero when unknown.
	Grace time.Duration
}

// Budget is how long the helper may run from now. del is nil when unknown: no API access, or
// the pod is not being deleted (a container restart also runs preStop). The helper is done
// reserve before KillAt when the grace period holds maxWait + reserve, and longer grace periods
// are not capped by maxWait.
//
// When the grace period cannot hold both (shorter than the drain budget plus the reserve, which
// lastcall-controller warns about as GraceTooShort), it is split between the drain and the app
// in proportion to what each asked for: keeping the whole reserve would cut the drain to what is
// left of it, often less than the dataplane takes to stop routing (with a 12 s grace, 20 s budget
// and 10 s reserve: 2 s), while most apps stop in far less than their reserve; the split gives
// 8 s and 4 s. Whether to split is decided on the grace period, not on the time left: the helper
// starts a moment after the deletion, and a grace period that holds both exactly (the default
// 30 s = 20 s + 10 s) is not squeezed. Without the grace period the time left stands for it.
func Budget(now time.Time, del *Deletion, reserve, maxWait time.Duration) (time.Duration, string) {
	if del == nil {
		return maxWait, FromMaxWait
	}
	left := del.KillAt.Sub(now)
	grace := max(del.Grace, left)
	switch {
	case left <= 0:
		return 0, FromDeletion
	case grace >= maxWait+reserve || reserve <= 0:
		return max(left-reserve, 0), FromDeletion
	}
	appShare := time.Duration(float64(grace) * float64(reserve) / float64(maxWait+reserve))
	return max(left-appShare, 0).Round(time.Millisecond), FromSqueeze
}
