package graceful

import "fmt"

// State is where a Server is in its life.
type State int32

// States, in the only order a Server moves through them.
const (
	Starting State = iota
	Running
	Draining
	Stopping
	Stopped
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Running:
		return "running"
	case Draining:
		return "draining"
	case Stopping:
		return "stopping"
	case Stopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// MarkerHeader marks a response to a request the server did not process because it is shutting
// down: any method may be retried on another endpoint.
const MarkerHeader = "Lastcall-Shutdown"

// DrainingHeader is on every response of a draining server: it still serves, but is about to go
// away. RetryTransport then leaves that endpoint out of later picks, which matters for callers
// whose endpoint list does not follow the registries.
const DrainingHeader = "Lastcall-Draining"

// Status is what GET /status and POST /drain on the admin endpoint answer; lastcall-prestop reads
// it for traffic quiescence. State is one of running, draining, stopping, stopped: the endpoint
// serves only once the server runs.
type Status struct {
	State         string `json:"state"`
	InFlight      int64  `json:"inFlight"`
	RequestsTotal uint64 `json:"requestsTotal"`
	// LastRequest is when the last accepted request started (RFC 3339 with nanoseconds, UTC),
	// empty before the first. Health probes are not requests.
	LastRequest string `json:"lastRequest"`
	// LateServed and LateRejected count the requests that arrived while stopping: served, as
	// they could finish before the in-flight deadline, or answered "not processed".
	LateServed   uint64 `json:"lateServed"`
	LateRejected uint64 `json:"lateRejected"`
}
