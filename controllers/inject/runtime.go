package inject

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/version"
)

// imageVolumeSince is the first version of each container runtime that mounts image volumes
// (KEP-4639): containerd 2.1.0 added the OCI volume source to its CRI plugin; CRI-O had it first,
// in 1.31.
var imageVolumeSince = map[string]*version.Version{
	"containerd": version.MustParseGeneric("2.1.0"),
	"cri-o":      version.MustParseGeneric("1.31.0"),
}

// MountsImageVolumes reports whether a node's container runtime, as the node reports it
// (status.nodeInfo.containerRuntimeVersion, "containerd://2.1.4"), can mount image volumes.
// An unknown runtime or an unreadable version counts as cannot: a pod whose image volume the
// runtime cannot mount never starts.
func MountsImageVolumes(runtimeVersion string) bool {
	name, v, ok := strings.Cut(runtimeVersion, "://")
	since := imageVolumeSince[name]
	if !ok || since == nil {
		return false
	}
	got, err := version.ParseGeneric(strings.TrimPrefix(v, "v"))
	return err == nil && got.AtLeast(since)
}
