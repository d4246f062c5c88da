package webhook

import (
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/lastcall-dev/lastcall/controllers/inject"
)

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = append(l.d, d)
}

// quantile is the q-quantile (nearest rank) in milliseconds.
func (l *latencies) quantile(q float64) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(l.d))
	i := int(q*float64(len(s))+0.5) - 1
	return float64(s[min(max(i, 0), len(s)-1)]) / float64(time.Millisecond)
}

// BenchmarkAdmission creates 50 pods at once per iteration, through the real API server and the
// real webhook over TLS, and reports the webhook's own time per request (HTTP handler: decode,
// inject, patch, encode) and each pod creation's round trip, with and without the webhook
// (a namespace it does not select), as p50 and p99 in milliseconds. LASTCALL_BENCH_CONCURRENT
// changes the 50 (1: one creation at a time).
//
//	go test -run '^$' -bench Admission -benchtime 20x ./controllers/webhook/
func BenchmarkAdmission(b *testing.B) {
	concurrent := 50
	if n, err := strconv.Atoi(os.Getenv("LASTCALL_BENCH_CONCURRENT")); err == nil {
		concurrent = n
	}
	served := &latencies{}
	timed := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			began := time.Now()
			h.ServeHTTP(w, r)
			served.add(time.Since(began))
		})
	}
	e := startWrapped(b, "inject-bench", nil, timed, "bench-injected", "bench-plain")
	e.namespace(b, "bench-injected", map[string]string{inject.Label: "true"})
	e.namespace(b, "bench-plain", nil)
	e.waitServing(b, "bench-injected")
	// the default client rate limit (5/s) would measure the client, not admission
	cfg := *e.cfg
	cfg.QPS, cfg.Burst = 1000, 1000
	kube := kubernetes.NewForConfigOrDie(&cfg)
	*served = latencies{}

	withHook, without := &latencies{}, &latencies{}
	burst := func(ns string, into *latencies) {
		var wg sync.WaitGroup
		for range concurrent {
			wg.Go(func() {
				began := time.Now()
				p, err := kube.CoreV1().Pods(ns).Create(e.ctx, plainPod(nil, nil), metav1.CreateOptions{})
				into.add(time.Since(began))
				if err != nil {
					b.Error(err)
				} else if injected(p) != (ns == "bench-injected") {
					b.Errorf("pod %s/%s injected=%v", ns, p.Name, injected(p))
				}
			})
		}
		wg.Wait()
	}
	b.ResetTimer()
	for range b.N {
		burst("bench-plain", without)
		burst("bench-injected", withHook)
	}
	b.StopTimer()
	b.ReportMetric(served.quantile(0.5), "webhook-p50-ms")
	b.ReportMetric(served.quantile(0.99), "webhook-p99-ms")
	b.ReportMetric(withHook.quantile(0.5), "create-p50-ms")
	b.ReportMetric(withHook.quantile(0.99), "create-p99-ms")
	b.ReportMetric(without.quantile(0.5), "plain-create-p50-ms")
	b.ReportMetric(without.quantile(0.99), "plain-create-p99-ms")
	b.ReportMetric(0, "ns/op")
	cleanupPods(b, kube, "bench-injected", "bench-plain")
}

func cleanupPods(b *testing.B, kube kubernetes.Interface, namespaces ...string) {
	for _, ns := range namespaces {
		if err := kube.CoreV1().Pods(ns).DeleteCollection(b.Context(), metav1.DeleteOptions{GracePeriodSeconds: new(int64)}, metav1.ListOptions{}); err != nil {
			b.Log(err)
		}
	}
}

// BenchmarkHandle is the handler's own CPU cost for one pod (decode, inject, patch, encode of
// the response), without TLS, HTTP or the API server.
//
//	go test -run '^$' -bench Handle -benchmem ./controllers/webhook/
func BenchmarkHandle(b *testing.B) {
	raw, err := json.Marshal(plainPod(nil, map[string]string{"lastcall.dev/consul-service": "web"}))
	if err != nil {
		b.Fatal(err)
	}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Object: runtime.RawExtension{Raw: raw},
	}}
	h := &Injector{Options: testInject()}
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(b.Context(), req); len(resp.Patches) == 0 {
			b.Fatal("no patch")
		}
	}
}
