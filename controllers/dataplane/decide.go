// Package dataplane is lastcall-controller's fan-in of the lastcall-node agents: for each
// draining managed pod it asks every node's agent whether the node's dataplane still sends the
// pod new connections, and publishes one answer per pod, the pod condition
// lastcall.dev/dataplane-drained that lastcall-prestop waits on.
package dataplane

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Node is what is known of one node for one draining pod.
type Node struct {
	Name string
	// Missing says why the node cannot answer at all: "no agent", "NotReady", "agent not ready".
	Missing string
	// Verdict is the agent's latest verdict for the pod's IPs (the least drained of them):
	// NotRouted, LastBackend, Routed, or empty before the first answer.
	Verdict string
	// At is when the node stopped routing (NotRoutedAt) or was last seen as last backend.
	At time.Time
	// Err is the agent's latest failure, failing since ErrSince; cleared by an answer.
	Err      string
	ErrSince time.Time
}

// Input is everything one decision needs.
type Input struct {
	Nodes []Node
	Now   time.Time
	// NodeTimeout is how long an agent may fail before its node is reported unconfirmed.
	NodeTimeout time.Duration
	// NoReadyEndpoint is the slice cache's word that every Service port of the pod has no ready
	// endpoint left: the condition under which LastBackend ends the wait.
	NoReadyEndpoint bool
	// Since is when the slice cache first showed the pod not ready: the lag is measured from it.
	Since time.Time
}

// Decision is the condition to publish, and what the reconciler needs besides.
type Decision struct {
	Status  corev1.ConditionStatus
	Reason  string
	Message string
	// At is the condition's lastTransitionTime when True (the slowest node's NotRoutedAt).
	At time.Time
	// Slowest is the node that stopped routing last (True only).
	Slowest string
	// Waiting are the nodes still waited for (False only), sorted: a change is worth a write.
	Waiting []string
	// Recheck is when failing agents cross NodeTimeout; zero when nothing is due.
	Recheck time.Duration
}

// maxNamed bounds the node names in a message: a condition must stay small at 1,000 nodes.
const maxNamed = 5

// Decide turns the nodes' answers for one pod into the pod's condition. Nodes that cannot
// answer (no agent, NotReady, failing for NodeTimeout) never hold the drain: they make the
// answer Unknown once every other node confirmed, and the helper waits --settle for them.
func Decide(in Input) Decision {
	var confirmed, lastBackend, waiting []Node
	var unconfirmed []string
	var recheck time.Duration
	for _, n := range in.Nodes {
		switch {
		case n.Missing != "":
			unconfirmed = append(unconfirmed, n.Name+" ("+n.Missing+")")
		case n.Verdict == dataplane.NotRouted.String():
			confirmed = append(confirmed, n)
		case n.Verdict == dataplane.LastBackend.String() && in.NoReadyEndpoint:
			confirmed = append(confirmed, n)
			lastBackend = append(lastBackend, n)
		case n.Err != "" && in.Now.Sub(n.ErrSince) >= in.NodeTimeout:
			unconfirmed = append(unconfirmed, n.Name+" (error: "+n.Err+")")
		default:
			if n.Err != "" {
				due := n.ErrSince.Add(in.NodeTimeout).Sub(in.Now)
				if recheck == 0 || due < recheck {
					recheck = due
				}
			}
			waiting = append(waiting, n)
		}
	}
	total := len(in.Nodes)
	if len(waiting) > 0 {
		names := make([]string, len(waiting))
		for i, n := range waiting {
			names[i] = n.Name
		}
		slices.Sort(names)
		return Decision{Status: corev1.ConditionFalse, Reason: endpoints.ReasonWaiting, Waiting: names, Recheck: recheck,
			Message: fmt.Sprintf("%d of %d nodes stopped routing; waiting for %s", len(confirmed), total, nameList(names))}
	}
	slowest, at := slowestOf(confirmed)
	if len(unconfirmed) > 0 {
		slices.Sort(unconfirmed)
		when := "no node confirmed"
		if !at.IsZero() {
			when = fmt.Sprintf("%d of %d nodes confirmed at %s", len(confirmed), total, at.UTC().Format(time.RFC3339Nano))
		}
		return Decision{Status: corev1.ConditionUnknown, Reason: endpoints.ReasonNodesUnconfirmed, At: at, Slowest: slowest,
			Message: fmt.Sprintf("%s; no answer from %s", when, nameList(unconfirmed))}
	}
	if len(lastBackend) > 0 {
		return Decision{Status: corev1.ConditionTrue, Reason: endpoints.ReasonLastBackend, At: at, Slowest: slowest,
			Message: fmt.Sprintf("%d of %d nodes stopped routing or route to the pod only as its Services' last backend; no ready endpoint left", total, total)}
	}
	msg := fmt.Sprintf("%d of %d nodes stopped routing at %s", total, total, at.UTC().Format(time.RFC3339Nano))
	if slowest != "" {
		msg += fmt.Sprintf("; slowest %s (+%s)", slowest, lagOf(confirmed, in.Since, at))
	}
	return Decision{Status: corev1.ConditionTrue, Reason: endpoints.ReasonAllNodesStopped, At: at, Slowest: slowest, Message: msg}
}

// slowestOf is the node that confirmed last, and when.
func slowestOf(nodes []Node) (string, time.Time) {
	var name string
	var at time.Time
	for _, n := range nodes {
		if n.At.After(at) || name == "" {
			name, at = n.Name, n.At
		}
	}
	return name, at
}

// lagOf is how long after the EndpointSlice change (since) the slowest node confirmed; without
// since, how much later than the fastest node.
func lagOf(nodes []Node, since, slowest time.Time) time.Duration {
	if !since.IsZero() {
		return max(slowest.Sub(since), 0).Round(time.Millisecond)
	}
	first := slowest
	for _, n := range nodes {
		if !n.At.IsZero() && n.At.Before(first) {
			first = n.At
		}
	}
	return slowest.Sub(first).Round(time.Millisecond)
}

// nameList names up to maxNamed entries and counts the rest.
func nameList(names []string) string {
	if len(names) <= maxNamed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamed], ", "), len(names)-maxNamed)
}

// Confirmed reads back from a True condition when the slowest node stopped routing and which
// node it was: the message carries the time to the nanosecond, lastTransitionTime to the
// second only (the LastBackend message names no time: lastTransitionTime).
func Confirmed(c corev1.PodCondition) (time.Time, string) {
	at := c.LastTransitionTime.Time
	_, rest, ok := strings.Cut(c.Message, " nodes stopped routing at ")
	if !ok {
		return at, ""
	}
	stamp, rest, _ := strings.Cut(rest, "; slowest ")
	if t, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
		at = t
	}
	node, _, _ := strings.Cut(rest, " (+")
	return at, node
}
