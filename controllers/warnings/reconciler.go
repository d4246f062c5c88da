package warnings

import (
	"context"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/lastcall-dev/lastcall/controllers/metrics"
	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// Annotation lists the checks a workload currently fails, so Events are sent once per change
// and a restarted controller does not repeat them.
const Annotation = "lastcall.dev/warnings"

// Reconciler checks one kind of workload.
type Reconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	// Drain is the budget assumed for workloads without drain annotations.
	Drain prestop.Drain
	// Timeout bounds one reconcile; none when zero.
	Timeout time.Duration
	kind    string
	newObj  func() client.Object
	read    func(client.Object) Workload
}

// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;patch

// ForDeployments checks Deployments.
func ForDeployments(c client.Client, rec events.EventRecorder, drain prestop.Drain) *Reconciler {
	return &Reconciler{Client: c, Recorder: rec, Drain: drain, kind: "Deployment",
		newObj: func() client.Object { return &appsv1.Deployment{} },
		read:   func(o client.Object) Workload { return FromDeployment(o.(*appsv1.Deployment)) }}
}

// ForStatefulSets checks StatefulSets.
func ForStatefulSets(c client.Client, rec events.EventRecorder, drain prestop.Drain) *Reconciler {
	return &Reconciler{Client: c, Recorder: rec, Drain: drain, kind: "StatefulSet",
		newObj: func() client.Object { return &appsv1.StatefulSet{} },
		read:   func(o client.Object) Workload { return FromStatefulSet(o.(*appsv1.StatefulSet)) }}
}

// SetupWithManager registers the reconciler.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).Named("unsafe-settings-" + strings.ToLower(r.kind)).
		For(r.newObj()).WithOptions(controller.Options{ReconciliationTimeout: r.Timeout}).Complete(r)
}

// Reconcile runs the checks, updates the metric, and sends an Event per new finding.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	obj := r.newObj()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if client.IgnoreNotFound(err) == nil {
			for _, c := range AllChecks {
				metrics.UnsafeSettings.DeleteLabelValues(req.Namespace, r.kind, req.Name, c)
			}
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	findings := Check(r.read(obj), r.Drain)
	var names []string
	for _, c := range AllChecks {
		failed := slices.ContainsFunc(findings, func(f Finding) bool { return f.Check == c })
		v := 0.0
		if failed {
			v = 1
			names = append(names, c)
		}
		metrics.UnsafeSettings.WithLabelValues(req.Namespace, r.kind, req.Name, c).Set(v)
	}
	previous := strings.Split(obj.GetAnnotations()[Annotation], ",")
	current := strings.Join(names, ",")
	if obj.GetAnnotations()[Annotation] == current {
		return ctrl.Result{}, nil
	}
	for _, f := range findings {
		if !slices.Contains(previous, f.Check) && r.Recorder != nil {
			r.Recorder.Eventf(obj, nil, corev1.EventTypeWarning, f.Check, "CheckDrainSettings", "%s", f.Message)
		}
	}
	orig := obj.DeepCopyObject().(client.Object)
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[Annotation] = current
	obj.SetAnnotations(ann)
	return ctrl.Result{}, client.IgnoreNotFound(r.Client.Patch(ctx, obj, client.MergeFrom(orig)))
}
