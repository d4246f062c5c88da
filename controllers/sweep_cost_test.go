package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/backstop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consul"
)

// countingReader counts the pods read through it.
type countingReader struct {
	client.Reader
	mu   sync.Mutex
	keys []types.NamespacedName
}

func (c *countingReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.mu.Lock()
	c.keys = append(c.keys, key)
	c.mu.Unlock()
	return c.Reader.Get(ctx, key, obj, opts...)
}

func (c *countingReader) read(ns string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, k := range c.keys {
		if k.Namespace == ns {
			out = append(out, k.Name)
		}
	}
	slices.Sort(out)
	return out
}

// failFirst fails the first removal it is asked for.
type failFirst struct {
	backstop.Catalog
	failed atomic.Bool
}

func (f *failFirst) Remove(ctx context.Context, r registry.Registration) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("consul: 500 No cluster leader")
	}
	return f.Catalog.Remove(ctx, r)
}

// The sweeper reads pods from the cache, which holds every pod; the API server is asked only
// to confirm the removals the cache suggests. One removal that fails does not stop the sweep.
func TestSweeperReadsTheCacheAndSurvivesAFailedRemoval(t *testing.T) {
	h := setup(t, "sweepcost", true)
	k, cc := h.k, h.consul
	ctx := context.Background()
	var alive, gone []*corev1.Pod
	for i := range 3 {
		alive = append(alive, managedPod(t, k, "sweepcost", fmt.Sprintf("managed-%d", i), fmt.Sprintf("10.5.3.%d", i)))
		// Pods lastcall does not manage register in Consul too; their instances are swept alike.
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "sweepcost", Name: fmt.Sprintf("plain-%d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}}
		if err := k.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
		alive = append(alive, p)
	}
	for i := range 2 {
		gone = append(gone, managedPod(t, k, "sweepcost", fmt.Sprintf("gone-%d", i), fmt.Sprintf("10.5.3.%d", 10+i)))
	}
	for _, p := range append(slices.Clone(alive), gone...) {
		registerInConsul(t, cc, p, api.HealthPassing)
	}

	podCache, err := cache.New(h.cfg, cache.Options{Scheme: scheme, ByObject: controllers.CacheOptions().ByObject})
	if err != nil {
		t.Fatal(err)
	}
	cacheCtx, stop := context.WithCancel(ctx)
	t.Cleanup(stop)
	go func() { _ = podCache.Start(cacheCtx) }()
	for _, p := range gone {
		if err := k.Delete(ctx, p, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 15*time.Second, "the cache saw the deletions", func(g gomega.Gomega) {
		for _, p := range gone {
			g.Expect(podCache.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})).NotTo(gomega.Succeed())
		}
	})

	regs, err := h.conf.Set.Build(registry.Env{Binary: registry.Controller}, []string{consul.Name})
	if err != nil {
		t.Fatal(err)
	}
	catalog := &failFirst{Catalog: regs[0].(backstop.Catalog)}
	cached, apiReads := &countingReader{Reader: podCache}, &countingReader{Reader: k}
	sw := &backstop.Sweeper{Registry: catalog, Pods: cached, API: apiReads}
	failuresBefore := sweepFailures(t)

	n, err := sw.Sweep(ctx)
	if err == nil || n != 1 {
		t.Fatalf("first sweep removed %d (err %v); want 1 removed and the failed removal reported", n, err)
	}
	if got := sweepFailures(t) - failuresBefore; got != 1 {
		t.Errorf("lastcall_sweep_failures_total grew by %v, want 1", got)
	}
	if got, want := apiReads.read("sweepcost"), []string{"gone-0", "gone-1"}; !slices.Equal(got, want) {
		t.Errorf("pods read from the API server: %v, want only the removal candidates %v", got, want)
	}
	if got := len(cached.read("sweepcost")); got != len(alive)+len(gone) {
		t.Errorf("%d pods read from the cache, want one per instance (%d)", got, len(alive)+len(gone))
	}
	if n, err := sw.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("second sweep removed %d (err %v); want the one left", n, err)
	}
	for _, p := range alive {
		if !inConsul(t, cc, consulID(p)) {
			t.Errorf("%s swept although its pod is alive", p.Name)
		}
	}
	for _, p := range gone {
		if inConsul(t, cc, consulID(p)) {
			t.Errorf("%s still registered after two sweeps", p.Name)
		}
	}
}

// sweepFailures reads lastcall_sweep_failures_total{registry="consul"} as the metrics endpoint
// serves it.
func sweepFailures(t *testing.T) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "lastcall_sweep_failures_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "registry" && l.GetValue() == consul.Name {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
