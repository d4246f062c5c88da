package managed

import (
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The controller's cache transforms. Memory must follow what lastcall manages, not the size of
// the cluster, yet what lastcall manages cannot be selected: the readiness gate alone opts a pod
// in, and the webhook's opt-in (a namespace label, a pod template label) leaves no mark on a
// Deployment or StatefulSet. So pods and workloads are all watched, and each is cut at once to
// what the controller reads of it.

// CachedPod is the pod cache's transform. A managed pod is kept whole (but for its managed
// fields), any other as its identity (name, namespace, UID, resource version), which tells the
// sweeper it exists and the reconcilers that it is not theirs, plus what tells whether the
// webhook should have injected it: its lastcall.dev/* labels and annotations, and its phase. Not
// its deletion: the reconcilers that follow deleting pods would then wake for every pod deleted.
func CachedPod(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	if IsManaged(pod) {
		pod.ManagedFields = nil
		return pod, nil
	}
	return &corev1.Pod{TypeMeta: pod.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
		Labels: own(pod.Labels), Annotations: own(pod.Annotations),
	}, Status: corev1.PodStatus{Phase: pod.Status.Phase}}, nil
}

// CachedWorkload is the transform of Deployments and StatefulSets: every one is cached (which
// are lastcall's depends on their namespace and their pods too), cut to what the unsafe-settings
// check and the drain timelines read: identity, lastcall.dev/* labels and annotations, replicas,
// rollout strategy, the pod template's lastcall.dev/* metadata, grace period, readiness gates and
// the containers that have a preStop hook (name and hook), and the status counts that tell a
// rollout from a scale-down. About 1.5 KB per workload that has no lastcall.dev/* metadata,
// however large its template and last applied configuration, which are never read.
func CachedWorkload(obj any) (any, error) {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(w.ObjectMeta),
			Spec: appsv1.DeploymentSpec{Replicas: w.Spec.Replicas, Strategy: w.Spec.Strategy, Template: template(w.Spec.Template)},
			Status: appsv1.DeploymentStatus{ObservedGeneration: w.Status.ObservedGeneration, Replicas: w.Status.Replicas,
				UpdatedReplicas: w.Status.UpdatedReplicas}}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(w.ObjectMeta),
			Spec: appsv1.StatefulSetSpec{Replicas: w.Spec.Replicas, Template: template(w.Spec.Template)},
			Status: appsv1.StatefulSetStatus{ObservedGeneration: w.Status.ObservedGeneration, Replicas: w.Status.Replicas,
				CurrentRevision: w.Status.CurrentRevision, UpdateRevision: w.Status.UpdateRevision}}, nil
	}
	return obj, nil
}

// CachedNamespace is the namespace cache's transform: its identity and lastcall.dev/* labels,
// which say whether the webhook injects its pods.
func CachedNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{TypeMeta: ns.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: own(ns.Labels)}}, nil
}

func workloadMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, DeletionTimestamp: m.DeletionTimestamp, Labels: own(m.Labels), Annotations: own(m.Annotations)}
}

func template(t corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	out := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: own(t.Labels), Annotations: own(t.Annotations)},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: t.Spec.TerminationGracePeriodSeconds, ReadinessGates: t.Spec.ReadinessGates}}
	for _, c := range t.Spec.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Lifecycle: &corev1.Lifecycle{PreStop: c.Lifecycle.PreStop}})
		}
	}
	return out
}

// own keeps the lastcall.dev/ entries of labels or annotations; nil when there are none.
func own(m map[string]string) map[string]string {
	var out map[string]string
	for k, v := range m {
		if strings.HasPrefix(k, "lastcall.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
