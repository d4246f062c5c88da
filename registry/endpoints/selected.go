package endpoints

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/lastcall-dev/lastcall/registry"
)

// Services is the little of the Services API Unlisted needs.
type Services interface {
	List(ctx context.Context, namespace string) (*corev1.ServiceList, error)
}

// ServiceSource is what a binary that caches Services offers next to its registry.Kube, so the
// registry can tell a pod that no Service selects (see Unlisted).
type ServiceSource interface {
	Services() Services
}

// Unlisted says why the EndpointSlice controller will never list the pod ("" when it will, or
// may): a pod that no Service selects is never in an EndpointSlice, and nobody calls it through
// one. It answers "" when it cannot tell (no Config.Services, or an Instance without labels),
// so a caller that waits for Visible keeps waiting rather than skipping.
func (r *Registry) Unlisted(ctx context.Context, in registry.Instance) (string, error) {
	if r.cfg.Services == nil || in.Labels == nil {
		return "", nil
	}
	list, err := r.cfg.Services.List(ctx, in.Namespace)
	if err != nil {
		return "", fmt.Errorf("endpoints: list Services in %s: %w", in.Namespace, err)
	}
	for i := range list.Items {
		if selects(&list.Items[i], in.Labels) {
			return "", nil
		}
	}
	return "no Service selects the pod", nil
}

// selects mirrors the EndpointSlice controller: it lists the pods of Services that have a
// selector and are not ExternalName.
func selects(svc *corev1.Service, podLabels map[string]string) bool {
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return false
	}
	return labels.SelectorFromValidatedSet(svc.Spec.Selector).Matches(labels.Set(podLabels))
}
