package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

// Options configure the fan-in; it runs only when Enabled.
type Options struct {
	Enabled bool
	// Port is the agents' API port on their node's IP (hostNetwork).
	Port int
	// Service and Namespace name the agents' headless Service (see agents).
	Service, Namespace string
	// NodeTimeout is how long a failing agent is waited for before its node is reported
	// unconfirmed, and how much longer than its timeout a long poll may take.
	NodeTimeout time.Duration
	// Dial connects to an agent's host:port; nil is a plain net.Dialer. Tests route node IPs
	// to agents on loopback, which EndpointSlices may not list.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Defaults of the options the chart does not set.
const (
	DefaultPort        = 9902
	DefaultService     = "lastcall-node"
	DefaultNamespace   = "lastcall-system"
	DefaultNodeTimeout = 5 * time.Second
	// minWrite spaces the Waiting condition's updates of one pod: the list of nodes still
	// waited for may change with every node's answer, the writes may not.
	minWrite = time.Second
)

// Reconciler publishes the dataplane-drained condition of draining managed pods.
type Reconciler struct {
	Client  client.Client
	Options Options
	Fanin   *Fanin
	Now     func() time.Time

	mu sync.Mutex
	// since is when each pod was first seen drained from its EndpointSlices; lastWrite when
	// its condition was last written.
	since, lastWrite map[types.NamespacedName]time.Time
}

// New makes the reconciler and its fan-in, calling agents over plain HTTP.
func New(c client.Client, opts Options) *Reconciler {
	r := &Reconciler{Client: c, Options: opts, Now: time.Now}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: opts.NodeTimeout}).DialContext
	}
	// One idle connection per agent: each node has one poll open at a time.
	hc := &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 1, IdleConnTimeout: 4 * opts.NodeTimeout}}
	r.Fanin = &Fanin{
		NewWaiter: func(addr string) Waiter { return &agent.Client{URL: "http://" + addr, HTTP: hc} },
		// A poll is answered when an IP is confirmed, else at NodeTimeout: an agent that
		// accepts the poll but never answers fails it at twice NodeTimeout, within a drain
		// budget, where a longer poll would hide it past the budget.
		WaitTimeout: opts.NodeTimeout, NodeTimeout: opts.NodeTimeout, Now: time.Now,
	}
	return r
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/status,verbs=patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// SetupWithManager runs the fan-in and reconciles deleting pods when their slices or their
// nodes' answers change.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	switch o := r.Options; {
	case o.Port < 1 || o.Port > 65535:
		return fmt.Errorf("dataplane: agent port %d: set --dataplane-agent-port to the agents' port, 1 to 65535", o.Port)
	case o.Service == "" || o.Namespace == "":
		return errors.New("dataplane: set --dataplane-agent-service and --dataplane-agent-namespace to the agents' headless Service")
	case o.NodeTimeout <= 0:
		return errors.New("dataplane: set --dataplane-node-timeout to a positive duration")
	}
	changed := make(chan event.GenericEvent, 1024)
	r.Fanin.Changed = func(p types.NamespacedName) {
		changed <- event.GenericEvent{Object: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}}
	}
	if err := mgr.Add(r.Fanin); err != nil {
		return fmt.Errorf("dataplane fan-in: %w", err)
	}
	deleting := predicate.NewPredicateFuncs(func(obj client.Object) bool { return obj.GetDeletionTimestamp() != nil })
	return ctrl.NewControllerManagedBy(mgr).Named("dataplane-fanin").
		For(&corev1.Pod{}, builder.WithPredicates(deleting)).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(r.slicePods)).
		WatchesRawSource(source.Channel(changed, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// slicePods maps a slice to the pods it lists; the agents' slice to every draining pod.
func (r *Reconciler) slicePods(_ context.Context, obj client.Object) []reconcile.Request {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	if s.Namespace == r.Options.Namespace && s.Labels[discoveryv1.LabelServiceName] == r.Options.Service {
		r.mu.Lock()
		for p := range r.since {
			out = append(out, reconcile.Request{NamespacedName: p})
		}
		r.mu.Unlock()
		return out
	}
	for _, p := range managed.ListedPods(s) {
		out = append(out, reconcile.Request{NamespacedName: p})
	}
	return out
}

// Reconcile asks the nodes about a deleting pod that its EndpointSlices list as not ready, and
// writes their answer on the pod.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	old := podCondition(pod)
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) || (old != nil && old.Status == corev1.ConditionTrue) {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	// Lists are read-only here: no deep copy of the cache for every answer of every node.
	var list discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &list, client.InNamespace(pod.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list EndpointSlices of %s: %w", pod.Namespace, err)
	}
	view := SlicesOf(pod, list.Items)
	if !view.Listed {
		return ctrl.Result{}, nil // not on the EndpointSlice path
	}
	if view.Ready {
		// Not drained yet (a slice change comes back here). Say at once that the agents speak
		// for this pod: lastcall-prestop takes a pod without the condition, --settle after its
		// slices changed, as one without agents, and would end its wait on --settle alone.
		if old == nil {
			_, err := r.write(ctx, pod, nil, Decision{Status: corev1.ConditionFalse, Reason: endpoints.ReasonWaiting,
				Message: "waiting for the EndpointSlices to show the pod not ready"}, r.Now())
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, nil
	}
	since := r.started(req.NamespacedName)
	agents, agentsNotReady, err := r.agents(ctx)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !r.Fanin.SetAgents(agents) {
		return ctrl.Result{RequeueAfter: 100 * time.Millisecond}, nil // the manager is still starting the fan-in
	}
	r.Fanin.Track(req.NamespacedName, view.Targets)
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("list nodes: %w", err)
	}
	now := r.Now()
	in := Input{Now: now, NodeTimeout: r.Options.NodeTimeout, NoReadyEndpoint: view.NoReadyEndpoint, Since: since,
		Nodes: NodesOf(nodes.Items, r.Fanin.Agents(view.IPs()), agentsNotReady)}
	d := Decide(in)
	wait, err := r.write(ctx, pod, old, d, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	if d.Status == corev1.ConditionTrue {
		if d.Reason == endpoints.ReasonAllNodesStopped { // a last backend's time says nothing of programming
			metrics.DataplaneLag.Observe(max(d.At.Sub(since), 0).Seconds())
		}
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	next := d.Recheck
	if wait > 0 && (next == 0 || wait < next) {
		next = wait
	}
	return ctrl.Result{RequeueAfter: next}, nil
}

// write patches the condition when it says something new; a Waiting update only once per
// minWrite. wait is when a held-back update is due.
func (r *Reconciler) write(ctx context.Context, pod *corev1.Pod, old *corev1.PodCondition, d Decision, now time.Time) (wait time.Duration, err error) {
	key := types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name}
	if old != nil && old.Status == d.Status && old.Reason == d.Reason && old.Message == d.Message {
		return 0, nil
	}
	if old != nil && old.Status == d.Status && d.Status == corev1.ConditionFalse {
		r.mu.Lock()
		last := r.lastWrite[key]
		r.mu.Unlock()
		if due := last.Add(minWrite).Sub(now); due > 0 {
			return due, nil
		}
	}
	orig := pod.DeepCopy()
	next := corev1.PodCondition{Type: endpoints.DataplaneCondition, Status: d.Status, Reason: d.Reason, Message: d.Message, LastTransitionTime: metav1.NewTime(now)}
	switch {
	case d.Status == corev1.ConditionTrue && !d.At.IsZero():
		next.LastTransitionTime = metav1.NewTime(d.At) // when the slowest node stopped routing
	case old != nil && old.Status == d.Status:
		next.LastTransitionTime = old.LastTransitionTime
	}
	if old != nil {
		*old = next
	} else {
		pod.Status.Conditions = append(pod.Status.Conditions, next)
	}
	if err := r.Client.Status().Patch(ctx, pod, client.StrategicMergeFrom(orig)); err != nil {
		if apierrors.IsNotFound(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("patch condition %s: %w", endpoints.DataplaneCondition, err)
	}
	r.mu.Lock()
	if r.lastWrite == nil {
		r.since, r.lastWrite = map[types.NamespacedName]time.Time{}, map[types.NamespacedName]time.Time{}
	}
	r.lastWrite[key] = now
	r.mu.Unlock()
	log.FromContext(ctx).Info("dataplane", "status", d.Status, "reason", d.Reason, "message", d.Message)
	return 0, nil
}

// agents reads the agents from their headless Service's EndpointSlices, which the manager
// already caches cluster-wide: no pod cache, watch or RBAC of its own. With hostNetwork each
// endpoint's address is its node's IP and NodeName its node; not-ready agents are named.
func (r *Reconciler) agents(ctx context.Context) (ready map[string]string, notReady map[string]bool, err error) {
	var list discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.Options.Namespace),
		client.MatchingLabels{discoveryv1.LabelServiceName: r.Options.Service}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, nil, fmt.Errorf("list the agents' EndpointSlices (Service %s/%s): %w", r.Options.Namespace, r.Options.Service, err)
	}
	ready, notReady = map[string]string{}, map[string]bool{}
	for _, s := range list.Items {
		for _, ep := range s.Endpoints {
			if ep.NodeName == nil || len(ep.Addresses) == 0 {
				continue
			}
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				notReady[*ep.NodeName] = true
				continue
			}
			ready[*ep.NodeName] = AgentAddr(ep.Addresses[0], r.Options.Port)
		}
	}
	for n := range ready {
		delete(notReady, n)
	}
	return ready, notReady, nil
}

func (r *Reconciler) started(key types.NamespacedName) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.since == nil {
		r.since, r.lastWrite = map[types.NamespacedName]time.Time{}, map[types.NamespacedName]time.Time{}
	}
	if t, ok := r.since[key]; ok {
		return t
	}
	t := r.Now()
	r.since[key] = t
	return t
}

func (r *Reconciler) forget(key types.NamespacedName) {
	r.Fanin.Forget(key)
	r.mu.Lock()
	delete(r.since, key)
	delete(r.lastWrite, key)
	r.mu.Unlock()
}

func podCondition(pod *corev1.Pod) *corev1.PodCondition {
	i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == endpoints.DataplaneCondition })
	if i < 0 {
		return nil
	}
	return &pod.Status.Conditions[i]
}
