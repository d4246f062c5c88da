package dataplane

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	stopped := func(name string, ms int) Node { return Node{Name: name, Verdict: "NotRouted", At: at(ms)} }
	tests := []struct {
		name    string
		in      Input
		status  corev1.ConditionStatus
		reason  string
		message string
		at      time.Time
		recheck time.Duration
	}{
		{
			name:   "every node stopped: the slowest sets the time",
			in:     Input{Nodes: []Node{stopped("a", 100), stopped("c", 900), stopped("b", 400)}, Since: at(0)},
			status: corev1.ConditionTrue, reason: endpoints.ReasonAllNodesStopped, at: at(900),
			message: "3 of 3 nodes stopped routing at 2026-11-30T03:00:00.9Z; slowest c (+900ms)",
		},
		{
			name:   "a node still routing keeps the drain waiting",
			in:     Input{Nodes: []Node{stopped("a", 100), {Name: "b", Verdict: "Routed"}, {Name: "c"}}},
			status: corev1.ConditionFalse, reason: endpoints.ReasonWaiting,
			message: "1 of 3 nodes stopped routing; waiting for b, c",
		},
		{
			name: "nodes without an agent or NotReady are named once the others confirmed",
			in: Input{Nodes: []Node{stopped("a", 100), {Name: "b", Missing: "no agent"}, {Name: "c", Missing: "NotReady"}},
				Now: at(1000), NodeTimeout: 5 * time.Second},
			status: corev1.ConditionUnknown, reason: endpoints.ReasonNodesUnconfirmed, at: at(100),
			message: "1 of 3 nodes confirmed at 2026-11-30T03:00:00.1Z; no answer from b (no agent), c (NotReady)",
		},
		{
			name: "a failing agent is waited for until the node timeout",
			in: Input{Nodes: []Node{stopped("a", 100), {Name: "b", Err: "connection refused", ErrSince: at(0)}},
				Now: at(2000), NodeTimeout: 5 * time.Second},
			status: corev1.ConditionFalse, reason: endpoints.ReasonWaiting, recheck: 3 * time.Second,
			message: "1 of 2 nodes stopped routing; waiting for b",
		},
		{
			name: "a failing agent past the node timeout is unconfirmed",
			in: Input{Nodes: []Node{stopped("a", 100), {Name: "b", Err: "connection refused", ErrSince: at(0)}},
				Now: at(5000), NodeTimeout: 5 * time.Second},
			status: corev1.ConditionUnknown, reason: endpoints.ReasonNodesUnconfirmed, at: at(100),
			message: "1 of 2 nodes confirmed at 2026-11-30T03:00:00.1Z; no answer from b (error: connection refused)",
		},
		{
			name:   "last backend ends the wait when no ready endpoint is left",
			in:     Input{Nodes: []Node{stopped("a", 100), {Name: "b", Verdict: "LastBackend", At: at(300)}}, NoReadyEndpoint: true},
			status: corev1.ConditionTrue, reason: endpoints.ReasonLastBackend, at: at(300),
			message: "2 of 2 nodes stopped routing or route to the pod only as its Services' last backend; no ready endpoint left",
		},
		{
			name:   "last backend with a ready endpoint in the cache is still routing",
			in:     Input{Nodes: []Node{stopped("a", 100), {Name: "b", Verdict: "LastBackend", At: at(300)}}},
			status: corev1.ConditionFalse, reason: endpoints.ReasonWaiting,
			message: "1 of 2 nodes stopped routing; waiting for b",
		},
		{
			name:   "no node at all is unconfirmed",
			in:     Input{Nodes: []Node{{Name: "a", Missing: "no agent"}}},
			status: corev1.ConditionUnknown, reason: endpoints.ReasonNodesUnconfirmed,
			message: "no node confirmed; no answer from a (no agent)",
		},
		{
			name:   "long node lists are cut",
			in:     Input{Nodes: []Node{{Name: "n1"}, {Name: "n2"}, {Name: "n3"}, {Name: "n4"}, {Name: "n5"}, {Name: "n6"}, {Name: "n7"}}},
			status: corev1.ConditionFalse, reason: endpoints.ReasonWaiting,
			message: "0 of 7 nodes stopped routing; waiting for n1, n2, n3, n4, n5 and 2 more",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.in)
			if d.Status != tt.status || d.Reason != tt.reason || d.Message != tt.message {
				t.Errorf("got %s/%s %q\nwant %s/%s %q", d.Status, d.Reason, d.Message, tt.status, tt.reason, tt.message)
			}
			if !d.At.Equal(tt.at) {
				t.Errorf("at = %v, want %v", d.At, tt.at)
			}
			if d.Recheck != tt.recheck {
				t.Errorf("recheck = %v, want %v", d.Recheck, tt.recheck)
			}
		})
	}
}

func TestConfirmedReadsDecideBack(t *testing.T) {
	at := time.Date(2026, 11, 30, 3, 0, 1, 234567000, time.UTC)
	d := Decide(Input{Nodes: []Node{{Name: "a", Verdict: "NotRouted", At: at.Add(-time.Second)}, {Name: "b", Verdict: "NotRouted", At: at}}})
	gotAt, gotNode := Confirmed(corev1.PodCondition{Status: d.Status, Message: d.Message})
	if !gotAt.Equal(at) || gotNode != "b" {
		t.Errorf("Confirmed(%q) = %s, %q; want %s, b", d.Message, gotAt, gotNode, at)
	}
	ltt := metav1.NewTime(at.Truncate(time.Second))
	if gotAt, gotNode := Confirmed(corev1.PodCondition{Message: "2 of 2 nodes stopped routing or route to the pod only as its Services' last backend", LastTransitionTime: ltt}); !gotAt.Equal(ltt.Time) || gotNode != "" {
		t.Errorf("LastBackend: %s, %q; want lastTransitionTime", gotAt, gotNode)
	}
}
