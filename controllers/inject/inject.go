// Package inject adds lastcall to a pod at admission: the lastcall-prestop binary (copied by an
// init container into an emptyDir, or mounted from its image as an image volume), the
// downward-API env it reads, the preStop exec hook, the registration readiness gate and the
// managed label. Pod is a pure function: no API calls, the same input gives the same output,
// and an injected pod passes through unchanged, so re-invocation is safe.
package inject

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/warnings"
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
)

// Names under lastcall.dev/ and in the pod.
const (
	// Label "true" on a namespace or a pod opts it in (the webhook's selectors); "false" on a pod
	// opts that pod out of a labelled namespace.
	Label = "lastcall.dev/inject"
	// ContainerAnnotation names the container to drain (default: the one named by
	// kubectl.kubernetes.io/default-container, else the first).
	ContainerAnnotation = "lastcall.dev/container"
	// AppAdminAnnotation is the app's admin URL, passed as lastcall-prestop --app-admin.
	AppAdminAnnotation = "lastcall.dev/app-admin"
	// InjectedAnnotation marks a pod the webhook injected; its value is the helper's source
	// (Mode), so a managed pod without it was created while the webhook was down.
	InjectedAnnotation = "lastcall.dev/injected"
	// DefaultContainerAnnotation is kubectl's choice of a pod's main container.
	DefaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

	// HelperName names the init container and the volume that carry the helper.
	HelperName = "lastcall-helper"
	// MountPath is where the target container sees the helper's volume (read-only).
	MountPath = "/lastcall"
	// HelperPath is the hook's command; the image keeps the binary at /lastcall-prestop.
	HelperPath = MountPath + "/lastcall-prestop"
	// imageBinary is where the lastcall-prestop image keeps its binary, and imageUser its user.
	imageBinary = "/lastcall-prestop"
	imageUser   = 65532
)

// Mode is how the helper binary reaches the pod.
type Mode string

// The modes.
const (
	// ModeInitContainer copies the binary from the lastcall-prestop image into an emptyDir with an
	// init container: works on every cluster.
	ModeInitContainer Mode = "init-container"
	// ModeImageVolume mounts the lastcall-prestop image itself as a volume (KEP-4639): no init
	// container and no copy, on clusters with image volumes enabled.
	ModeImageVolume Mode = "image-volume"
)

// Modes lists the valid modes, for flags.
var Modes = []string{string(ModeInitContainer), string(ModeImageVolume)}

// Options are the webhook's settings; the pod's annotations refine them per pod.
type Options struct {
	// Image is the lastcall-prestop image.
	Image      string
	PullPolicy corev1.PullPolicy
	Mode       Mode
	// ConsulAddr becomes LASTCALL_CONSUL_ADDR in pods that use Consul and set no Consul address
	// of their own; it may reference $(HOST_IP) (a Consul agent on every node), which then gets
	// its downward-API variable.
	ConsulAddr string
	// Drain is the budget of pods without lastcall.dev/drain-budget and lastcall.dev/reserve:
	// passed to the hook, and compared with the grace period.
	Drain prestop.Drain
	// Adapters are the registries lastcall.dev/registries may name.
	Adapters []registry.Adapter
	// Resources of the init container.
	Resources corev1.ResourceRequirements
}

// DefaultResources are the init container's: a file copy.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
	}
}

// Result is what Pod did.
type Result struct {
	// Pod is the injected copy; equal to the input when nothing changed.
	Pod *corev1.Pod
	// Warnings go to the client as admission warnings: settings that cannot work as written.
	Warnings []string
	// Changed reports whether Pod differs from the input.
	Changed bool
}

// warnPrefix names the source of a warning in kubectl's output.
const warnPrefix = Label + ": "

// Pod injects lastcall into a copy of in. It never fails: what it cannot do it skips and says
// why in a warning, since availability comes first (the pod is created either way). The copy
// shares with in what the injection never writes (see writable): change neither afterwards.
func Pod(in *corev1.Pod, o Options) Result {
	pod := writable(in)
	res := Result{Pod: pod}
	warn := func(format string, args ...any) {
		res.Warnings = append(res.Warnings, warnPrefix+fmt.Sprintf(format, args...))
	}
	if pod.Labels[Label] == "false" {
		return res
	}
	if v, ok := pod.Labels[managed.Label]; ok && v != "true" {
		warn("label %s=%q: not injected; remove the label, or opt the pod out with %s=false", managed.Label, v, Label)
		return res
	}
	target, why := targetContainer(pod)
	if target < 0 {
		warn("%s; not injected", why)
		return res
	}

	addHelper(pod, target, o)
	c := &pod.Spec.Containers[target]
	flags := hookFlags(pod, c, o, warn)
	usesConsul := slices.Contains(flags.registries, "consul")
	for _, e := range envVars(usesConsul && !hasEnv(c, "LASTCALL_CONSUL_ADDR", "CONSUL_HTTP_ADDR"), o.ConsulAddr) {
		addEnv(c, e, warn)
	}
	if usesConsul && o.ConsulAddr == "" && !hasEnv(c, "LASTCALL_CONSUL_ADDR", "CONSUL_HTTP_ADDR") {
		warn("the pod names a Consul service but container %s sets no CONSUL_HTTP_ADDR and the webhook has no --inject-consul-addr: lastcall-prestop cannot deregister it from Consul", c.Name)
	}
	setHook(c, flags.args, warn)

	if !managed.HasGate(pod) {
		pod.Spec.ReadinessGates = append(pod.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: managed.Gate})
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	pod.Labels[managed.Label] = "true"
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	if _, ok := pod.Annotations[InjectedAnnotation]; !ok {
		pod.Annotations[InjectedAnnotation] = string(mode(o))
	}
	if pod.Spec.AutomountServiceAccountToken != nil && !*pod.Spec.AutomountServiceAccountToken {
		warn("automountServiceAccountToken is false: lastcall-prestop cannot read its pod's deletionTimestamp or EndpointSlices and drains on --max-wait alone")
	}
	res.Warnings = append(res.Warnings, graceWarnings(pod, o.Drain)...)
	res.Changed = !equality.Semantic.DeepEqual(in, pod)
	return res
}

// writable copies what Pod writes (labels, annotations, volumes, init containers, readiness
// gates, and each container's env, volume mounts and lifecycle) and shares the rest with in.
// A deep copy, and comparing it field by field with in, cost the webhook more CPU than the
// injection itself; shared fields compare by pointer.
func writable(in *corev1.Pod) *corev1.Pod {
	pod := *in
	pod.Labels, pod.Annotations = maps.Clone(in.Labels), maps.Clone(in.Annotations)
	pod.Spec.Volumes = slices.Clone(in.Spec.Volumes)
	pod.Spec.InitContainers = slices.Clone(in.Spec.InitContainers)
	pod.Spec.ReadinessGates = slices.Clone(in.Spec.ReadinessGates)
	pod.Spec.Containers = slices.Clone(in.Spec.Containers)
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.Env, c.VolumeMounts = slices.Clone(c.Env), slices.Clone(c.VolumeMounts)
		c.Lifecycle = c.Lifecycle.DeepCopy()
	}
	return &pod
}

func mode(o Options) Mode {
	if o.Mode == "" {
		return ModeInitContainer
	}
	return o.Mode
}

// targetContainer picks the container to drain, or says why none can be.
func targetContainer(pod *corev1.Pod) (int, string) {
	key, name := ContainerAnnotation, pod.Annotations[ContainerAnnotation]
	if name == "" {
		key, name = DefaultContainerAnnotation, pod.Annotations[DefaultContainerAnnotation]
	}
	if name == "" {
		if len(pod.Spec.Containers) == 0 {
			return -1, "the pod has no containers"
		}
		return 0, ""
	}
	if i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == name }); i >= 0 {
		return i, ""
	}
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	if slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == name }) {
		return -1, fmt.Sprintf("annotation %s=%q names an init container (native sidecars are left alone); want one of the containers %s", key, name, strings.Join(names, ", "))
	}
	return -1, fmt.Sprintf("annotation %s=%q: no container of that name; want one of %s", key, name, strings.Join(names, ", "))
}

// addHelper makes the binary available at HelperPath in container target.
func addHelper(pod *corev1.Pod, target int, o Options) {
	if !slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == HelperName }) {
		vol := corev1.Volume{Name: HelperName}
		if mode(o) == ModeImageVolume {
			vol.Image = &corev1.ImageVolumeSource{Reference: o.Image, PullPolicy: o.PullPolicy}
		} else {
			// the static binary is about 15 MB
			vol.EmptyDir = &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("32Mi"))}
		}
		pod.Spec.Volumes = append(pod.Spec.Volumes, vol)
	}
	if mode(o) == ModeInitContainer && !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == HelperName }) {
		// First: it needs nothing (no network, no other init container) and takes milliseconds,
		// and native sidecars after it keep their order.
		ic := initContainer(o)
		if psc := pod.Spec.SecurityContext; psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
			// the image's own user otherwise, so platforms that assign UIDs (OpenShift) can
			ic.SecurityContext.RunAsUser = ptr.To[int64](imageUser)
		}
		pod.Spec.InitContainers = slices.Insert(pod.Spec.InitContainers, 0, ic)
	}
	c := &pod.Spec.Containers[target]
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == HelperName }) {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: HelperName, MountPath: MountPath, ReadOnly: true})
	}
}

// initContainer copies the binary; it passes the restricted Pod Security Standard.
func initContainer(o Options) corev1.Container {
	return corev1.Container{
		Name:            HelperName,
		Image:           o.Image,
		ImagePullPolicy: o.PullPolicy,
		// The image has no shell: the binary copies itself.
		Command:                  []string{imageBinary, "copy-to", MountPath},
		VolumeMounts:             []corev1.VolumeMount{{Name: HelperName, MountPath: MountPath}},
		Resources:                o.Resources,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
}

// envVars are the variables lastcall-prestop reads, in an order where $(HOST_IP) precedes its use.
func envVars(consul bool, consulAddr string) []corev1.EnvVar {
	env := []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_UID", "metadata.uid"),
		fieldEnv("POD_IP", "status.podIP"),
	}
	if consul && consulAddr != "" {
		if strings.Contains(consulAddr, "$(HOST_IP)") {
			env = append(env, fieldEnv("HOST_IP", "status.hostIP"))
		}
		env = append(env, corev1.EnvVar{Name: "LASTCALL_CONSUL_ADDR", Value: consulAddr})
	}
	return env
}

func hasEnv(c *corev1.Container, names ...string) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return slices.Contains(names, e.Name) })
}

// addEnv adds e unless the container sets the variable already; a different value is kept
// (the app may rely on it) and reported.
func addEnv(c *corev1.Container, e corev1.EnvVar, warn func(string, ...any)) {
	i := slices.IndexFunc(c.Env, func(x corev1.EnvVar) bool { return x.Name == e.Name })
	switch {
	case i < 0:
		c.Env = append(c.Env, e)
	case !equality.Semantic.DeepEqual(normalizeEnv(c.Env[i]), e):
		warn("container %s sets %s itself; kept it, but lastcall-prestop reads it as %s", c.Name, e.Name, describeEnv(e))
	}
}

// normalizeEnv fills the fieldRef's apiVersion the API server defaults, so a pod created by
// hand and one the webhook already saw compare equal.
func normalizeEnv(e corev1.EnvVar) corev1.EnvVar {
	if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.APIVersion == "" {
		e = *e.DeepCopy()
		e.ValueFrom.FieldRef.APIVersion = "v1"
	}
	return e
}

func describeEnv(e corev1.EnvVar) string {
	if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
		return "the downward API's " + e.ValueFrom.FieldRef.FieldPath
	}
	return fmt.Sprintf("%q", e.Value)
}

type hook struct {
	args       []string
	registries []string
}

// hookFlags turns the pod's annotations into lastcall-prestop's flags; a bad annotation is
// reported and left out (the helper's default applies). The webhook's drain budget is passed
// too, unless container c sets the helper's variable itself (a flag would override it).
func hookFlags(pod *corev1.Pod, c *corev1.Container, o Options, warn func(string, ...any)) hook {
	ann := pod.Annotations
	h := hook{args: []string{HelperPath}}
	settings, err := managed.SettingsOf(ann, o.Adapters)
	if err != nil {
		// the registries of a pod without the bad annotation: its services still count
		warn("%v; lastcall-prestop picks its registries itself", err)
		settings, _ = managed.SettingsOf(without(ann, managed.RegistriesAnnotation), o.Adapters)
	} else if _, set := ann[managed.RegistriesAnnotation]; set {
		h.args = append(h.args, "--registries="+strings.Join(settings.Registries, ","))
	}
	h.registries = settings.Registries
	for _, a := range o.Adapters {
		if svc := settings.Services[a.Name]; svc != "" {
			h.args = append(h.args, fmt.Sprintf("--%s-service=%s", a.Name, svc))
		}
	}
	budget, reserve := o.Drain.MaxWait, o.Drain.Reserve
	if hasEnv(c, "LASTCALL_MAX_WAIT") {
		budget = 0
	}
	if hasEnv(c, "LASTCALL_RESERVE") {
		reserve = 0
	}
	// warnings.Check (via graceWarnings) reports malformed durations; here they are left out.
	if d, ok := annotationDuration(ann, managed.DrainBudgetAnnotation, budget); ok && d > 0 {
		h.args = append(h.args, "--max-wait="+d.String())
	} else if ok && d <= 0 && ann[managed.DrainBudgetAnnotation] != "" {
		warn("annotation %s=%q: want a positive duration such as 20s; lastcall-prestop keeps its default", managed.DrainBudgetAnnotation, ann[managed.DrainBudgetAnnotation])
	}
	if d, ok := annotationDuration(ann, managed.ReserveAnnotation, reserve); ok && (d > 0 || ann[managed.ReserveAnnotation] != "") {
		h.args = append(h.args, "--reserve="+d.String())
	}
	if v, set := ann[AppAdminAnnotation]; set {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			warn("annotation %s=%q: want the app's admin URL such as http://127.0.0.1:9901; lastcall-prestop runs without it", AppAdminAnnotation, v)
		} else {
			h.args = append(h.args, "--app-admin="+strings.TrimSuffix(v, "/"))
		}
	}
	return h
}

func without(m map[string]string, key string) map[string]string {
	out := maps.Clone(m)
	delete(out, key)
	return out
}

// annotationDuration is the annotation's duration, or def when unset; ok is false when the
// annotation does not parse (warnings.Check reports it).
func annotationDuration(ann map[string]string, key string, def time.Duration) (time.Duration, bool) {
	v, set := ann[key]
	if !set {
		return def, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, false
	}
	return d, true
}

// setHook installs the exec hook, or keeps a hook the container has: an exec hook cannot run
// two commands without a shell the image may lack, and a hook the user wrote may do what the
// app needs. Our own hook (from an earlier invocation) is rewritten to the same command.
func setHook(c *corev1.Container, args []string, warn func(string, ...any)) {
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		if ex := c.Lifecycle.PreStop.Exec; ex == nil || len(ex.Command) == 0 || ex.Command[0] != HelperPath {
			// the API server may cut warnings past 256 characters: keep it short
			warn("container %s has a preStop hook of its own: kept it, lastcall-prestop not added; your hook can run %s (or remove it: lastcall-prestop replaces a sleep)", c.Name, HelperPath)
			return
		}
	}
	if c.Lifecycle == nil {
		c.Lifecycle = &corev1.Lifecycle{}
	}
	c.Lifecycle.PreStop = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: args}}
}

// graceWarnings are the unsafe-settings checks that apply at admission: the grace period and
// malformed drain annotations, worded as the controller's Events word them.
func graceWarnings(pod *corev1.Pod, drain prestop.Drain) []string {
	var out []string
	w := warnings.Workload{Template: corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}}
	for _, f := range warnings.Check(w, drain) {
		if f.Check == warnings.GraceTooShort || f.Check == warnings.InvalidAnnotation {
			out = append(out, warnPrefix+f.Message)
		}
	}
	return out
}
