package controllers

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// cachedServices serves Services from the manager's cache: the registration gate reads them to
// tell a pod that no Service selects, which EndpointSlices will never list.
type cachedServices struct{ reader client.Reader }

func (c cachedServices) List(ctx context.Context, ns string) (*corev1.ServiceList, error) {
	list := &corev1.ServiceList{}
	if err := c.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	return list, nil
}

// slimService keeps what decides whether a Service selects a pod: its selector and type.
func slimService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	return &corev1.Service{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion},
		Spec: corev1.ServiceSpec{Selector: s.Spec.Selector, Type: s.Spec.Type},
	}, nil
}
