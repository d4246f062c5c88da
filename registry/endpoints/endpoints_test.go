package endpoints_test

import (
	"context"
	"net/url"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onsi/gomega"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
	"github.com/lastcall-dev/lastcall/registry/internal/tcpfault"
)

// One API server serves the whole package; each test works in namespaces of its own.
func TestMain(m *testing.M) { apitest.Main(m) }

// fixture creates a namespace, a pod, a Service and one EndpointSlice listing the pod as ready.
func fixture(t testing.TB, cs kubernetes.Interface, ns string) (registry.Instance, *discoveryv1.EndpointSlice) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.2.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: pod.Name, Namespace: ns, UID: pod.UID}},
			{Addresses: []string{"10.2.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-2", Namespace: ns, UID: types.UID("other")}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return registry.Instance{Namespace: ns, Pod: pod.Name, UID: string(pod.UID), IP: "10.2.0.1"}, slice
}

// watchSignal tells the test when the registry has opened its watch.
type watchSignal struct {
	endpoints.Slices
	opened chan struct{}
}

func (w watchSignal) Watch(ctx context.Context, ns, rv string) (watch.Interface, error) {
	wi, err := w.Slices.Watch(ctx, ns, rv)
	w.opened <- struct{}{}
	return wi, err
}

func newRegistry(t *testing.T, s endpoints.Slices) *endpoints.Registry {
	t.Helper()
	r, err := endpoints.New(endpoints.Config{Client: s})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestAwaitPropagatedFollowsTheWatch(t *testing.T) {
	cfg := apitest.Shared(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := endpoints.Dynamic{Client: dynamic.NewForConfigOrDie(cfg)}
	ctx := context.Background()

	tests := []struct {
		name   string
		change func(t *testing.T, s *discoveryv1.EndpointSlice)
	}{
		{"endpoint flips to ready=false", func(t *testing.T, s *discoveryv1.EndpointSlice) {
			s.Endpoints[0].Conditions.Ready = ptr.To(false)
			s.Endpoints[0].Conditions.Terminating = ptr.To(true)
			if _, err := cs.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"endpoint removed from the slice", func(t *testing.T, s *discoveryv1.EndpointSlice) {
			s.Endpoints = s.Endpoints[1:]
			if _, err := cs.DiscoveryV1().EndpointSlices(s.Namespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"slice deleted", func(t *testing.T, s *discoveryv1.EndpointSlice) {
			if err := cs.DiscoveryV1().EndpointSlices(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, slice := fixture(t, cs, "flip-"+string(rune('a'+i)))
			sig := watchSignal{Slices: dyn, opened: make(chan struct{}, 10)}
			r := newRegistry(t, sig)
			if v, err := r.Visible(ctx, in); err != nil || !v {
				t.Fatalf("Visible = %v, %v; want true", v, err)
			}
			rc, err := r.Deregister(ctx, in)
			if err != nil || len(rc.Removed) != 1 || rc.Removed[0].ID != "10.2.0.1" {
				t.Fatalf("Deregister = %+v, %v", rc, err)
			}
			returned := make(chan time.Time, 1)
			errc := make(chan error, 1)
			go func() {
				err := r.AwaitPropagated(ctx, in, rc)
				returned <- time.Now()
				errc <- err
			}()
			g := gomega.NewWithT(t)
			g.Eventually(sig.opened).WithTimeout(10 * time.Second).Should(gomega.Receive())
			// The change comes "after a delay": the watch is open and idle, and must not return.
			g.Consistently(returned).WithTimeout(200*time.Millisecond).ShouldNot(gomega.Receive(), "returned before the change")
			tt.change(t, slice)
			flipped := time.Now()
			var at time.Time
			g.Eventually(returned).WithTimeout(10*time.Second).Should(gomega.Receive(&at), "AwaitPropagated returns after the change")
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			lag := at.Sub(flipped)
			t.Logf("AwaitPropagated returned %s after the change", lag)
			if lag > 100*time.Millisecond {
				t.Errorf("returned %s after the change, want within 100ms", lag)
			}
		})
	}
}

func TestAwaitPropagatedWithoutEndpoints(t *testing.T) {
	cfg := apitest.Shared(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	_, _ = fixture(t, cs, "other")
	r := newRegistry(t, endpoints.Dynamic{Client: dynamic.NewForConfigOrDie(cfg)})
	lonely := registry.Instance{Namespace: "other", Pod: "batch", UID: "not-behind-a-service"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := r.Visible(ctx, lonely); err != nil || v {
		t.Fatalf("Visible = %v, %v; want false", v, err)
	}
	if err := r.AwaitPropagated(ctx, lonely, registry.Receipt{}); err != nil {
		t.Fatalf("a pod in no slice is propagated at once: %v", err)
	}
}

// With the API server gone mid-drain, the helper still returns inside its budget. The server is
// the shared one: the helper reaches it through a proxy that the test kills.
func TestDrainSurvivesAPIServerStop(t *testing.T) {
	cfg := apitest.Shared(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	in, _ := fixture(t, cs, "fault")
	host, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := tcpfault.New(host.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	viaProxy := rest.CopyConfig(cfg)
	viaProxy.Host = host.Scheme + "://" + proxy.Addr // the certificate names the IP, not the port
	sig := watchSignal{Slices: endpoints.Dynamic{Client: dynamic.NewForConfigOrDie(viaProxy)}, opened: make(chan struct{}, 10)}
	r := newRegistry(t, sig)
	go func() {
		<-sig.opened
		proxy.Kill()
	}()
	timing := prestop.Timing{MaxWait: 3 * time.Second, Quiet: 50 * time.Millisecond}
	start := time.Now()
	res := prestop.Run(context.Background(), timing, in, prestop.Deps{Registries: []registry.Registry{r}})
	elapsed := time.Since(start)
	if elapsed > res.Budget+500*time.Millisecond {
		t.Errorf("returned after %s; budget %s", elapsed, res.Budget)
	}
	if o := res.Registries[0].Outcome; o == prestop.Confirmed {
		t.Errorf("outcome %s without an API server", o)
	}
	t.Logf("outcome %s after %s (%v)", res.Registries[0].Outcome, elapsed, res.Registries[0].Err)
}

// benchRuns numbers the benchmark's namespaces across runs on the shared API server.
var benchRuns atomic.Int64

// BenchmarkDetectionLag measures an endpoint flipped to ready=false (the update is accepted by
// the API server) → AwaitPropagated returns, against a real kube-apiserver. Timed from the
// write request, so the figure includes the write itself: an upper bound.
func BenchmarkDetectionLag(b *testing.B) {
	cfg := apitest.Shared(b)
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	sig := watchSignal{Slices: endpoints.Dynamic{Client: dynamic.NewForConfigOrDie(cfg)}, opened: make(chan struct{}, 10)}
	r, err := endpoints.New(endpoints.Config{Client: sig})
	if err != nil {
		b.Fatal(err)
	}
	var lags []time.Duration
	for b.Loop() {
		in, slice := fixture(b, cs, "bench-"+strconv.Itoa(int(benchRuns.Add(1))))
		returned := make(chan time.Time, 1)
		go func() {
			if err := r.AwaitPropagated(ctx, in, registry.Receipt{}); err != nil {
				b.Error(err)
			}
			returned <- time.Now()
		}()
		<-sig.opened
		slice.Endpoints[0].Conditions.Ready = ptr.To(false)
		sent := time.Now() // upper bound: the lag includes the write itself
		if _, err := cs.DiscoveryV1().EndpointSlices(slice.Namespace).Update(ctx, slice, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, (<-returned).Sub(sent))
	}
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
}
