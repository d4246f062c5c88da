package managed

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Names of the injection webhook's opt-in (controllers/inject uses the same), and of the warnings
// already sent.
const (
	// InjectLabel "true" on a namespace or a pod opts it in to injection; "false" on a pod opts it
	// out of a labelled namespace.
	InjectLabel = "lastcall.dev/inject"
	// InjectedAnnotation marks a pod the webhook injected.
	InjectedAnnotation = "lastcall.dev/injected"
	// WarningsAnnotation lists the warnings already sent about a workload or a pod, so that a
	// restarted controller sends none twice.
	WarningsAnnotation = "lastcall.dev/warnings"
)

// Namespace is what the webhook's selectors see of a pod's namespace.
type Namespace struct {
	// Labelled is lastcall.dev/inject=true on the namespace.
	Labelled bool
	// Excluded namespaces are never selected by the webhook (kube-system, lastcall's own).
	Excluded bool
}

// NamespaceOf reads a namespace's labels; excluded tells whether the webhook skips it.
func NamespaceOf(labels map[string]string, excluded bool) Namespace {
	return Namespace{Labelled: labels[InjectLabel] == "true", Excluded: excluded}
}

// Injects reports whether the webhook injects a pod with these labels created in ns. It mirrors
// the chart's two webhook entries (a labelled namespace: every pod not labelled false; any other
// namespace: pods labelled true) and inject.Pod, which skips a pod whose managed label is set to
// anything but "true".
func Injects(podLabels map[string]string, ns Namespace) bool {
	if v, ok := podLabels[Label]; ns.Excluded || (ok && v != "true") {
		return false
	}
	switch podLabels[InjectLabel] {
	case "true":
		return true
	case "false":
		return false
	}
	return ns.Labelled
}

// Uninjected reports whether the webhook should have injected the pod and did not: it selects the
// pod now, yet the pod has neither the injected mark nor lastcall written by hand (the managed
// label or the gate). Such a pod was created while the webhook was down or too slow
// (failurePolicy Ignore), or before its namespace was labelled; it drains without lastcall.
// Pods that finished or are being deleted do not count.
func Uninjected(pod *corev1.Pod, ns Namespace) bool {
	switch {
	case IsManaged(pod), pod.Annotations[InjectedAnnotation] != "", pod.DeletionTimestamp != nil,
		pod.Status.Phase == corev1.PodSucceeded, pod.Status.Phase == corev1.PodFailed:
		return false
	}
	return Injects(pod.Labels, ns)
}

// Adoption is how lastcall came to manage a workload.
type Adoption int

// The adoptions.
const (
	// NotManaged workloads are not lastcall's business.
	NotManaged Adoption = iota
	// Injected workloads have pods the webhook injects: they get the hook and the gate at
	// admission, so the template needs neither.
	Injected
	// Labelled workloads carry the managed label, on themselves or their pod template, or have
	// the gate in their template: lastcall written in by hand.
	Labelled
	// OwnsManagedPods workloads are neither, but pods they own are managed.
	OwnsManagedPods
)

// Adopt tells from the workload alone whether lastcall manages a Deployment or StatefulSet with
// these labels and pod template in ns. The caller, which knows the pods, checks OwnsManagedPods
// when this says NotManaged.
func Adopt(labels map[string]string, template *corev1.PodTemplateSpec, ns Namespace) Adoption {
	switch {
	case Injects(template.Labels, ns):
		return Injected
	case labels[Label] == "true", template.Labels[Label] == "true", hasGate(template.Spec.ReadinessGates):
		return Labelled
	}
	return NotManaged
}

// Workload names a Deployment or StatefulSet.
type Workload struct{ Kind, Name string }

// The kinds of Workload.
const (
	Deployment  = "Deployment"
	StatefulSet = "StatefulSet"
)

// Object is an empty object of the workload's kind, to read it into.
func (w Workload) Object() client.Object {
	if w.Kind == StatefulSet {
		return &appsv1.StatefulSet{}
	}
	return &appsv1.Deployment{}
}

// String is the workload's key in the pod index OwnerIndex.
func (w Workload) String() string { return w.Kind + "/" + w.Name }

// OwnerOf names the Deployment or StatefulSet that controls the pod, from its controller
// reference; a Deployment's pods belong to its ReplicaSet <deployment>-<pod-template-hash>. It is
// false for pods that belong to neither.
func OwnerOf(pod *corev1.Pod) (Workload, bool) {
	ref := metav1.GetControllerOf(pod)
	if ref == nil || !strings.HasPrefix(ref.APIVersion, appsv1.GroupName+"/") {
		return Workload{}, false
	}
	switch ref.Kind {
	case "ReplicaSet":
		hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		name, ok := strings.CutSuffix(ref.Name, "-"+hash)
		if hash == "" || !ok || name == "" {
			return Workload{}, false // a ReplicaSet of its own
		}
		return Workload{Deployment, name}, true
	case StatefulSet:
		return Workload{StatefulSet, ref.Name}, true
	}
	return Workload{}, false
}

// OwnerIndex indexes managed pods by the workload that owns them (Workload.String), so a
// workload that owns managed pods is found without listing its namespace.
const OwnerIndex = "lastcall.dev/owner"

// IndexOwner is OwnerIndex's function: managed pods only (the others are cached slimmed).
func IndexOwner(obj client.Object) []string {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !IsManaged(pod) {
		return nil
	}
	if w, ok := OwnerOf(pod); ok {
		return []string{w.String()}
	}
	return nil
}
