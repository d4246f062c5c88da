package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

// BenchmarkScale runs the shipped controller binary against a real API server holding
// LASTCALL_SCALE_DEPLOYMENTS managed Deployments (default 500) of 10 gated pods each, and
// LASTCALL_SCALE_PLAIN Deployments that lastcall does not manage (default 0) of 10 plain pods
// each, and reports the time until every managed pod's gate is open, reconciles per second during
// that sync, reconciles in the quiet 10 s that follow (a storm would show here), and the
// controller's peak RSS.
func BenchmarkScale(b *testing.B) {
	deployments := 500
	if v, err := strconv.Atoi(os.Getenv("LASTCALL_SCALE_DEPLOYMENTS")); err == nil && v > 0 {
		deployments = v
	}
	plain, _ := strconv.Atoi(os.Getenv("LASTCALL_SCALE_PLAIN"))
	const perDeployment = 10
	_, cfg := apitest.Start(b)
	cfg.QPS, cfg.Burst = 500, 1000
	cs := kubernetes.NewForConfigOrDie(cfg)
	bin := filepath.Join(b.TempDir(), "lastcall-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	kubeconfig := writeKubeconfig(b, cfg)

	for b.Loop() {
		start := time.Now()
		populate(b, cs, deployments, plain, perDeployment)
		b.Logf("created %d managed and %d plain Deployments and %d pods in %s", deployments, plain, (deployments+plain)*perDeployment, time.Since(start).Round(time.Second))

		metricsAddr := freeAddr(b)
		cmd := exec.Command(bin, "--kubeconfig", kubeconfig, "--metrics-bind-address", metricsAddr, "--health-probe-bind-address", "0", "--zap-log-level", "error")
		cmd.Stderr = os.Stderr
		started := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		total := deployments * perDeployment
		for openGates(b, cs) < total {
			if time.Since(started) > 10*time.Minute {
				b.Fatalf("only %d of %d gates open after 10 minutes", openGates(b, cs), total)
			}
			time.Sleep(time.Second) // the sync is what is measured; one list per second suffices
		}
		sync := time.Since(started)
		afterSync := reconciles(b, metricsAddr)
		time.Sleep(10 * time.Second) // a quiet period: nothing changes, so nothing should reconcile
		quiet := reconciles(b, metricsAddr) - afterSync
		rss := peakRSS(b, cmd.Process.Pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()

		b.ReportMetric(sync.Seconds(), "sync-s")
		b.ReportMetric(afterSync/sync.Seconds(), "reconciles/s")
		b.ReportMetric(quiet, "reconciles-in-quiet-10s")
		b.ReportMetric(rss, "peak-RSS-MiB")
	}
}

func populate(b *testing.B, cs kubernetes.Interface, deployments, plain, per int) {
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for d := range deployments + plain {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			create := createWorkload
			if d >= deployments {
				create = createPlainWorkload
			}
			if err := create(ctx, cs, d, per); err != nil {
				b.Error(err)
			}
		})
	}
	wg.Wait()
}

// createPlainWorkload makes a Deployment lastcall does not manage, of the size kubectl apply
// leaves (its last-applied-configuration, env, probes, resources), and its plain pods.
func createPlainWorkload(ctx context.Context, cs kubernetes.Interface, d, per int) error {
	name := fmt.Sprintf("plain-%d", d)
	labels := map[string]string{"app": name}
	c := corev1.Container{Name: "web", Image: "web:1.2.3",
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
		Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}
	for i := range 10 {
		c.Env = append(c.Env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", i), Value: strings.Repeat("v", 40)})
	}
	spec := corev1.PodSpec{Containers: []corev1.Container{c}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(per)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}
	applied, err := json.Marshal(dep)
	if err != nil {
		return err
	}
	dep.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(applied)}
	if _, err := cs.AppsV1().Deployments("scale").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return err
	}
	for p := range per {
		if _, err := cs.CoreV1().Pods("scale").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, p), Labels: labels}, Spec: spec}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func createWorkload(ctx context.Context, cs kubernetes.Interface, d, per int) error {
	name := fmt.Sprintf("web-%d", d)
	labels := map[string]string{managed.Label: "true", "app": name}
	gate := []corev1.PodReadinessGate{{ConditionType: managed.Gate}}
	hook := &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"/lastcall-prestop"}}}}
	spec := corev1.PodSpec{ReadinessGates: gate, Containers: []corev1.Container{{Name: "web", Image: "web:1", Lifecycle: hook}}}
	zero := intstr.FromInt32(0)
	if _, err := cs.AppsV1().Deployments("scale").Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(per)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Strategy: appsv1.DeploymentStrategy{RollingUpdate: &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: name}}, AddressType: discoveryv1.AddressTypeIPv4}
	for p := range per {
		pod, err := cs.CoreV1().Pods("scale").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, p), Labels: labels}, Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		ip := fmt.Sprintf("10.%d.%d.%d", 100+d/250, d%250, p+1)
		pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		if _, err := cs.CoreV1().Pods("scale").UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
			return err
		}
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "scale", Name: pod.Name, UID: pod.UID}})
	}
	_, err := cs.DiscoveryV1().EndpointSlices("scale").Create(ctx, slice, metav1.CreateOptions{})
	return err
}

func openGates(b *testing.B, cs kubernetes.Interface) int {
	pods, err := cs.CoreV1().Pods("scale").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for i := range pods.Items {
		if c := managed.GateCondition(&pods.Items[i]); c != nil && c.Status == corev1.ConditionTrue {
			n++
		}
	}
	return n
}

// reconciles sums controller_runtime_reconcile_total over every controller.
func reconciles(b *testing.B, addr string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "controller_runtime_reconcile_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// peakRSS reads VmHWM (the process's peak resident set) in MiB.
func peakRSS(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM in /proc/PID/status")
	return 0
}

func writeKubeconfig(b *testing.B, cfg *rest.Config) string {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["envtest"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "envtest"}
	kc.CurrentContext = "envtest"
	path := filepath.Join(b.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		b.Fatal(err)
	}
	return path
}
