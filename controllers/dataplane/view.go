package dataplane

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

// SliceView is what the EndpointSlices of a pod's namespace say about it.
type SliceView struct {
	// Listed: some slice lists the pod (it is on the EndpointSlice path).
	Listed bool
	// Ready: some slice still lists it as ready, so callers are still sent to it on purpose.
	Ready bool
	// Targets are its IPs with the Service ports of the slices that list them, for the
	// agents' targeted reads.
	Targets []agent.TargetJSON
	// NoReadyEndpoint: none of its Services has a ready endpoint left (LastBackend is final).
	NoReadyEndpoint bool
}

// IPs are the targets' IPs.
func (v SliceView) IPs() []string {
	out := make([]string, len(v.Targets))
	for i, t := range v.Targets {
		out[i] = t.IP
	}
	return out
}

// SlicesOf reads the pod's state from the slices of its namespace.
func SlicesOf(pod *corev1.Pod, list []discoveryv1.EndpointSlice) SliceView {
	var v SliceView
	ports := map[string][]agent.PortJSON{}
	var order []string
	services := map[string]bool{}
	for _, s := range list {
		svc := s.Labels[discoveryv1.LabelServiceName]
		for _, ep := range s.Endpoints {
			if !isPod(ep.TargetRef, pod) {
				continue
			}
			v.Listed = true
			v.Ready = v.Ready || ready(ep)
			if svc == "" {
				continue
			}
			services[svc] = true
			for _, addr := range ep.Addresses {
				if _, seen := ports[addr]; !seen {
					order = append(order, addr)
				}
				for _, p := range s.Ports {
					if p.Port == nil {
						continue
					}
					pj := agent.PortJSON{Service: s.Namespace + "/" + svc, Port: int(*p.Port)}
					if p.Name != nil {
						pj.Name = *p.Name
					}
					if p.Protocol != nil {
						pj.Protocol = string(*p.Protocol)
					}
					if !slices.Contains(ports[addr], pj) {
						ports[addr] = append(ports[addr], pj)
					}
				}
			}
		}
	}
	ips := make([]string, 0, len(pod.Status.PodIPs))
	for _, ip := range pod.Status.PodIPs {
		ips = append(ips, ip.IP)
	}
	if len(ips) == 0 {
		ips = order
	}
	for _, ip := range ips {
		v.Targets = append(v.Targets, agent.TargetJSON{IP: ip, Ports: ports[ip]})
	}
	v.NoReadyEndpoint = len(services) > 0
	for _, s := range list {
		if !services[s.Labels[discoveryv1.LabelServiceName]] {
			continue
		}
		for _, ep := range s.Endpoints {
			if ready(ep) {
				v.NoReadyEndpoint = false
			}
		}
	}
	return v
}

func isPod(ref *corev1.ObjectReference, pod *corev1.Pod) bool {
	if ref == nil || ref.Kind != "Pod" || ref.Name != pod.Name {
		return false
	}
	return ref.UID == "" || ref.UID == pod.UID
}

// ready reads an endpoint as kube-proxy does: unset means ready.
func ready(ep discoveryv1.Endpoint) bool { return ep.Conditions.Ready == nil || *ep.Conditions.Ready }

// NodesOf lists every node with what is known of it: the agents' answers, or why there is none.
// A confirmation counts even from a NotReady node; a node the cache does not know yet but whose
// agent answers counts too.
func NodesOf(nodes []corev1.Node, answers map[string]Node, agentNotReady map[string]bool) []Node {
	out := make([]Node, 0, len(nodes))
	seen := map[string]bool{}
	for _, n := range nodes {
		seen[n.Name] = true
		a, has := answers[n.Name]
		switch {
		case has && (a.Verdict == dataplane.NotRouted.String() || a.Verdict == dataplane.LastBackend.String()):
			out = append(out, a)
		case !nodeReady(n):
			out = append(out, Node{Name: n.Name, Missing: "NotReady"})
		case has:
			out = append(out, a)
		case agentNotReady[n.Name]:
			out = append(out, Node{Name: n.Name, Missing: "agent not ready"})
		default:
			out = append(out, Node{Name: n.Name, Missing: "no agent"})
		}
	}
	for name, a := range answers {
		if !seen[name] {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// SlimNode keeps only a Node's name, Ready condition and container runtime in the manager's cache: about 300 bytes
// per node instead of the 10 to 50 KB of a full Node (images, addresses, capacity), so under
// 1 MB at 1,000 nodes. The informer still receives every Node update (the kubelet's status
// updates, minutes apart since heartbeats moved to Leases); it just does not keep them.
func SlimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		TypeMeta:   n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		// the injection webhook's image-volume mode checks the runtime
		Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: n.Status.NodeInfo.ContainerRuntimeVersion}},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status}}
		}
	}
	return out, nil
}
