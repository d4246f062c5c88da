package endpoints

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"github.com/lastcall-dev/lastcall/registry"
)

// DataplaneCondition is the pod condition lastcall-controller sets on a draining pod from the
// answers of the lastcall-node agents: whether every node's dataplane stopped sending the pod
// new connections. The helper ends its EndpointSlice wait on it instead of on --settle.
const DataplaneCondition corev1.PodConditionType = "lastcall.dev/dataplane-drained"

// Reasons of DataplaneCondition.
const (
	// ReasonWaiting (status False): some nodes still route new connections to the pod.
	ReasonWaiting = "Waiting"
	// ReasonAllNodesStopped (status True): every node confirmed from its ruleset.
	ReasonAllNodesStopped = "AllNodesStopped"
	// ReasonLastBackend (status True): nodes still route to the pod only as the last
	// (serving-terminating) backend of its Services; waiting longer would change nothing.
	ReasonLastBackend = "LastBackend"
	// ReasonNodesUnconfirmed (status Unknown): every node with an agent confirmed, the others
	// (no agent, NotReady, not answering) are named in the message; the helper waits --settle
	// for them.
	ReasonNodesUnconfirmed = "NodesUnconfirmed"
)

// Pods is the little of the Kubernetes API the dataplane wait needs: the helper's own pod.
type Pods interface {
	Get(ctx context.Context, namespace, name string) (*corev1.Pod, error)
	Watch(ctx context.Context, namespace, name, resourceVersion string) (watch.Interface, error)
}

// awaitDataplane follows the pod's DataplaneCondition once its EndpointSlices no longer list it
// as ready. Without a condition after --settle (no lastcall-node, no controller) it ends as the
// plain settle would; NodesUnconfirmed adds one --settle for the unconfirmed nodes. Errors of
// the pod API fall back to the settle: the wait never needs more than the budget (ctx).
func (r *Registry) awaitDataplane(ctx context.Context, in registry.Instance) error {
	start := time.Now()
	timer := time.NewTimer(r.cfg.Settle)
	defer timer.Stop()
	settled := timer.C // nil once fired: from then on only the budget (ctx) bounds the wait
	fallback := func(why string, err error) error {
		r.log.WarnContext(ctx, "no dataplane confirmation: waiting --settle", "why", why, "err", err, "settle", r.cfg.Settle)
		if settled == nil {
			return nil
		}
		select {
		case <-settled:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	pod, err := r.cfg.Pods.Get(ctx, in.Namespace, in.Pod)
	if err != nil {
		return fallback("cannot read the pod", err)
	}
	for {
		c := podCondition(pod, DataplaneCondition)
		switch dataplaneDecision(c) {
		case dataplaneDone:
			r.log.InfoContext(ctx, "dataplane confirmed", "reason", c.Reason, "message", c.Message, "waited", time.Since(start).Round(time.Millisecond))
			return nil
		case dataplaneUnconfirmed:
			r.log.WarnContext(ctx, "dataplane confirmation incomplete: waiting --settle for the other nodes", "message", c.Message, "settle", r.cfg.Settle)
			return r.settle(ctx)
		}
		w, err := r.cfg.Pods.Watch(ctx, in.Namespace, in.Pod, pod.ResourceVersion)
		if err != nil {
			return fallback("cannot watch the pod", err)
		}
		next, fired, err := nextPod(ctx, w, settled, pod)
		w.Stop()
		if err != nil {
			return err
		}
		if fired {
			if c == nil {
				r.log.InfoContext(ctx, "no dataplane condition on the pod (lastcall-node not installed?): waited --settle", "settle", r.cfg.Settle)
				return nil
			}
			settled = nil // an agent answers: wait for it, within the budget
		}
		pod = next
	}
}

// nextPod returns the pod's next state from w, or the same pod when the watch ended (the caller
// watches again from its resourceVersion) or settled fired (fired).
func nextPod(ctx context.Context, w watch.Interface, settled <-chan time.Time, pod *corev1.Pod) (next *corev1.Pod, fired bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-settled:
			return pod, true, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return pod, false, nil
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if p, isPod := ev.Object.(*corev1.Pod); isPod {
					return p, false, nil
				}
			case watch.Deleted:
				return nil, false, fmt.Errorf("endpoints: pod %s/%s deleted while waiting for its dataplane", pod.Namespace, pod.Name)
			case watch.Error:
				return pod, false, nil
			}
		}
	}
}

type dataplaneState int

const (
	dataplaneWaiting dataplaneState = iota
	dataplaneDone
	dataplaneUnconfirmed
)

// dataplaneDecision reads the pod's DataplaneCondition: absent or False is still waiting.
func dataplaneDecision(c *corev1.PodCondition) dataplaneState {
	switch {
	case c == nil:
		return dataplaneWaiting
	case c.Status == corev1.ConditionTrue:
		return dataplaneDone
	case c.Status == corev1.ConditionUnknown && c.Reason == ReasonNodesUnconfirmed:
		return dataplaneUnconfirmed
	default:
		return dataplaneWaiting
	}
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

var podResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// DynamicPods implements Pods with client-go's dynamic client (see Dynamic for why).
type DynamicPods struct{ Client dynamic.Interface }

// Get implements Pods.
func (d DynamicPods) Get(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	u, err := d.Client.Resource(podResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return podFrom(u)
}

// Watch implements Pods: the one pod, by field selector (RBAC: watch on pods).
func (d DynamicPods) Watch(ctx context.Context, ns, name, rv string) (watch.Interface, error) {
	w, err := d.Client.Resource(podResource).Namespace(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: rv,
	})
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Error {
			p, err := podFrom(u)
			if err != nil {
				return watch.Event{Type: watch.Error, Object: &metav1.Status{Message: err.Error()}}, true
			}
			ev.Object = p
		}
		return ev, true
	}), nil
}

func podFrom(u *unstructured.Unstructured) (*corev1.Pod, error) {
	p := &corev1.Pod{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, p); err != nil {
		return nil, fmt.Errorf("decode pod %s: %w", u.GetName(), err)
	}
	return p, nil
}
