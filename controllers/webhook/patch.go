package webhook

import (
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
)

// patchOf is the JSON patch from before to after when they differ only where the injection
// writes: labels and annotations, volumes and readiness gates appended, an init container put
// first, and in each container env and volume mounts appended and the preStop hook set. ok is
// false for any other difference, and the caller diffs the marshalled pods instead. Built from
// the fields, it costs a fraction of marshalling both pods and diffing them (half the webhook's
// CPU per request, which is what queued a burst of admissions), and it writes no path the
// injection did not change, so fields this build does not know are kept.
func patchOf(before, after *corev1.Pod) ([]jsonpatch.JsonPatchOperation, bool) {
	if len(before.Spec.Containers) != len(after.Spec.Containers) {
		return nil, false
	}
	// Everything but the fields handled below must be equal.
	rest := *after
	rest.Labels, rest.Annotations = before.Labels, before.Annotations
	rest.Spec.Volumes, rest.Spec.InitContainers, rest.Spec.ReadinessGates = before.Spec.Volumes, before.Spec.InitContainers, before.Spec.ReadinessGates
	rest.Spec.Containers = slices.Clone(after.Spec.Containers)
	for i := range rest.Spec.Containers {
		b := &before.Spec.Containers[i]
		rest.Spec.Containers[i].Env, rest.Spec.Containers[i].VolumeMounts, rest.Spec.Containers[i].Lifecycle = b.Env, b.VolumeMounts, b.Lifecycle
	}
	// reflect's DeepEqual stops at pointers both sides share, which is most of the pod (after
	// is inject.Pod's copy of before); apimachinery's walks them all, which took a fifth of the
	// webhook's CPU per review. Strict equality only sends a pod it doubts to the full diff.
	if !reflect.DeepEqual(before, &rest) {
		return nil, false
	}
	p := &patcher{}
	p.mapOps("/metadata/labels", before.Labels, after.Labels)
	p.mapOps("/metadata/annotations", before.Annotations, after.Annotations)
	appendOps(p, "/spec/volumes", before.Spec.Volumes, after.Spec.Volumes)
	prependOps(p, "/spec/initContainers", before.Spec.InitContainers, after.Spec.InitContainers)
	for i := range after.Spec.Containers {
		b, a := &before.Spec.Containers[i], &after.Spec.Containers[i]
		path := "/spec/containers/" + strconv.Itoa(i)
		appendOps(p, path+"/env", b.Env, a.Env)
		appendOps(p, path+"/volumeMounts", b.VolumeMounts, a.VolumeMounts)
		p.lifecycleOps(path+"/lifecycle", b.Lifecycle, a.Lifecycle)
	}
	appendOps(p, "/spec/readinessGates", before.Spec.ReadinessGates, after.Spec.ReadinessGates)
	return p.ops, !p.failed
}

type patcher struct {
	ops    []jsonpatch.JsonPatchOperation
	failed bool
}

func (p *patcher) add(path string, v any) {
	p.ops = append(p.ops, jsonpatch.JsonPatchOperation{Operation: "add", Path: path, Value: v})
}

// mapOps adds or replaces the keys after changed; a key removed is not the injection's.
func (p *patcher) mapOps(path string, before, after map[string]string) {
	if len(before) == 0 {
		if len(after) > 0 {
			p.add(path, after)
		}
		return
	}
	keys := make([]string, 0, len(after))
	for k := range before {
		if _, ok := after[k]; !ok {
			p.failed = true
			return
		}
	}
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		p.add(path+"/"+escape(k), after[k])
	}
}

// appendOps adds the elements after has beyond before, which must be its prefix.
func appendOps[T any](p *patcher, path string, before, after []T) {
	switch {
	case len(after) < len(before) || !equality.Semantic.DeepEqual(before, after[:len(before)]):
		p.failed = true
	case len(after) == len(before):
	case len(before) == 0:
		p.add(path, after)
	default:
		for _, v := range after[len(before):] {
			p.add(path+"/-", v)
		}
	}
}

// prependOps adds the one element after has before all of before's.
func prependOps[T any](p *patcher, path string, before, after []T) {
	switch {
	case len(after) == len(before) && equality.Semantic.DeepEqual(before, after):
	case len(after) != len(before)+1 || !equality.Semantic.DeepEqual(before, after[1:]):
		p.failed = true
	case len(before) == 0:
		p.add(path, after)
	default:
		p.add(path+"/0", after[0])
	}
}

// lifecycleOps sets the preStop hook; any other change to the lifecycle is not the injection's.
func (p *patcher) lifecycleOps(path string, before, after *corev1.Lifecycle) {
	switch {
	case equality.Semantic.DeepEqual(before, after):
	case after == nil:
		p.failed = true
	case before == nil:
		p.add(path, after)
	default:
		b, a := *before, *after
		b.PreStop, a.PreStop = nil, nil
		if !equality.Semantic.DeepEqual(b, a) || after.PreStop == nil {
			p.failed = true
			return
		}
		p.add(path+"/preStop", after.PreStop)
	}
}

// escape makes a map key a JSON pointer token (RFC 6901).
func escape(k string) string {
	return strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
}
