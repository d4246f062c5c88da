//go:build e2e

package smoke

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	controlPlaneLabel = "node-role.kubernetes.io/control-plane"
	serverName        = "smoke-server"
	clientName        = "smoke-client"
)

var _ = Describe("a kind cluster from hack/kind-up.sh", Ordered, func() {
	var (
		servers   []corev1.Pod
		client    *corev1.Pod
		clusterIP string
	)

	It("has every node Ready, at least two of them workers", func(ctx SpecContext) {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		Expect(err).NotTo(HaveOccurred())
		workers := 0
		for _, n := range nodes.Items {
			Expect(nodeReady(n)).To(BeTrue(), "node %s is not Ready", n.Name)
			if _, cp := n.Labels[controlPlaneLabel]; !cp {
				workers++
			}
		}
		Expect(workers).To(BeNumerically(">=", 2), "workers among %d nodes", len(nodes.Items))
	})

	It("runs a FROM-scratch HTTP server on the workers, one pod per worker", func(ctx SpecContext) {
		_, err := cs.AppsV1().Deployments(namespace).Create(ctx, serverDeployment(), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			d, err := cs.AppsV1().Deployments(namespace).Get(ctx, serverName, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(d.Status.ReadyReplicas).To(BeEquivalentTo(2))
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())

		servers = readyPods(ctx, "app="+serverName)
		Expect(servers).To(HaveLen(2))
		for _, p := range servers {
			GinkgoWriter.Printf("server %s on node %s, IP %s\n", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
		Expect(servers[0].Spec.NodeName).NotTo(Equal(servers[1].Spec.NodeName))
		for _, p := range servers {
			n, err := cs.CoreV1().Nodes().Get(ctx, p.Spec.NodeName, metav1.GetOptions{})
			Expect(err).NotTo(HaveOccurred())
			Expect(n.Labels).NotTo(HaveKey(controlPlaneLabel), "server pod %s runs on the control plane", p.Name)
		}
	}, NodeTimeout(4*time.Minute))

	It("reaches the ClusterIP Service from a client pod on another node, every backend answering", func(ctx SpecContext) {
		svc, err := cs.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: serverName},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{"app": serverName},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		clusterIP = svc.Spec.ClusterIP

		_, err = cs.CoreV1().Pods(namespace).Create(ctx, clientPod(), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Eventually(func(g Gomega) {
			p, err := cs.CoreV1().Pods(namespace).Get(ctx, clientName, metav1.GetOptions{})
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning))
			client = p
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Succeed())
		GinkgoWriter.Printf("client %s on node %s, IP %s; Service %s\n", client.Name, client.Spec.NodeName, client.Status.PodIP, clusterIP)
		for _, s := range servers {
			Expect(client.Spec.NodeName).NotTo(Equal(s.Spec.NodeName), "client and server %s share a node", s.Name)
		}

		// Requests on new connections spread over both backends, each on another node than the client.
		url := "http://" + clusterIP + "/"
		Eventually(func(g Gomega) {
			out, err := run(ctx, "exec", clientName, "--", "/smokeapp", "get", "-n", "20", url)
			g.Expect(err).NotTo(HaveOccurred(), out)
			for _, s := range servers {
				g.Expect(out).To(ContainSubstring("hello from "+s.Name), "no answer from %s (node %s)", s.Name, s.Spec.NodeName)
			}
			GinkgoWriter.Printf("20 requests to %s:\n%s", url, out)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(2 * time.Second).Should(Succeed())
	}, NodeTimeout(4*time.Minute))

	It("resolves the Service's DNS name to its ClusterIP and answers on it", func(ctx SpecContext) {
		name := fmt.Sprintf("%s.%s.svc.cluster.local", serverName, namespace)
		Eventually(func(g Gomega) {
			out, err := run(ctx, "exec", clientName, "--", "/smokeapp", "resolve", name)
			g.Expect(err).NotTo(HaveOccurred(), out)
			g.Expect(strings.Fields(out)).To(ContainElement(clusterIP))
			GinkgoWriter.Printf("%s resolves to %s", name, out)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		out, err := run(ctx, "exec", clientName, "--", "/smokeapp", "get", "-n", "3", "http://"+serverName+"/")
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("hello from " + serverName))
	}, NodeTimeout(2*time.Minute))

	It("shows a server's log with kubectl logs", func(ctx SpecContext) {
		for _, s := range servers {
			out, err := run(ctx, "logs", s.Name)
			Expect(err).NotTo(HaveOccurred(), out)
			Expect(out).To(ContainSubstring("serving on :8080 as " + s.Name))
			Expect(out).To(ContainSubstring("request GET / from"))
		}
	}, NodeTimeout(time.Minute))

	It("runs a pod's preStop exec hook when the pod is deleted, before SIGTERM", func(ctx SpecContext) {
		victim := servers[0].Name
		follow, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := cs.CoreV1().Pods(namespace).GetLogs(victim, &corev1.PodLogOptions{Follow: true}).Stream(follow)
		Expect(err).NotTo(HaveOccurred())
		defer stream.Close()
		lines := make(chan string, 100)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(stream)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()

		Expect(cs.CoreV1().Pods(namespace).Delete(ctx, victim, metav1.DeleteOptions{})).To(Succeed())
		var seen []string
		hook, term := -1, -1
		for hook < 0 || term < 0 {
			select {
			case l, ok := <-lines:
				if !ok {
					Fail(fmt.Sprintf("log stream of %s ended; lines seen: %q", victim, seen))
				}
				seen = append(seen, l)
				if strings.HasPrefix(l, "prestop hook ran in "+victim) && hook < 0 {
					hook = len(seen)
				}
				if strings.HasPrefix(l, "received terminated") && term < 0 {
					term = len(seen)
				}
			case <-ctx.Done():
				Fail(fmt.Sprintf("no preStop and SIGTERM lines from %s; lines seen: %q", victim, seen))
			}
		}
		Expect(hook).To(BeNumerically("<", term), "the hook must run before SIGTERM: %q", seen)
		GinkgoWriter.Printf("log of %s from the hook on:\n%s\n", victim, strings.Join(seen[hook-1:], "\n"))
	}, NodeTimeout(2*time.Minute))
})

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readyPods(ctx context.Context, selector string) []corev1.Pod {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	Expect(err).NotTo(HaveOccurred())
	var out []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			out = append(out, p)
		}
	}
	return out
}

func serverDeployment() *appsv1.Deployment {
	l := map[string]string{"app": serverName}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: serverName},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: l},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: l},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](15),
					Affinity: &corev1.Affinity{
						NodeAffinity: &corev1.NodeAffinity{
							RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
								NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
									{Key: controlPlaneLabel, Operator: corev1.NodeSelectorOpDoesNotExist},
								}}},
							},
						},
						PodAntiAffinity: &corev1.PodAntiAffinity{
							RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
								LabelSelector: &metav1.LabelSelector{MatchLabels: l},
								TopologyKey:   "kubernetes.io/hostname",
							}},
						},
					},
					Containers: []corev1.Container{{
						Name:            "server",
						Image:           smokeImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            []string{"serve", "-listen", ":8080"},
						Env: []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{
							FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"},
						}}},
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
							PeriodSeconds: 2,
						},
						Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
							Exec: &corev1.ExecAction{Command: []string{"/smokeapp", "prestop"}},
						}},
					}},
				},
			},
		},
	}
}

// clientPod runs on the control-plane node, so every server pod is on another node.
func clientPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: clientName, Labels: map[string]string{"app": clientName}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			NodeSelector:                  map[string]string{controlPlaneLabel: ""},
			Tolerations: []corev1.Toleration{{
				Key: controlPlaneLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule,
			}},
			Containers: []corev1.Container{{
				Name:            "client",
				Image:           smokeImage,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"sleep"},
			}},
		},
	}
}
