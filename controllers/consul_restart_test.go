package controllers_test

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/lastcall-dev/lastcall/controllers/backstop"
	"github.com/lastcall-dev/lastcall/controllers/gate"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

// Consul is recreated at a new address behind the one the controller was given (a Service's
// ClusterIP, a DNS name): the old server is gone, the connections the controller kept to it
// fall silent, and the app registers again with the new server. The backstop must still remove
// a deleting pod's instance from the new server, without a restart.
func TestBackstopReachesConsulRecreatedBehindItsAddress(t *testing.T) {
	cfg := apitest.Shared(t)
	k := newClient(t, cfg)
	namespace(t, k, "recreated")
	consulA := consultest.Start(t)
	front := consultest.NewFront(t, consulA.Addr)
	conf := configure(t, adapters.All(), "--consul-addr=http://"+front.Addr, "--consul-timeout=1s")
	conf.ReconcileTimeout = 5 * time.Second
	startManager(t, cfg, conf)

	pod := managedPod(t, k, "recreated", "web-1", "10.5.2.1", "test.lastcall.dev/hold")
	registerInConsul(t, consulA.Client(t, nil), pod, api.HealthPassing)
	awaitGate(t, k, "recreated", "web-1", corev1.ConditionTrue, gate.ReasonVisible)

	consulA.Kill()
	consulB := consultest.Shared(t)
	front.Switch(consulB.Addr)
	newConsul := consulB.Client(t, nil)
	registerInConsul(t, newConsul, pod, api.HealthPassing)

	if err := k.Delete(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	// The backstop and the drain timeline both read Consul at once: whichever takes a connection
	// kept from before is left waiting on the old server, unless requests end.
	eventually(t, 30*time.Second, "instance removed from the new Consul, recorded, and timed", func(g gomega.Gomega) {
		g.Expect(inConsul(t, newConsul, consulID(pod))).To(gomega.BeFalse())
		p := &corev1.Pod{}
		g.Expect(k.Get(context.Background(), client.ObjectKeyFromObject(pod), p)).To(gomega.Succeed())
		g.Expect(p.Annotations).To(gomega.HaveKey(backstop.DeregisteredAnnotation(consul.Name)))
		g.Expect(p.Annotations["lastcall.dev/drain-timeline"]).To(gomega.ContainSubstring(`{"registry":"consul","out":`))
	})
	release(t, k, pod)
}
