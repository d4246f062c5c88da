//go:build e2e

package rollout

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	consulURL         = "http://consul." + namespace + ".svc.cluster.local:8500"
	appServiceAccount = "web"
	loadgenName       = "loadgen"
	loadgenPort       = 8090
	controlPlaneLabel = "node-role.kubernetes.io/control-plane"
)

// onControlPlane keeps Consul and the load generator off the workers, so that every request and
// every registry update crosses nodes, as it does for callers in a real cluster.
func onControlPlane(spec *corev1.PodSpec) {
	spec.NodeSelector = map[string]string{controlPlaneLabel: ""}
	spec.Tolerations = []corev1.Toleration{{Key: controlPlaneLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
}

func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To[int64](65532),
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func deployConsul(ctx context.Context, image string) error {
	labels := map[string]string{"app": "consul"}
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{
			Name:            "consul",
			Image:           image,
			ImagePullPolicy: corev1.PullNever,
			// one server, the registry callers and lastcall read; -client so pods reach it. Its
			// data lives in the pod's emptyDir, so a restarted server (the faults suite kills
			// it) comes back with its catalog, as a real one does.
			Args:  []string{"agent", "-server", "-bootstrap-expect=1", "-data-dir=/tmp/consul", "-client=0.0.0.0", "-log-level=warn"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8500}},
			Env:   []corev1.EnvVar{{Name: "HOME", Value: "/tmp"}},
			ReadinessProbe: &corev1.Probe{
				// /v1/status/leader answers 200 without a leader; the catalog needs one
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/v1/catalog/nodes", Port: intstr.FromInt32(8500)}},
				PeriodSeconds: 1,
			},
			SecurityContext: restricted(),
			VolumeMounts:    []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}},
		}},
		Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
	}
	onControlPlane(&spec)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "consul", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
		},
	}
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create consul deployment: %w", err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "consul"},
		Spec: corev1.ServiceSpec{Selector: labels,
			Ports: []corev1.ServicePort{{Name: "http", Port: 8500, TargetPort: intstr.FromInt32(8500)}}},
	}
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create consul service: %w", err)
	}
	return nil
}

func deployLoadgen(ctx context.Context) error {
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{
			Name:            "loadgen",
			Image:           loadgenImage,
			ImagePullPolicy: corev1.PullNever,
			Args:            []string{fmt.Sprintf("--listen=:%d", loadgenPort)},
			Ports:           []corev1.ContainerPort{{Name: "http", ContainerPort: loadgenPort}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(loadgenPort)}},
				PeriodSeconds: 1,
			},
			SecurityContext: restricted(),
			// The callers it stands for run on CPUs the draining pods do not share. As a
			// BestEffort pod (CPU weight 2 of 1024) it was the first thing starved when 50 pods
			// drained at once on this machine: it stopped sending for up to 2.8 s in both
			// variants, then sent on what it knew before. A request (no limit: a CPU quota
			// would throttle it) gives it its fair share of the node.
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}},
		}},
	}
	onControlPlane(&spec)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: loadgenName, Labels: map[string]string{"app": loadgenName}}, Spec: spec}
	if _, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create load generator pod: %w", err)
	}
	return nil
}

func waitDeploymentAvailable(ctx context.Context, ns, name string, timeout time.Duration) error {
	var last string
	err := wait(ctx, timeout, func() (bool, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil //nolint:nilerr // not there yet, or a transient error: keep waiting
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		last = fmt.Sprintf("%d/%d available, %d updated, %d in all", d.Status.AvailableReplicas, want, d.Status.UpdatedReplicas, d.Status.Replicas)
		return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas == want &&
			d.Status.UpdatedReplicas == want && d.Status.Replicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("deployment %s/%s not available (%s): %w", ns, name, last, err)
	}
	return nil
}

func waitPodReady(ctx context.Context, ns, name string, timeout time.Duration) error {
	err := wait(ctx, timeout, func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && podReady(p), nil
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s not ready: %w", ns, name, err)
	}
	return nil
}

// wait checks cond every 250 ms until it holds, returns an error, or timeout passes.
func wait(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s: %w", timeout, ctx.Err())
		case <-tick.C:
		}
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
