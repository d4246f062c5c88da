//go:build e2e

package rollout

import (
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

const (
	appPort      = 8080
	grpcPort     = 9090
	gracePeriod  = 30 // seconds; the same for every variant
	hookReserve  = "10s"
	registeredGC = "lastcall.dev/registered"
)

// variant is how the workload shuts down.
type variant struct {
	name     string
	lastcall bool // graceful app, lastcall-prestop hook, readiness gate, managed by the controller
	// handWritten: the hook, env, gate and labels written into the pod template, as without the
	// webhook; otherwise (and unless E2E_PRESTOP_FLAGS adds flags) the template carries only the
	// README's adoption snippet and the webhook injects the rest
	handWritten bool
	sleep       int32 // > 0: plain app with a native preStop sleep of that many seconds
	// tweak, when set, changes the Deployment after it is built (fault cases: grace period,
	// annotations)
	tweak func(*appsv1.Deployment)
}

var (
	withLastcall = variant{name: "lastcall", lastcall: true}
	// control: the same app without lastcall: plain http.Server.Shutdown on SIGTERM, no hook, no gate
	control = variant{name: "control"}
)

func sleepVariant(seconds int32) variant {
	return variant{name: fmt.Sprintf("sleep-%d", seconds), sleep: seconds}
}

// workload is the name of the variant's Deployment, Service and Consul service: each variant has
// its own, so that nothing one run leaves behind can be mistaken for another's.
func (v variant) workload() string { return "web-" + v.name }

func (v variant) service() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: v.workload()},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": v.workload()},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(appPort)},
				{Name: "grpc", Port: grpcPort, TargetPort: intstr.FromInt32(grpcPort)}},
		},
	}
}

func (v variant) deployment(replicas int32) *appsv1.Deployment {
	name := v.workload()
	labels := map[string]string{"app": name}
	podLabels := map[string]string{"app": name}
	annotations := map[string]string{}
	args := []string{
		fmt.Sprintf("--listen=:%d", appPort),
		"--work=" + conf.work.String(),
		"--consul-addr=" + consulURL,
		"--consul-service=" + name,
	}
	c := corev1.Container{
		Name:            "app",
		Image:           appImage,
		ImagePullPolicy: corev1.PullNever,
		// HTTP/1.1 and h2c on appPort; gRPC (the app's --grpc-listen default) on grpcPort
		Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}, {Name: "grpc", ContainerPort: grpcPort}},
		Env: []corev1.EnvVar{
			fieldEnv("POD_NAME", "metadata.name"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			fieldEnv("POD_UID", "metadata.uid"),
			fieldEnv("POD_IP", "status.podIP"),
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(appPort)}},
			PeriodSeconds:    1,
			FailureThreshold: 1,
		},
		SecurityContext: restricted(),
	}
	var gates []corev1.PodReadinessGate
	switch {
	case v.lastcall && !v.handWritten && len(conf.prestopFlags) == 0:
		// label-only adoption: exactly the README's snippet (issue 16)
		for k, val := range adoption.labels {
			podLabels[k] = val
		}
		for k, val := range adoption.annotations {
			annotations[k] = strings.ReplaceAll(val, adoptionService, name)
		}
	case v.lastcall:
		podLabels["lastcall.dev/managed"] = "true"
		labels["lastcall.dev/managed"] = "true"
		annotations["lastcall.dev/consul-service"] = name
		gates = []corev1.PodReadinessGate{{ConditionType: registeredGC}}
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: append([]string{
			"/lastcall-prestop",
			"--reserve=" + hookReserve,
			"--app-admin=http://127.0.0.1:9901",
			"--consul-addr=" + consulURL,
			"--consul-service=" + name,
		}, conf.prestopFlags...)}}}
	case v.sleep > 0:
		args = append(args, "--plain")
		c.Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: int64(v.sleep)}}}
	default:
		args = append(args, "--plain")
	}
	c.Args = args
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			// the same for every variant: never fewer ready pods than wanted, two new ones at a time
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromString("25%")),
				}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            appServiceAccount,
					TerminationGracePeriodSeconds: ptr.To[int64](gracePeriod),
					ReadinessGates:                gates,
					Containers:                    []corev1.Container{c},
				},
			},
		},
	}
	if v.tweak != nil {
		v.tweak(d)
	}
	return d
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

// revisionEnv is what the rolling-update scenario changes in the pod template.
func revisionEnv(n int) corev1.EnvVar {
	return corev1.EnvVar{Name: "E2E_REVISION", Value: strconv.Itoa(n)}
}
