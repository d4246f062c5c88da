package controllers_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/gate"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
)

// countingProxy forwards to Consul and counts the reads of one service's health.
type countingProxy struct {
	proxy *httputil.ReverseProxy
	path  string
	reads atomic.Int64
}

func (c *countingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == c.path {
		c.reads.Add(1)
	}
	c.proxy.ServeHTTP(w, r)
}

// Draining pods are timed in Consul from one watch of their service, not by reading Consul for
// each pod at every look.
func TestObserverReadsConsulOncePerChangeNotPerPod(t *testing.T) {
	h := setup(t, "observecost", true)
	k, cc := h.k, h.consul
	ctx := context.Background()
	target, err := url.Parse("http://" + consultest.Shared(t).Addr)
	if err != nil {
		t.Fatal(err)
	}
	// A service of this test's own: pods other tests left behind are read under theirs.
	const service = "observecost"
	counter := &countingProxy{proxy: httputil.NewSingleHostReverseProxy(target), path: "/v1/health/service/" + service}
	srv := &http.Server{Handler: counter, ReadHeaderTimeout: time.Second}
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(front) }()
	t.Cleanup(func() { _ = srv.Close() })
	h.conf = configure(t, adapters.All(), "--consul-addr=http://"+front.Addr().String())
	startManager(t, h.cfg, h.conf)

	const draining = 5
	var pods []*corev1.Pod
	for i := range draining {
		p := managedPod(t, k, "observecost", fmt.Sprintf("web-%d", i), fmt.Sprintf("10.5.4.%d", i), "test.lastcall.dev/hold")
		update(t, k, p, func(p *corev1.Pod) { p.Annotations[managed.ServiceAnnotation(consul.Name)] = service })
		id := consulID(p)
		if err := cc.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: service, Address: p.Status.PodIP,
			Meta:  map[string]string{consul.DefaultMetaKey: string(p.UID), consul.MetaPodName: p.Name, consul.MetaPodNamespace: p.Namespace},
			Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Agent().ServiceDeregister(id) })
		pods = append(pods, p)
	}
	for _, p := range pods {
		awaitGate(t, k, "observecost", p.Name, corev1.ConditionTrue, gate.ReasonVisible)
	}
	before := counter.reads.Load()
	for _, p := range pods {
		if err := k.Delete(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 20*time.Second, "every pod's Consul stage recorded", func(g gomega.Gomega) {
		for _, p := range pods {
			got := &corev1.Pod{}
			g.Expect(k.Get(ctx, client.ObjectKeyFromObject(p), got)).To(gomega.Succeed())
			g.Expect(got.Annotations["lastcall.dev/drain-timeline"]).To(gomega.ContainSubstring(`{"registry":"consul","out":`))
		}
	})
	// The pods keep draining (their containers run on): a second of looks at them.
	gomega.NewWithT(t).Consistently(func(g gomega.Gomega) {
		got := &corev1.Pod{}
		g.Expect(k.Get(ctx, client.ObjectKeyFromObject(pods[0]), got)).To(gomega.Succeed())
		g.Expect(got.Annotations["lastcall.dev/drain-timeline"]).NotTo(gomega.ContainSubstring(`"reported":true`))
	}).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
	reads := counter.reads.Load() - before
	t.Logf("%d reads of the service's health while %d pods drained", reads, draining)
	// One watch: a first read, then one per change (each pod's removal), whatever the looks.
	if reads > 2*draining+2 {
		t.Errorf("%d reads of the service's health for %d draining pods; want at most %d", reads, draining, 2*draining+2)
	}
	for _, p := range pods {
		update(t, k, p, func(p *corev1.Pod) {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "web", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{FinishedAt: metav1.Now()}}}}
		})
	}
	eventually(t, 20*time.Second, "every timeline reported", func(g gomega.Gomega) {
		for _, p := range pods {
			got := &corev1.Pod{}
			g.Expect(k.Get(ctx, client.ObjectKeyFromObject(p), got)).To(gomega.Succeed())
			g.Expect(strings.Contains(got.Annotations["lastcall.dev/drain-timeline"], `"reported":true`)).To(gomega.BeTrue())
		}
	})
	for _, p := range pods {
		release(t, k, p)
	}
}
