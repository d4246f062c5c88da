package backstop

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/lastcall-dev/lastcall/registry"
)

func TestStale(t *testing.T) {
	inst := registry.Registration{UID: "u1", Namespace: "shop", Pod: "web-1"}
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "pods"}, "web-1")
	pod := func(uid string) *corev1.Pod { return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid)}} }
	tests := []struct {
		name string
		inst registry.Registration
		pod  *corev1.Pod
		err  error
		want string
	}{
		{"alive", inst, pod("u1"), nil, Alive},
		{"gone", inst, &corev1.Pod{}, notFound, Gone},
		{"same name, new pod", inst, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u2"}}, nil, Reused},
		{"API error keeps it", inst, &corev1.Pod{}, apierrors.NewInternalError(errors.New("etcd down")), Unknown},
		{"forbidden keeps it", inst, &corev1.Pod{}, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "web-1", errors.New("rbac")), Unknown},
		{"timeout keeps it", inst, &corev1.Pod{}, errors.New("context deadline exceeded"), Unknown},
		{"no pod name in meta", registry.Registration{UID: "u1", Namespace: "shop"}, &corev1.Pod{}, notFound, Unknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Stale(tt.inst, tt.pod, tt.err); got != tt.want {
				t.Errorf("Stale = %s, want %s", got, tt.want)
			}
		})
	}
}
