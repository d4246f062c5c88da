// Package graceful gives a Go service its side of a zero-drop shutdown: a drain mode that keeps
// serving while telling callers to move (readiness fails, HTTP/1.1 "Connection: close", HTTP/2
// GOAWAY), in-flight accounting, a bounded stop that cancels handlers at its deadline and then
// stops components in reverse order, each within its own budget, and a retryable "shutting down"
// answer with a client transport that retries it elsewhere.
//
// lastcall-prestop drives the drain through the admin endpoint (POST /drain) and reads traffic
// from it (GET /status); without a preStop hook, the first SIGTERM starts the drain.
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

// Status is what GET /status on the admin endpoint answers.
type Status struct {
	State         string `json:"state"`
	InFlight      int64  `json:"inFlight"`
	RequestsTotal uint64 `json:"requestsTotal"`
	// LastRequest is the start of the last accepted request (RFC 3339), empty before the first.
	LastRequest string `json:"lastRequest"`
}
