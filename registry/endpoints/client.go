package endpoints

import (
	"context"
	"fmt"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
)

// Slices is the little of the Kubernetes API this registry needs. Watch events carry
// *discoveryv1.EndpointSlice.
type Slices interface {
	List(ctx context.Context, namespace string) (*discoveryv1.EndpointSliceList, error)
	Watch(ctx context.Context, namespace, resourceVersion string) (watch.Interface, error)
}

var sliceResource = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}

// Dynamic implements Slices with client-go's dynamic client. The typed clientset would register
// every API group and make lastcall-prestop's binary half again as large.
type Dynamic struct{ Client dynamic.Interface }

// List implements Slices.
func (d Dynamic) List(ctx context.Context, ns string) (*discoveryv1.EndpointSliceList, error) {
	u, err := d.Client.Resource(sliceResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := &discoveryv1.EndpointSliceList{ListMeta: metav1.ListMeta{ResourceVersion: u.GetResourceVersion()}}
	out.Items = make([]discoveryv1.EndpointSlice, len(u.Items))
	for i := range u.Items {
		if err := fromUnstructured(&u.Items[i], &out.Items[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Watch implements Slices.
func (d Dynamic) Watch(ctx context.Context, ns, rv string) (watch.Interface, error) {
	w, err := d.Client.Resource(sliceResource).Namespace(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Error {
			s := &discoveryv1.EndpointSlice{}
			if err := fromUnstructured(u, s); err != nil {
				return watch.Event{Type: watch.Error, Object: &metav1.Status{Message: err.Error()}}, true
			}
			ev.Object = s
		}
		return ev, true
	}), nil
}

func fromUnstructured(u *unstructured.Unstructured, s *discoveryv1.EndpointSlice) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, s); err != nil {
		return fmt.Errorf("decode EndpointSlice %s: %w", u.GetName(), err)
	}
	return nil
}
