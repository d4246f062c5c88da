package rollout

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
)

// Ready is offered by registries where being listed is not being sent traffic: EndpointSlices
// list a draining pod as not ready. The observer asks it instead of Visible; it answers from
// the manager's cache, and the observer follows EndpointSlice changes.
type Ready interface {
	Ready(ctx context.Context, in registry.Instance) (bool, error)
}

// Follower is offered by registries that answer for every draining pod of a service from one
// watch of that service (Consul's blocking queries): Follow runs until ctx ends and calls
// changed when a service's answer may have changed; Listed answers from the watch without I/O,
// with known false until the watch has an answer and while it fails.
type Follower interface {
	Follow(ctx context.Context, changed func(service string)) error
	Listed(in registry.Instance) (listed, known bool)
}

// MaxLook is the longest a draining pod waits to be looked at again: the interval for
// registries that can only be polled grows to it (see NextLook), and it is the safety net for
// those whose changes arrive as events.
const MaxLook = 5 * time.Second

// NextLook is how soon a pod that waits on a registry that can only be polled is looked at
// again, age after its deletion: every poll at first, then an eighth of the age, at most MaxLook,
// so the reads per pod grow with the logarithm of its drain, not with its length.
func NextLook(age, poll time.Duration) time.Duration {
	return min(max(poll, age/8), max(poll, MaxLook))
}

// Observer records deleting managed pods' drain timelines.
type Observer struct {
	Client client.Client
	// Registries by name; each pod is watched in those of its settings that are here.
	Registries map[string]registry.Registry
	// Adapters is the table the pod's annotations are read against.
	Adapters []registry.Adapter
	Recorder events.EventRecorder
	// Poll is how often a draining pod is looked at while a registry it waits on can only be
	// polled (neither Ready nor a Follower); see NextLook.
	Poll time.Duration
	Now  func() time.Time
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration

	mu sync.Mutex
	// gone holds the last state of pods deleted before their timeline was reported, until a
	// reconcile reports them.
	gone map[types.NamespacedName]*corev1.Pod
	// waiting holds, per followed registry and service, the pods whose stage there is open.
	waiting map[followKey]map[types.NamespacedName]bool
	queue   workqueue.TypedRateLimitingInterface[reconcile.Request]
	// reported holds pods whose PodDrained Event is out but whose annotation may not say so
	// (the patch failed, or lost to the pod's deletion): neither a retry nor the deletion
	// reports them again.
	reported map[types.UID]bool
}

type followKey struct{ registry, service string }

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch

// SetupWithManager watches deleting pods, EndpointSlices listing pods that are not ready, and the
// services of followed registries; a pod that disappears is reported by a reconcile.
func (o *Observer) SetupWithManager(mgr ctrl.Manager) error {
	for name, reg := range o.Registries {
		if f, ok := reg.(Follower); ok {
			if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
				return f.Follow(ctx, func(service string) { o.changed(followKey{name, service}) })
			})); err != nil {
				return err
			}
		}
	}
	deleting := predicate.NewPredicateFuncs(func(obj client.Object) bool { return obj.GetDeletionTimestamp() != nil })
	gone := handler.Funcs{DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		if pod, ok := e.Object.(*corev1.Pod); ok && o.deleted(pod) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(pod)})
		}
	}}
	queue := source.Func(func(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
		o.mu.Lock()
		o.queue = q
		o.mu.Unlock()
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).Named("rollout-observer").
		For(&corev1.Pod{}, builder.WithPredicates(deleting)).
		Watches(&corev1.Pod{}, gone).
		Watches(&discoveryv1.EndpointSlice{}, handler.EnqueueRequestsFromMapFunc(unreadyPods)).
		WatchesRawSource(queue).
		WithOptions(controller.Options{ReconciliationTimeout: o.Timeout}).
		Complete(o)
}

// deleted keeps the last state of a pod that disappeared before its timeline was reported, for
// a reconcile to report it (and retry until it can); it reports whether there is one to run.
// No I/O: nothing retries an informer's handler.
func (o *Observer) deleted(pod *corev1.Pod) bool {
	if pod.DeletionTimestamp == nil || !managed.IsManaged(pod) {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	reported := o.reported[pod.UID]
	delete(o.reported, pod.UID)
	if reported || Parse(pod).Reported {
		return false
	}
	if o.gone == nil {
		o.gone = map[types.NamespacedName]*corev1.Pod{}
	}
	o.gone[client.ObjectKeyFromObject(pod)] = pod
	return true
}

// unreadyPods maps an EndpointSlice to the pods it lists as not ready or terminating: draining
// pods, and pods still starting, which the reconcile drops at once.
func unreadyPods(_ context.Context, obj client.Object) []reconcile.Request {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, ep := range s.Endpoints {
		c := ep.Conditions
		if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && (c.Ready == nil || !*c.Ready || (c.Terminating != nil && *c.Terminating)) {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: s.Namespace, Name: ep.TargetRef.Name}})
		}
	}
	return out
}

// changed queues the pods waiting on a followed service.
func (o *Observer) changed(k followKey) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.queue == nil {
		return
	}
	for key := range o.waiting[k] {
		o.queue.Add(reconcile.Request{NamespacedName: key})
	}
}

// Reconcile advances the pod's timeline and keeps it on the pod; it reports pods that
// disappeared, retrying until the report is out.
func (o *Observer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	err := o.Client.Get(ctx, req.NamespacedName, pod)
	if err != nil && !apierrors.IsNotFound(err) {
		return ctrl.Result{}, err
	}
	exists := err == nil
	if err := o.finishGone(ctx, req.NamespacedName, pod, exists); err != nil {
		return ctrl.Result{}, err
	}
	if !exists || pod.DeletionTimestamp == nil || !managed.IsManaged(pod) {
		return ctrl.Result{}, nil
	}
	tl := Parse(pod)
	if tl.Reported {
		o.done(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	obs, polled := o.observe(ctx, pod)
	next := Advance(tl, pod, obs)
	if next.Complete() {
		if !o.wasReported(pod.UID) {
			if err := o.report(ctx, pod, next); err != nil {
				return ctrl.Result{}, err
			}
			o.setReported(pod.UID, true)
		}
		next.Reported = true
	}
	if !next.Equal(tl) {
		orig := pod.DeepCopy()
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[Annotation] = next.Encode()
		if err := o.Client.Patch(ctx, pod, client.MergeFrom(orig)); err != nil {
			// the pod keeps its mark in reported: its deletion, or this retry, reports it no more
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	if next.Reported {
		o.setReported(pod.UID, false) // the annotation says it now
		o.done(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	if polled {
		return ctrl.Result{RequeueAfter: NextLook(obs.Now.Sub(next.Deleted), o.Poll)}, nil
	}
	return ctrl.Result{RequeueAfter: MaxLook}, nil
}

// finishGone reports the deleted pod recorded under key, unless the pod found there (exists)
// is that very pod.
func (o *Observer) finishGone(ctx context.Context, key types.NamespacedName, current *corev1.Pod, exists bool) error {
	o.mu.Lock()
	pod := o.gone[key]
	o.mu.Unlock()
	if pod == nil || (exists && current.UID == pod.UID) {
		return nil
	}
	if o.wasReported(pod.UID) {
		// a reconcile reported it while it disappeared, before its deletion was seen
		o.setReported(pod.UID, false)
	} else if err := o.finish(ctx, pod); err != nil {
		return err
	}
	o.mu.Lock()
	if o.gone[key] == pod {
		delete(o.gone, key)
	}
	o.mu.Unlock()
	o.done(key)
	return nil
}

func (o *Observer) wasReported(uid types.UID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.reported[uid]
}

func (o *Observer) setReported(uid types.UID, reported bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !reported {
		delete(o.reported, uid)
		return
	}
	if o.reported == nil {
		o.reported = map[types.UID]bool{}
	}
	o.reported[uid] = true
}

// done forgets a pod whose timeline is reported.
func (o *Observer) done(key types.NamespacedName) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, pods := range o.waiting {
		delete(pods, key)
		if len(pods) == 0 {
			delete(o.waiting, k)
		}
	}
}

// observe asks the registries; an unanswered question counts as "still listed", so a stage is
// only ever recorded on evidence. polled tells whether an open stage waits on a registry that
// can only be polled.
func (o *Observer) observe(ctx context.Context, pod *corev1.Pod) (obs Observation, polled bool) {
	obs = Observation{Now: o.Now(), Listed: map[string]bool{}}
	s, err := managed.SettingsOf(pod.Annotations, o.Adapters)
	if err != nil {
		s, _ = managed.SettingsOf(nil, o.Adapters) // the registries every pod uses
	}
	key := client.ObjectKeyFromObject(pod)
	for _, name := range s.Registries {
		reg := o.Registries[name]
		if reg == nil {
			continue // not configured here: no stage to wait for
		}
		in := s.Instance(pod, name)
		var listed bool
		switch r := reg.(type) {
		case Follower:
			var known bool
			listed, known = r.Listed(in)
			listed = listed || !known
			o.wait(followKey{name, in.Service}, key, listed)
		case Ready:
			listed, err = r.Ready(ctx, in)
			listed = listed || err != nil
		default:
			listed, err = reg.Visible(ctx, in)
			listed = listed || err != nil
			polled = polled || listed
		}
		obs.Listed[name] = listed
	}
	obs.Dataplane = dataplaneStage(pod)
	return obs, polled
}

// wait records whether a pod still waits on a followed service.
func (o *Observer) wait(k followKey, pod types.NamespacedName, open bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.waiting == nil {
		o.waiting = map[followKey]map[types.NamespacedName]bool{}
	}
	switch {
	case open && o.waiting[k] == nil:
		o.waiting[k] = map[types.NamespacedName]bool{pod: true}
	case open:
		o.waiting[k][pod] = true
	default:
		delete(o.waiting[k], pod)
	}
}

// dataplaneStage reads the dataplane fan-in's condition: no stage without it (no agents), a
// stage not yet seen while it is not True.
func dataplaneStage(pod *corev1.Pod) *Stage {
	i := slices.IndexFunc(pod.Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == endpoints.DataplaneCondition })
	if i < 0 {
		return nil
	}
	st := &Stage{Registry: DataplaneStage}
	if c := pod.Status.Conditions[i]; c.Status == corev1.ConditionTrue {
		st.Out, st.Slowest = dataplane.Confirmed(c)
	}
	return st
}

// finish reports a pod that disappeared before its timeline was reported: its containers ended
// by then, so the deletion time bounds their termination.
func (o *Observer) finish(ctx context.Context, pod *corev1.Pod) error {
	tl := Parse(pod)
	now := o.Now()
	tl = Advance(tl, pod, Observation{Now: now})
	if tl.Terminated.IsZero() {
		tl.Terminated = now
	}
	return o.report(ctx, pod, tl)
}

func (o *Observer) report(ctx context.Context, pod *corev1.Pod, tl Timeline) error {
	workload, obj, cause, err := o.workload(ctx, pod)
	if err != nil {
		return err
	}
	metrics.DrainDuration.WithLabelValues(pod.Namespace, workload).Observe(tl.Terminated.Sub(tl.Deleted).Seconds())
	for _, s := range tl.Registries {
		if !s.Out.IsZero() {
			metrics.RegistrationLag.WithLabelValues(pod.Namespace, workload, s.Registry).Observe(s.Out.Sub(tl.Deleted).Seconds())
		}
	}
	if n, ok := tl.MaxOpen(); ok {
		metrics.PrestopOpenConnections.WithLabelValues(pod.Namespace, workload).Observe(float64(n))
	}
	kind := corev1.EventTypeNormal
	if tl.ExitCode != nil && *tl.ExitCode != 0 {
		kind = corev1.EventTypeWarning
	}
	if o.Recorder != nil {
		o.Recorder.Eventf(obj, pod, kind, "PodDrained", "Drain", "%s", tl.Summary(pod.Name, cause))
	}
	return nil
}

// workload finds the Deployment or StatefulSet the pod belongs to, for Events and metric labels,
// and why it is losing pods; the pod itself when there is none. Every workload is cached
// (slimmed), so one that owns this managed pod is found whether or not it is labelled: it is
// managed through its pods (managed.OwnsManagedPods).
func (o *Observer) workload(ctx context.Context, pod *corev1.Pod) (string, client.Object, string, error) {
	w, ok := managed.OwnerOf(pod)
	if !ok {
		if owner := metav1.GetControllerOf(pod); owner != nil {
			return owner.Name, pod, CauseOther, nil
		}
		return pod.Name, pod, CauseOther, nil
	}
	key := types.NamespacedName{Namespace: pod.Namespace, Name: w.Name}
	obj := w.Object()
	if err := o.Client.Get(ctx, key, obj); apierrors.IsNotFound(err) {
		return w.Name, pod, CauseOther, nil // deleted before its pod: the pod carries the Event
	} else if err != nil {
		return "", nil, "", fmt.Errorf("read the pod's %s %s: %w", w.Kind, key, err)
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return key.Name, obj, DeploymentCause(w), nil
	case *appsv1.StatefulSet:
		return key.Name, obj, StatefulSetCause(w), nil
	}
	return key.Name, obj, CauseOther, nil
}
