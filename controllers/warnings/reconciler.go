package warnings

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
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
	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// Annotation lists the checks a workload currently fails, so Events are sent once per change
// and a restarted controller does not repeat them.
const Annotation = managed.WarningsAnnotation

// Reconciler checks one kind of workload: those lastcall manages (managed.Adopt: labelled, or
// injected through their template or namespace, or owning managed pods).
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Drain is the budget assumed for workloads without drain annotations.
	Drain prestop.Drain
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration
	// Excluded tells the namespaces the injection webhook never selects; none when nil.
	Excluded func(namespace string) bool
	kind     string
	newObj   func() client.Object
	newList  func() client.ObjectList
	read     func(client.Object) Workload
}

// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// ForDeployments checks Deployments.
func ForDeployments(c client.Client, rec events.EventRecorder, drain prestop.Drain) *Reconciler {
	return &Reconciler{Client: c, Recorder: rec, Drain: drain, kind: managed.Deployment,
		newObj:  func() client.Object { return &appsv1.Deployment{} },
		newList: func() client.ObjectList { return &appsv1.DeploymentList{} },
		read:    func(o client.Object) Workload { return FromDeployment(o.(*appsv1.Deployment)) }}
}

// ForStatefulSets checks StatefulSets.
func ForStatefulSets(c client.Client, rec events.EventRecorder, drain prestop.Drain) *Reconciler {
	return &Reconciler{Client: c, Recorder: rec, Drain: drain, kind: managed.StatefulSet,
		newObj:  func() client.Object { return &appsv1.StatefulSet{} },
		newList: func() client.ObjectList { return &appsv1.StatefulSetList{} },
		read:    func(o client.Object) Workload { return FromStatefulSet(o.(*appsv1.StatefulSet)) }}
}

// SetupWithManager registers the reconciler. Every workload is watched, but only changes to what
// the checks read wake it (not the status updates of every rollout in the cluster), and so do a
// namespace's inject label and managed pods that come or go. The pods need the field index
// managed.OwnerIndex (IndexPods).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	changed := predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}, predicate.AnnotationChangedPredicate{})
	return ctrl.NewControllerManagedBy(mgr).Named("unsafe-settings-"+strings.ToLower(r.kind)).
		For(r.newObj(), builder.WithPredicates(changed)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.workloadsIn), builder.WithPredicates(injectLabelChanged)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(r.ownerOf), builder.WithPredicates(managedPodsChanged)).
		WithOptions(controller.Options{ReconciliationTimeout: r.Timeout}).Complete(r)
}

// IndexPods indexes managed pods by their workload, for the reconcilers' OwnsManagedPods.
func IndexPods(ctx context.Context, mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, managed.OwnerIndex, managed.IndexOwner); err != nil {
		return fmt.Errorf("index pods by workload: %w", err)
	}
	return nil
}

// injectLabelChanged passes namespaces whose lastcall.dev/inject label changed.
var injectLabelChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return e.ObjectOld.GetLabels()[managed.InjectLabel] != e.ObjectNew.GetLabels()[managed.InjectLabel]
	},
}

// managedPodsChanged passes managed pods that come or go, pods that become managed or stop being
// so, and managed pods whose owner changes (an orphan adopted): what OwnsManagedPods depends on.
var managedPodsChanged = predicate.Funcs{
	CreateFunc:  func(e event.CreateEvent) bool { return managedOwner(e.Object) != "" },
	DeleteFunc:  func(e event.DeleteEvent) bool { return managedOwner(e.Object) != "" },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc:  func(e event.UpdateEvent) bool { return managedOwner(e.ObjectOld) != managedOwner(e.ObjectNew) },
}

// managedOwner is the workload of a managed pod, empty for other pods.
func managedOwner(obj client.Object) string {
	if owner := managed.IndexOwner(obj); len(owner) == 1 {
		return owner[0]
	}
	return ""
}

// workloadsIn maps a namespace to its workloads of the reconciler's kind.
func (r *Reconciler) workloadsIn(ctx context.Context, ns client.Object) []reconcile.Request {
	list := r.newList()
	if err := r.Client.List(ctx, list, client.InNamespace(ns.GetName()), client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	_ = meta.EachListItem(list, func(o runtime.Object) error {
		if obj, ok := o.(client.Object); ok {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
		}
		return nil
	})
	return out
}

// ownerOf maps a managed pod to its workload, when that is of the reconciler's kind.
func (r *Reconciler) ownerOf(_ context.Context, obj client.Object) []reconcile.Request {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return nil
	}
	if w, ok := managed.OwnerOf(pod); ok && w.Kind == r.kind {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: pod.Namespace, Name: w.Name}}}
	}
	return nil
}

// Reconcile runs the checks on a managed workload, updates the metric, and sends an Event per new
// finding; for a workload lastcall does not manage (any more), it clears both.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := r.newObj()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if client.IgnoreNotFound(err) == nil {
			r.clearMetric(req)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	w := r.read(obj)
	adoption, err := r.adoption(ctx, obj, w)
	if err != nil {
		return ctrl.Result{}, err
	}
	recorded, has := obj.GetAnnotations()[Annotation]
	if adoption == managed.NotManaged {
		r.clearMetric(req)
		if !has {
			return ctrl.Result{}, nil
		}
		// No longer lastcall's: what was sent is forgotten, so adopting it again warns again.
		return ctrl.Result{}, r.annotate(ctx, obj, nil)
	}
	w.Injected = adoption == managed.Injected
	findings := Check(w, r.Drain)
	var names []string
	for _, c := range AllChecks {
		v := 0.0
		if slices.ContainsFunc(findings, func(f Finding) bool { return f.Check == c }) {
			v = 1
			names = append(names, c)
		}
		metrics.UnsafeSettings.WithLabelValues(req.Namespace, r.kind, req.Name, c).Set(v)
	}
	current := strings.Join(names, ",")
	if recorded == current {
		return ctrl.Result{}, nil
	}
	previous := strings.Split(recorded, ",")
	for _, f := range findings {
		if !slices.Contains(previous, f.Check) && r.Recorder != nil {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, f.Check, "CheckDrainSettings", "%s", f.Message)
		}
	}
	return ctrl.Result{}, r.annotate(ctx, obj, &current)
}

// annotate records the checks that fail in Annotation, or removes it when checks is nil.
func (r *Reconciler) annotate(ctx context.Context, obj client.Object, checks *string) error {
	return client.IgnoreNotFound(r.Client.Patch(ctx, obj, annotationPatch(Annotation, checks)))
}

// annotationPatch sets one annotation, or removes it when value is nil, and nothing else: the
// cached objects are slimmed, so a patch computed from them could drop what they lack.
func annotationPatch(key string, value *string) client.Patch {
	data, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{key: value}}}) // cannot fail
	return client.RawPatch(types.MergePatchType, data)
}

func (r *Reconciler) clearMetric(req ctrl.Request) {
	for _, c := range AllChecks {
		metrics.UnsafeSettings.DeleteLabelValues(req.Namespace, r.kind, req.Name, c)
	}
}

// adoption tells how lastcall manages the workload, asking the pods only when the workload and
// its namespace do not tell.
func (r *Reconciler) adoption(ctx context.Context, obj client.Object, w Workload) (managed.Adoption, error) {
	ns, err := namespaceOf(ctx, r.Client, obj.GetNamespace(), r.Excluded)
	if err != nil {
		return managed.NotManaged, err
	}
	if a := managed.Adopt(obj.GetLabels(), &w.Template, ns); a != managed.NotManaged {
		return a, nil
	}
	pods := &corev1.PodList{}
	key := managed.Workload{Kind: r.kind, Name: obj.GetName()}.String()
	if err := r.Client.List(ctx, pods, client.InNamespace(obj.GetNamespace()), client.MatchingFields{managed.OwnerIndex: key},
		client.Limit(1), client.UnsafeDisableDeepCopy); err != nil {
		return managed.NotManaged, fmt.Errorf("list the managed pods of %s %s/%s: %w", r.kind, obj.GetNamespace(), obj.GetName(), err)
	}
	if len(pods.Items) > 0 {
		return managed.OwnsManagedPods, nil
	}
	return managed.NotManaged, nil
}

// namespaceOf reads what the webhook's selectors see of the namespace; a namespace not found (yet)
// counts as unlabelled.
func namespaceOf(ctx context.Context, c client.Client, name string, excluded func(string) bool) (managed.Namespace, error) {
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, types.NamespacedName{Name: name}, ns); client.IgnoreNotFound(err) != nil {
		return managed.Namespace{}, fmt.Errorf("read namespace %s: %w", name, err)
	}
	return managed.NamespaceOf(ns.Labels, excluded != nil && excluded(name)), nil
}
