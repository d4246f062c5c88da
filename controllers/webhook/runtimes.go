package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// runtimesTTL is how long one look at the nodes stands: nodes and their runtimes change rarely,
// admissions come in bursts.
const runtimesTTL = 10 * time.Second

// nodeRuntimes answers, from the manager's cache of Nodes, whether a node's container runtime
// cannot mount image volumes. A pod is admitted before it is scheduled, so one such node is
// enough to keep image-volume mode off for every pod.
type nodeRuntimes struct {
	reader client.Reader
	now    func() time.Time

	mu  sync.Mutex
	at  time.Time
	why string
}

// Blocker names a node whose runtime cannot mount image volumes ("" when every node's can).
func (n *nodeRuntimes) Blocker(ctx context.Context) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := n.now()
	if !n.at.IsZero() && now.Sub(n.at) < runtimesTTL {
		return n.why, nil
	}
	var nodes corev1.NodeList
	if err := n.reader.List(ctx, &nodes); err != nil {
		// not cached: a failed read is asked again at the next admission
		return "", fmt.Errorf("list nodes: %w", err)
	}
	n.at, n.why = now, blocker(nodes.Items)
	return n.why, nil
}

// blocker is the first node, by the list's order, whose runtime cannot mount image volumes.
func blocker(nodes []corev1.Node) string {
	for _, nd := range nodes {
		if v := nd.Status.NodeInfo.ContainerRuntimeVersion; !inject.MountsImageVolumes(v) {
			if v == "" {
				v = "a runtime it does not report"
			}
			return fmt.Sprintf("node %s runs %s", nd.Name, v)
		}
	}
	return ""
}
