package controllers_test

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/lastcall-dev/lastcall/controllers/gate"
)

// The readiness gate alone opts a pod in: without the managed label the gate still opens.
func TestGateOpensForAPodWithTheGateAlone(t *testing.T) {
	h := setup(t, "gatealone", true)
	startManager(t, h.cfg, h.conf)
	pod := listedPod(t, h.k, "gatealone", "web-1", "10.5.2.2", map[string]string{"app": "web"})
	registerInConsul(t, h.consul, pod, api.HealthPassing)
	awaitGate(t, h.k, "gatealone", "web-1", corev1.ConditionTrue, gate.ReasonVisible)

	// A pod with neither is not lastcall's: no condition, however long.
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "gatealone", Name: "plain", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}}}
	if err := h.k.Create(context.Background(), plain); err != nil {
		t.Fatal(err)
	}
	gomega.NewWithT(t).Consistently(func(g gomega.Gomega) {
		cond, err := gateCondition(h.k, "gatealone", "plain")
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cond).To(gomega.BeNil())
	}).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
}
