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

// A pod that no Service selects is never listed in an EndpointSlice: the gate opens without
// waiting for one (the trap of a label-only workload without a Service), while a pod a Service
// selects still waits for its slice.
func TestGateDoesNotWaitForSlicesThatWillNeverListThePod(t *testing.T) {
	h := setup(t, "noservice", false)
	startManager(t, h.cfg, h.conf)
	ctx := context.Background()
	if err := h.k.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "noservice", Name: "api"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"}, Ports: []corev1.ServicePort{{Port: 80}}}}); err != nil {
		t.Fatal(err)
	}
	pod := func(name string, labels map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "noservice", Name: name, Labels: labels}}
	}
	lonely := runningPod(t, h.k, pod("worker-1", map[string]string{"app": "worker"}), "10.5.3.1")
	awaitGate(t, h.k, "noservice", lonely.Name, corev1.ConditionTrue, gate.ReasonUnlisted)

	selected := runningPod(t, h.k, pod("api-1", map[string]string{"app": "api"}), "10.5.3.2")
	awaitGate(t, h.k, "noservice", selected.Name, corev1.ConditionFalse, gate.ReasonNotVisible)
	gomega.NewWithT(t).Consistently(func(g gomega.Gomega) {
		cond, err := gateCondition(h.k, "noservice", selected.Name)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cond).NotTo(gomega.BeNil())
		g.Expect(cond.Reason).To(gomega.Equal(gate.ReasonNotVisible))
	}).WithTimeout(time.Second).WithPolling(100 * time.Millisecond).Should(gomega.Succeed())
	listInSlice(t, h.k, selected)
	awaitGate(t, h.k, "noservice", selected.Name, corev1.ConditionTrue, gate.ReasonVisible)
}
