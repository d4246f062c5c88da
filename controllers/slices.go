package controllers

import (
	"context"
	"errors"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// cachedSlices serves EndpointSlices from the manager's cache: the gate and the observer read
// them for every pod they look at, and a LIST per look would grow with the namespace.
type cachedSlices struct{ reader client.Reader }

func (c cachedSlices) List(ctx context.Context, ns string) (*discoveryv1.EndpointSliceList, error) {
	list := &discoveryv1.EndpointSliceList{}
	if err := c.reader.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	return list, nil
}

// Watch is not needed: the controller never waits for propagation (the preStop helper does).
func (cachedSlices) Watch(context.Context, string, string) (watch.Interface, error) {
	return nil, errors.New("controllers: EndpointSlices are watched through the manager's cache")
}

// slimSlice keeps only what lastcall reads of an EndpointSlice, so caching every slice of the
// cluster stays cheap.
func slimSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{
		TypeMeta: s.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, UID: s.UID,
			ResourceVersion: s.ResourceVersion, Labels: s.Labels},
		AddressType: s.AddressType,
		// Ports name the Service ports lastcall-node reads (targeted reads); NodeName places
		// lastcall-node's own endpoints on their nodes.
		Ports:     s.Ports,
		Endpoints: make([]discoveryv1.Endpoint, len(s.Endpoints)),
	}
	for i, ep := range s.Endpoints {
		out.Endpoints[i] = discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: ep.Conditions, TargetRef: ep.TargetRef, NodeName: ep.NodeName}
	}
	return out, nil
}
