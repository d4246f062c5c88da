package endpoints

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/registry"
)

type serviceList []corev1.Service

func (l serviceList) List(context.Context, string) (*corev1.ServiceList, error) {
	return &corev1.ServiceList{Items: l}, nil
}

type failingServices struct{}

func (failingServices) List(context.Context, string) (*corev1.ServiceList, error) {
	return nil, errors.New("forbidden")
}

func svc(name string, typ corev1.ServiceType, selector map[string]string) corev1.Service {
	return corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Type: typ, Selector: selector}}
}

func TestUnlisted(t *testing.T) {
	web := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		name     string
		services Services
		labels   map[string]string
		listed   bool
		wantErr  bool
	}{
		{"a Service selects the pod", serviceList{svc("web", "", map[string]string{"app": "web"})}, web, true, false},
		{"no Service in the namespace", serviceList{}, web, false, false},
		{"selectors of other pods", serviceList{svc("api", "", map[string]string{"app": "api"}), svc("both", "", map[string]string{"app": "web", "tier": "back"})}, web, false, false},
		{"a Service without a selector lists no pod", serviceList{svc("manual", "", nil)}, web, false, false},
		{"ExternalName gets no endpoints", serviceList{svc("ext", corev1.ServiceTypeExternalName, map[string]string{"app": "web"})}, web, false, false},
		{"no Services source: assume selected", nil, web, true, false},
		{"labels unknown: assume selected", serviceList{}, nil, true, false},
		{"list fails", failingServices{}, web, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(Config{Client: Dynamic{}, Services: tt.services})
			if err != nil {
				t.Fatal(err)
			}
			why, err := r.Unlisted(context.Background(), registry.Instance{Namespace: "ns", Labels: tt.labels})
			if (err != nil) != tt.wantErr || (why == "") != (tt.listed || tt.wantErr) {
				t.Errorf("Unlisted = %q, %v; want listed=%v, error %v", why, err, tt.listed, tt.wantErr)
			}
		})
	}
}
