package endpoints_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

// setDataplane writes the pod's lastcall.dev/dataplane-drained condition, as lastcall-controller does.
func setDataplane(t *testing.T, cs kubernetes.Interface, ns, pod string, status corev1.ConditionStatus, reason string) {
	t.Helper()
	ctx := context.Background()
	p, err := cs.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{
		Type: endpoints.DataplaneCondition, Status: status, Reason: reason, Message: "test", LastTransitionTime: metav1.Now(),
	})
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestAwaitPropagatedEndsOnTheDataplaneCondition: once the slices show the pod not ready, the
// wait ends on the pod's dataplane condition (lastcall-node's confirmation), and on --settle
// only when no agent speaks for the pod.
func TestAwaitPropagatedEndsOnTheDataplaneCondition(t *testing.T) {
	cfg := apitest.Shared(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	const settle = 400 * time.Millisecond
	tests := []struct {
		name string
		// before runs before AwaitPropagated, during runs while it waits (after settle has passed)
		before, during func(t *testing.T, ns, pod string)
		// endsBeforeSettle: the condition already settles it; waitsPastSettle: an agent said
		// "still routed", so --settle alone must not end the wait
		endsBeforeSettle, waitsPastSettle bool
	}{
		{name: "no condition: --settle, as without lastcall-node"},
		{name: "all nodes stopped: at once", endsBeforeSettle: true,
			before: func(t *testing.T, ns, pod string) {
				setDataplane(t, cs, ns, pod, corev1.ConditionTrue, endpoints.ReasonAllNodesStopped)
			}},
		{name: "last backend: at once", endsBeforeSettle: true,
			before: func(t *testing.T, ns, pod string) {
				setDataplane(t, cs, ns, pod, corev1.ConditionTrue, endpoints.ReasonLastBackend)
			}},
		{name: "nodes unconfirmed: --settle for them",
			before: func(t *testing.T, ns, pod string) {
				setDataplane(t, cs, ns, pod, corev1.ConditionUnknown, endpoints.ReasonNodesUnconfirmed)
			}},
		{name: "waiting: past --settle until the nodes confirm", waitsPastSettle: true,
			before: func(t *testing.T, ns, pod string) {
				setDataplane(t, cs, ns, pod, corev1.ConditionFalse, endpoints.ReasonWaiting)
			},
			during: func(t *testing.T, ns, pod string) {
				p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				p.Status.Conditions[0].Status, p.Status.Conditions[0].Reason = corev1.ConditionTrue, endpoints.ReasonAllNodesStopped
				if _, err := cs.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			in, slice := fixture(t, cs, "dataplane-"+string(rune('a'+i)))
			slice.Endpoints[0].Conditions.Ready = ptr.To(false) // the slices already show it
			if _, err := cs.DiscoveryV1().EndpointSlices(slice.Namespace).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if tt.before != nil {
				tt.before(t, in.Namespace, in.Pod)
			}
			r, err := endpoints.New(endpoints.Config{Client: endpoints.Dynamic{Client: dyn}, Pods: endpoints.DynamicPods{Client: dyn}, Settle: settle})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			returned := make(chan time.Duration, 1)
			errc := make(chan error, 1)
			go func() {
				err := r.AwaitPropagated(ctx, in, registry.Receipt{})
				returned <- time.Since(start)
				errc <- err
			}()
			g := gomega.NewWithT(t)
			var took time.Duration
			switch {
			case tt.endsBeforeSettle:
				g.Eventually(returned).WithTimeout(settle).Should(gomega.Receive(&took), "a settled condition ends the wait before --settle")
			case tt.waitsPastSettle:
				g.Consistently(returned).WithTimeout(3*settle).ShouldNot(gomega.Receive(), "returned on --settle although a node still routes")
				tt.during(t, in.Namespace, in.Pod)
				g.Eventually(returned).WithTimeout(10 * time.Second).Should(gomega.Receive(&took))
			default:
				g.Eventually(returned).WithTimeout(10 * time.Second).Should(gomega.Receive(&took))
				if took < settle {
					t.Errorf("returned after %s, before --settle (%s)", took, settle)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// forbiddenPods is a pod API the helper may not use (no RBAC for watch): it falls back to --settle.
type forbiddenPods struct{}

func (forbiddenPods) Get(context.Context, string, string) (*corev1.Pod, error) {
	return nil, errors.New(`pods "web-1" is forbidden`)
}

func (forbiddenPods) Watch(context.Context, string, string, string) (watch.Interface, error) {
	return nil, errors.New("forbidden")
}

func TestAwaitPropagatedFallsBackToSettleWithoutPodAccess(t *testing.T) {
	cfg := apitest.Shared(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	in, slice := fixture(t, cs, "dataplane-forbidden")
	slice.Endpoints[0].Conditions.Ready = ptr.To(false)
	if _, err := cs.DiscoveryV1().EndpointSlices(slice.Namespace).Update(context.Background(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	const settle = 300 * time.Millisecond
	r, err := endpoints.New(endpoints.Config{Client: endpoints.Dynamic{Client: dyn}, Pods: forbiddenPods{}, Settle: settle})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := r.AwaitPropagated(context.Background(), in, registry.Receipt{}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < settle {
		t.Errorf("returned after %s, before --settle (%s)", took, settle)
	}
}
