package warnings

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/metrics"
)

// NotInjected is the Event reason, and the pod's entry in Annotation, for a pod the injection
// webhook should have injected and did not.
const NotInjected = "NotInjected"

// Uninjected reports the pods that the injection webhook should have injected and did not
// (managed.Uninjected): one Warning Event per pod, on its Deployment or StatefulSet (on the pod
// when it has neither), recorded in the pod's Annotation so a restart sends none twice, and the
// gauge lastcall_uninjected_pods per namespace while they run.
type Uninjected struct {
	Client client.Client
	// API reads an uninjected pod whole, once, for its owner: the cache keeps such pods slimmed.
	API      client.Reader
	Recorder events.EventRecorder
	// Excluded tells the namespaces the webhook never selects; none when nil.
	Excluded func(namespace string) bool
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration

	mu      sync.Mutex
	counted map[types.NamespacedName]bool
	perNS   map[string]int
	// labelled holds the namespaces labelled lastcall.dev/inject=true, as their events tell, so
	// that pod events are filtered without a read: where no namespace opts in, a pod without the
	// label is never reconciled, however many there are.
	labelled map[string]bool
}

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// SetupWithManager watches the pods that are uninjected, or were, and namespaces, whose inject
// label decides for the pods that have none.
func (u *Uninjected) SetupWithManager(mgr ctrl.Manager) error {
	pods := predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return u.uninjected(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return u.isCounted(e.Object) },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if u.isCounted(e.ObjectNew) {
				return inputs(e.ObjectOld) != inputs(e.ObjectNew)
			}
			return u.uninjected(e.ObjectNew)
		},
	}
	namespaces := handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			u.namespaceChanged(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			u.namespaceChanged(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, _ workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			u.mu.Lock()
			delete(u.labelled, e.Object.GetName())
			u.mu.Unlock()
		},
	}
	return ctrl.NewControllerManagedBy(mgr).Named("uninjected-pods").
		For(&corev1.Pod{}, builder.WithPredicates(pods)).
		Watches(&corev1.Namespace{}, namespaces).
		WithOptions(controller.Options{ReconciliationTimeout: u.Timeout}).Complete(u)
}

// uninjected answers managed.Uninjected with the namespaces as their events told.
func (u *Uninjected) uninjected(obj client.Object) bool {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return false
	}
	u.mu.Lock()
	labelled := u.labelled[pod.Namespace]
	u.mu.Unlock()
	return managed.Uninjected(pod, managed.Namespace{Labelled: labelled, Excluded: u.Excluded != nil && u.Excluded(pod.Namespace)})
}

func (u *Uninjected) isCounted(obj client.Object) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counted[client.ObjectKeyFromObject(obj)]
}

// podInputs is what decides whether a pod is uninjected, but for its namespace.
type podInputs struct {
	// ifLabelled: the pod is uninjected if its namespace is labelled.
	ifLabelled bool
	label      string
}

func inputs(obj client.Object) podInputs {
	pod, ok := obj.(*corev1.Pod)
	return podInputs{ok && managed.Uninjected(pod, managed.Namespace{Labelled: true}), obj.GetLabels()[managed.InjectLabel]}
}

// namespaceChanged records the namespace's inject label and, when it changed, queues the pods
// it may decide for (those that would be uninjected in a labelled namespace).
func (u *Uninjected) namespaceChanged(ctx context.Context, ns client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	labelled := ns.GetLabels()[managed.InjectLabel] == "true"
	u.mu.Lock()
	if u.labelled == nil {
		u.labelled = map[string]bool{}
	}
	changed := u.labelled[ns.GetName()] != labelled
	if labelled {
		u.labelled[ns.GetName()] = true
	} else {
		delete(u.labelled, ns.GetName())
	}
	u.mu.Unlock()
	if !changed {
		return
	}
	pods := &corev1.PodList{}
	if err := u.Client.List(ctx, pods, client.InNamespace(ns.GetName()), client.UnsafeDisableDeepCopy); err != nil {
		return // the cache fails only when the manager stops
	}
	for i := range pods.Items {
		if inputs(&pods.Items[i]).ifLabelled {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
}

// Reconcile counts the pod while it is uninjected and reports it once.
func (u *Uninjected) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := u.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		if apierrors.IsNotFound(err) {
			u.count(req.NamespacedName, false)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ns, err := namespaceOf(ctx, u.Client, pod.Namespace, u.Excluded)
	if err != nil {
		return ctrl.Result{}, err
	}
	bad := managed.Uninjected(pod, ns)
	u.count(req.NamespacedName, bad)
	if !bad || slices.Contains(strings.Split(pod.Annotations[Annotation], ","), NotInjected) {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{}, u.report(ctx, pod)
}

// report sends the pod's Event and records it on the pod.
func (u *Uninjected) report(ctx context.Context, cached *corev1.Pod) error {
	pod := &corev1.Pod{}
	if err := u.API.Get(ctx, client.ObjectKeyFromObject(cached), pod); err != nil {
		return client.IgnoreNotFound(err)
	}
	if pod.UID != cached.UID {
		return nil // replaced: the new pod has its own reconcile
	}
	regarding, restart, err := u.owner(ctx, pod)
	if err != nil {
		return err
	}
	value := strings.Trim(pod.Annotations[Annotation]+","+NotInjected, ",")
	if err := u.Client.Patch(ctx, pod, annotationPatch(Annotation, &value)); err != nil {
		return client.IgnoreNotFound(err)
	}
	if u.Recorder != nil {
		var related runtime.Object
		if regarding != client.Object(pod) {
			related = pod
		}
		u.Recorder.Eventf(regarding, related, corev1.EventTypeWarning, NotInjected, "CheckInjection", "%s", message(pod.Name, restart))
	}
	return nil
}

// owner finds the pod's workload, for the Event, and how to restart it.
func (u *Uninjected) owner(ctx context.Context, pod *corev1.Pod) (client.Object, string, error) {
	w, ok := managed.OwnerOf(pod)
	if !ok {
		return pod, "", nil
	}
	obj := w.Object()
	if err := u.Client.Get(ctx, types.NamespacedName{Namespace: pod.Namespace, Name: w.Name}, obj); apierrors.IsNotFound(err) {
		return pod, "", nil
	} else if err != nil {
		return nil, "", fmt.Errorf("read the %s of pod %s/%s: %w", w.Kind, pod.Namespace, pod.Name, err)
	}
	return obj, fmt.Sprintf("kubectl rollout restart -n %s %s/%s", pod.Namespace, strings.ToLower(w.Kind), w.Name), nil
}

// message is the NotInjected Event's: restart is the command that re-creates the pod through its
// workload, empty for a pod that has none.
func message(pod, restart string) string {
	fix := "delete the pod and create it again"
	if restart != "" {
		fix = "restart its workload: " + restart
	}
	return fmt.Sprintf("pod %s is opted in by %s but was created without lastcall (the webhook was down or too slow, or the pod predates the label): "+
		"it has neither lastcall's preStop hook nor the readiness gate, so it may drop requests when it stops; to inject it, %s", pod, managed.InjectLabel, fix)
}

// count records whether the pod is uninjected and updates its namespace's gauge.
func (u *Uninjected) count(key types.NamespacedName, bad bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.counted[key] == bad {
		return
	}
	if u.counted == nil {
		u.counted, u.perNS = map[types.NamespacedName]bool{}, map[string]int{}
	}
	if bad {
		u.counted[key] = true
		u.perNS[key.Namespace]++
	} else {
		delete(u.counted, key)
		u.perNS[key.Namespace]--
	}
	if n := u.perNS[key.Namespace]; n > 0 {
		metrics.UninjectedPods.WithLabelValues(key.Namespace).Set(float64(n))
	} else {
		delete(u.perNS, key.Namespace)
		metrics.UninjectedPods.DeleteLabelValues(key.Namespace)
	}
}
