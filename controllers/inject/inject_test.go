package inject

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	"github.com/lastcall-dev/lastcall/controllers/managed"
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry/adapters"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.yaml from the current output")

func options() Options {
	return Options{
		Image: "lastcall-prestop:0.1.0", PullPolicy: corev1.PullIfNotPresent, Mode: ModeInitContainer,
		Drain:    prestop.Drain{MaxWait: 20 * time.Second, Reserve: 10 * time.Second},
		Adapters: adapters.All(), Resources: DefaultResources(),
	}
}

// golden is what a case's file records: the injected pod and the warnings.
type golden struct {
	Changed  bool        `json:"changed"`
	Warnings []string    `json:"warnings"`
	Pod      *corev1.Pod `json:"pod"`
}

func readPod(t *testing.T, file string) *corev1.Pod {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(file, ".golden.yaml") {
		var g golden
		if err := yaml.UnmarshalStrict(b, &g); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return g.Pod
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return &pod
}

func TestPod(t *testing.T) {
	tests := []struct {
		name string
		in   string // file in testdata
		opts func(*Options)
		// behaviour checked on top of the golden file, so -update cannot bless a regression
		changed  bool
		warnings []string // substrings, one per expected warning, in order
		check    func(t *testing.T, pod *corev1.Pod)
	}{
		{name: "minimal", in: "minimal.pod.yaml", changed: true, check: func(t *testing.T, pod *corev1.Pod) {
			wantInjected(t, pod, "web", HelperPath, "--max-wait=20s", "--reserve=10s")
			if ic := pod.Spec.InitContainers[0]; ic.Name != HelperName || !slices.Equal(ic.Command, []string{"/lastcall-prestop", "copy-to", MountPath}) {
				t.Errorf("init container %s %v, want %s copying to %s", ic.Name, ic.Command, HelperName, MountPath)
			}
			if u := pod.Spec.InitContainers[0].SecurityContext.RunAsUser; u != nil {
				t.Errorf("init container runAsUser %d: leave it to the image (platforms that assign UIDs refuse others)", *u)
			}
			if pod.Annotations[InjectedAnnotation] != string(ModeInitContainer) {
				t.Errorf("annotation %s=%q", InjectedAnnotation, pod.Annotations[InjectedAnnotation])
			}
		}},
		{name: "every-option", in: "every-option.pod.yaml", changed: true,
			opts: func(o *Options) { o.ConsulAddr = "http://$(HOST_IP):8500" },
			check: func(t *testing.T, pod *corev1.Pod) {
				wantInjected(t, pod, "app", HelperPath, "--registries=endpoints,consul", "--consul-service=shop", "--max-wait=40s", "--reserve=15s", "--app-admin=http://127.0.0.1:9901")
				app := pod.Spec.Containers[1]
				if i, j := envIndex(app, "HOST_IP"), envIndex(app, "LASTCALL_CONSUL_ADDR"); i < 0 || j < i {
					t.Errorf("HOST_IP at %d, LASTCALL_CONSUL_ADDR at %d: the address needs HOST_IP first", i, j)
				}
				if exp := pod.Spec.Containers[0]; exp.Lifecycle != nil || len(exp.Env)+len(exp.VolumeMounts) > 0 {
					t.Errorf("container %s was changed: %+v", exp.Name, exp)
				}
			}},
		{name: "image-volume", in: "minimal.pod.yaml", changed: true,
			opts: func(o *Options) { o.Mode = ModeImageVolume },
			check: func(t *testing.T, pod *corev1.Pod) {
				wantInjected(t, pod, "web", HelperPath, "--max-wait=20s", "--reserve=10s")
				if len(pod.Spec.InitContainers) != 0 {
					t.Errorf("image volume mode added init containers: %v", pod.Spec.InitContainers)
				}
				if v := pod.Spec.Volumes[0]; v.Image == nil || v.Image.Reference != "lastcall-prestop:0.1.0" {
					t.Errorf("volume %+v, want the image lastcall-prestop:0.1.0", v)
				}
			}},
		{name: "already-injected", in: "minimal.golden.yaml", changed: false},
		{name: "own-hook", in: "own-hook.pod.yaml", changed: true,
			warnings: []string{"container web has a preStop hook of its own: kept it"},
			check: func(t *testing.T, pod *corev1.Pod) {
				if h := pod.Spec.Containers[0].Lifecycle.PreStop; h.Sleep == nil || h.Sleep.Seconds != 15 || h.Exec != nil {
					t.Errorf("the container's own hook was changed: %+v", h)
				}
				if !managed.HasGate(pod) || pod.Spec.Containers[0].VolumeMounts[0].MountPath != MountPath {
					t.Error("the gate and the helper must be added even when the hook is kept")
				}
			}},
		{name: "several-containers", in: "several-containers.pod.yaml", changed: true, check: func(t *testing.T, pod *corev1.Pod) {
			wantInjected(t, pod, "web", HelperPath, "--max-wait=20s", "--reserve=10s")
			for _, c := range []corev1.Container{pod.Spec.Containers[0], pod.Spec.Containers[2]} {
				if c.Lifecycle != nil || len(c.Env)+len(c.VolumeMounts) > 0 {
					t.Errorf("container %s was changed", c.Name)
				}
			}
		}},
		{name: "native-sidecar", in: "native-sidecar.pod.yaml", changed: true, check: func(t *testing.T, pod *corev1.Pod) {
			wantInjected(t, pod, "web", HelperPath, "--max-wait=20s", "--reserve=10s")
			var names []string
			for _, c := range pod.Spec.InitContainers {
				names = append(names, c.Name)
			}
			if !slices.Equal(names, []string{HelperName, "migrate", "proxy"}) {
				t.Errorf("init containers %v, want the helper first and the others in their order", names)
			}
			if p := pod.Spec.InitContainers[2]; p.Lifecycle != nil || len(p.Env)+len(p.VolumeMounts) > 0 {
				t.Error("the native sidecar was changed")
			}
		}},
		{name: "sidecar-named", in: "sidecar-named.pod.yaml", changed: false,
			warnings: []string{`annotation lastcall.dev/container="proxy" names an init container`}},
		{name: "unknown-container", in: "unknown-container.pod.yaml", changed: false,
			warnings: []string{`annotation lastcall.dev/container="api": no container of that name; want one of web, worker`}},
		{name: "bad-annotations", in: "bad-annotations.pod.yaml", changed: true,
			warnings: []string{
				`annotation lastcall.dev/registries="eureka": unknown registry "eureka"`,
				`annotation lastcall.dev/app-admin="localhost:9901": want the app's admin URL`,
				`annotation lastcall.dev/drain-budget="soon": want a duration`,
				`annotation lastcall.dev/reserve="-1s": want a duration`,
			},
			check: func(t *testing.T, pod *corev1.Pod) {
				// the helper's defaults apply to what is malformed
				wantInjected(t, pod, "web", HelperPath)
			}},
		{name: "zero-budget", in: "zero-budget.pod.yaml", changed: true,
			warnings: []string{`annotation lastcall.dev/drain-budget="0s": want a positive duration`},
			check: func(t *testing.T, pod *corev1.Pod) {
				wantInjected(t, pod, "web", HelperPath, "--reserve=0s")
			}},
		{name: "grace-too-short", in: "grace-too-short.pod.yaml", changed: true,
			warnings: []string{"terminationGracePeriodSeconds is 20s, shorter than the drain budget 25s plus the reserve 10s"}},
		{name: "opted-out", in: "opted-out.pod.yaml", changed: false},
		{name: "managed-false", in: "managed-false.pod.yaml", changed: false,
			warnings: []string{`label lastcall.dev/managed="false": not injected`}},
		{name: "own-env", in: "own-env.pod.yaml", changed: true,
			opts: func(o *Options) { o.ConsulAddr = "http://$(HOST_IP):8500" },
			warnings: []string{
				"container web sets POD_NAME itself; kept it, but lastcall-prestop reads it as the downward API's metadata.name",
				"automountServiceAccountToken is false",
			},
			check: func(t *testing.T, pod *corev1.Pod) {
				c := pod.Spec.Containers[0]
				if envIndex(c, "LASTCALL_CONSUL_ADDR") >= 0 || envIndex(c, "HOST_IP") >= 0 {
					t.Error("the container's own CONSUL_HTTP_ADDR must win over the webhook's address")
				}
				if c.Env[0].Value != "frontend" {
					t.Errorf("POD_NAME changed to %+v", c.Env[0])
				}
			}},
		{name: "root-pod", in: "root-pod.pod.yaml", changed: true, check: func(t *testing.T, pod *corev1.Pod) {
			// the pod's runAsUser 0 would make the non-root init container fail to start
			if u := pod.Spec.InitContainers[0].SecurityContext.RunAsUser; u == nil || *u != 65532 {
				t.Errorf("init container runAsUser %v, want the image's 65532", u)
			}
		}},
		{name: "helper-env", in: "helper-env.pod.yaml", changed: true, check: func(t *testing.T, pod *corev1.Pod) {
			// the container's LASTCALL_RESERVE stays in force; the annotation still wins over LASTCALL_MAX_WAIT
			wantInjected(t, pod, "web", HelperPath, "--max-wait=25s")
		}},
		{name: "consul-no-address", in: "consul-no-address.pod.yaml", changed: true,
			warnings: []string{"the pod names a Consul service but container web sets no CONSUL_HTTP_ADDR"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := options()
			if tt.opts != nil {
				tt.opts(&o)
			}
			in := readPod(t, tt.in)
			before := in.DeepCopy()
			res := Pod(in, o)
			if !equality.Semantic.DeepEqual(in, before) {
				t.Fatal("Pod modified its input")
			}
			if res.Changed != tt.changed {
				t.Errorf("Changed = %v, want %v", res.Changed, tt.changed)
			}
			if !res.Changed && !equality.Semantic.DeepEqual(res.Pod, in) {
				t.Error("Changed is false but the pod differs")
			}
			if len(res.Warnings) != len(tt.warnings) {
				t.Errorf("warnings:\n  %s\nwant %d:\n  %s", strings.Join(res.Warnings, "\n  "), len(tt.warnings), strings.Join(tt.warnings, "\n  "))
			} else {
				for i, w := range tt.warnings {
					if !strings.Contains(res.Warnings[i], w) || !strings.HasPrefix(res.Warnings[i], "lastcall.dev/inject: ") {
						t.Errorf("warning %d = %q, want it to contain %q", i, res.Warnings[i], w)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, res.Pod)
			}
			again := Pod(res.Pod, o)
			if again.Changed || !equality.Semantic.DeepEqual(again.Pod, res.Pod) {
				t.Errorf("a second invocation changed the pod:\n%s", diffYAML(t, res.Pod, again.Pod))
			}
			compareGolden(t, tt.name, golden{Changed: res.Changed, Warnings: res.Warnings, Pod: res.Pod})
		})
	}
}

// wantInjected checks the parts every injected pod has, and the hook's command.
func wantInjected(t *testing.T, pod *corev1.Pod, container string, hook ...string) {
	t.Helper()
	i := slices.IndexFunc(pod.Spec.Containers, func(c corev1.Container) bool { return c.Name == container })
	c := pod.Spec.Containers[i]
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil || !slices.Equal(c.Lifecycle.PreStop.Exec.Command, hook) {
		t.Errorf("container %s hook %+v, want exec %v", container, c.Lifecycle, hook)
	}
	for _, name := range []string{"POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_IP"} {
		if envIndex(c, name) < 0 {
			t.Errorf("container %s lacks %s", container, name)
		}
	}
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == HelperName && m.MountPath == MountPath && m.ReadOnly
	}) {
		t.Errorf("container %s does not mount %s read-only at %s", container, HelperName, MountPath)
	}
	if !managed.HasGate(pod) || pod.Labels[managed.Label] != "true" {
		t.Errorf("gate %v, label %q", managed.HasGate(pod), pod.Labels[managed.Label])
	}
}

func envIndex(c corev1.Container, name string) int {
	return slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

func compareGolden(t *testing.T, name string, got golden) {
	t.Helper()
	b, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", name+".golden.yaml")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./controllers/inject/ -update to write it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s differs from the output (review, then -update):\n%s", path, lineDiff(string(want), string(b)))
	}
}

func diffYAML(t *testing.T, a, b *corev1.Pod) string {
	t.Helper()
	ya, _ := yaml.Marshal(a)
	yb, _ := yaml.Marshal(b)
	return lineDiff(string(ya), string(yb))
}

// lineDiff lists the lines only one side has: enough to see what moved.
func lineDiff(want, got string) string {
	var out []string
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for _, l := range wl {
		if !slices.Contains(gl, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range gl {
		if !slices.Contains(wl, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
