package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/lastcall-dev/lastcall/controllers/inject"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
)

// One kube-apiserver for the package; each test has its own namespaces, webhook configuration,
// Secret and port, and its configuration selects only its own namespaces.
func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	apitest.Main(m)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func testInject() inject.Options {
	return inject.Options{
		Image: "lastcall-prestop:test", PullPolicy: corev1.PullIfNotPresent, Mode: inject.ModeInitContainer,
		Drain:    prestop.Drain{MaxWait: 20 * time.Second, Reserve: 10 * time.Second},
		Adapters: adapters.All(), Resources: inject.DefaultResources(),
	}
}

// testConfig is the webhook's Config for a test: the API server calls it on 127.0.0.1.
func testConfig(t testing.TB, name string) Config {
	return Config{
		Host: "127.0.0.1", Port: freePort(t),
		Namespace: "default", SecretName: name + "-cert", ConfigName: name, ManageCert: true,
		Cert:   CertOptions{DNSNames: []string{"127.0.0.1", "localhost"}, Validity: time.Hour, CAValidity: 4 * time.Hour},
		Resync: time.Minute, Inject: testInject(),
	}
}

// webhookConfiguration is the chart's MutatingWebhookConfiguration with its default values
// (charts/lastcall/templates/webhook.yaml), but called by URL, and selecting only namespaces
// named in scope (tests share one API server).
func webhookConfiguration(name string, port int, scope ...string) *admissionregistrationv1.MutatingWebhookConfiguration {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, Path)
	inScope := metav1.LabelSelectorRequirement{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: scope}
	excluded := metav1.LabelSelectorRequirement{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", "lastcall-system"}}
	hook := func(suffix string, ns, obj metav1.LabelSelector) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name:                    suffix + ".inject.lastcall.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:          ptr.To[int32](3),
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			NamespaceSelector:       &ns,
			ObjectSelector:          &obj,
		}
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			// namespaces labelled lastcall.dev/inject=true: every pod but those labelled false
			hook("namespace",
				metav1.LabelSelector{MatchLabels: map[string]string{inject.Label: "true"}, MatchExpressions: []metav1.LabelSelectorRequirement{excluded, inScope}},
				metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: inject.Label, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}}}}),
			// other namespaces: pods labelled lastcall.dev/inject=true
			hook("pod",
				metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: inject.Label, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"true"}}, excluded, inScope}},
				metav1.LabelSelector{MatchLabels: map[string]string{inject.Label: "true"}}),
			// the install check's dry-run pod, in lastcall's own namespace only
			hook("check",
				metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "lastcall-system"}, MatchExpressions: []metav1.LabelSelectorRequirement{inScope}},
				metav1.LabelSelector{MatchLabels: map[string]string{CheckLabel: "true"}}),
		},
	}
}

type env struct {
	cfg   *rest.Config
	kube  kubernetes.Interface
	ctx   context.Context
	hook  *Webhook
	stop  func()
	wcfg  Config
	warns *warnings
	// wrap, when set, wraps the webhook's HTTP handler (the benchmark times it)
	wrap func(http.Handler) http.Handler
}

// warnings collects the API server's warnings, by the pod name in the request's context.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// start runs the webhook in a manager, as lastcall-controller does, against the shared API
// server; the webhook configuration is created first, with an empty caBundle as the chart does.
func start(t testing.TB, name string, mutate func(*Config), scope ...string) *env {
	t.Helper()
	return startWrapped(t, name, mutate, nil, scope...)
}

func startWrapped(t testing.TB, name string, mutate func(*Config), wrap func(http.Handler) http.Handler, scope ...string) *env {
	t.Helper()
	cfg := apitest.Shared(t)
	w := &warnings{}
	cfg.WarningHandler = w
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	wcfg := testConfig(t, name)
	if mutate != nil {
		mutate(&wcfg)
	}
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, webhookConfiguration(name, wcfg.Port, scope...), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, name, metav1.DeleteOptions{})
	})
	e := &env{cfg: cfg, kube: kube, ctx: ctx, wcfg: wcfg, warns: w, wrap: wrap}
	e.stop = e.run(t, kube)
	return e
}

// run starts a manager serving the webhook; the returned stop is idempotent.
func (e *env) run(t testing.TB, kube kubernetes.Interface) func() {
	t.Helper()
	hook, err := newWebhook(kube, e.wcfg, logr.Discard(), e.wrap)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(e.cfg, ctrl.Options{
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0", WebhookServer: hook.Server(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := hook.Setup(mgr); err != nil {
		t.Fatal(err)
	}
	e.hook = hook
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func eventually(t testing.TB, within time.Duration, what string, cond func(g gomega.Gomega)) {
	t.Helper()
	gomega.NewWithT(t).Eventually(cond).WithTimeout(within).WithPolling(50*time.Millisecond).Should(gomega.Succeed(), what)
}

func (e *env) namespace(t testing.TB, name string, labels map[string]string) {
	t.Helper()
	// a benchmark runs more than once: its namespaces stay (envtest has no namespace controller)
	if _, err := e.kube.CoreV1().Namespaces().Create(e.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func plainPod(labels, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: labels, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}
}

func (e *env) create(t testing.TB, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := e.kube.CoreV1().Pods(ns).Create(e.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod in %s: %v", ns, err)
	}
	return got
}

func injected(p *corev1.Pod) bool { return p.Annotations[inject.InjectedAnnotation] != "" }

// waitServing waits until the API server injects: the caBundle it reads is current.
func (e *env) waitServing(t testing.TB, ns string) {
	t.Helper()
	eventually(t, 30*time.Second, "a labelled pod is injected", func(g gomega.Gomega) {
		p := e.create(t, ns, plainPod(map[string]string{inject.Label: "true"}, nil))
		g.Expect(injected(p)).To(gomega.BeTrue())
	})
	e.warns.take()
}

// The API server calls the real webhook over TLS, trusting the caBundle the controller wrote.
func TestAPIServerInjectsLabelledPods(t *testing.T) {
	e := start(t, "inject-labelled", nil, "labelled-ns", "plain-ns")
	e.namespace(t, "labelled-ns", map[string]string{inject.Label: "true"})
	e.namespace(t, "plain-ns", nil)

	eventually(t, 30*time.Second, "the caBundle holds the CA of the Secret", func(g gomega.Gomega) {
		s, err := e.kube.CoreV1().Secrets("default").Get(e.ctx, e.wcfg.SecretName, metav1.GetOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		mwc, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(e.ctx, e.wcfg.ConfigName, metav1.GetOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		for _, w := range mwc.Webhooks {
			g.Expect(w.ClientConfig.CABundle).To(gomega.Equal(s.Data[keyBundle]))
		}
		g.Expect(s.Data[keyBundle]).To(gomega.Equal(s.Data[keyCACert]))
	})
	e.waitServing(t, "labelled-ns")

	p := e.create(t, "labelled-ns", plainPod(nil, nil))
	if !injected(p) || p.Spec.InitContainers[0].Name != inject.HelperName || !managed.HasGate(p) || p.Labels[managed.Label] != "true" {
		t.Fatalf("pod in a labelled namespace not injected: %+v", p)
	}
	if c := p.Spec.Containers[0]; c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec.Command[0] != inject.HelperPath {
		t.Errorf("no preStop hook: %+v", c.Lifecycle)
	}
	if p := e.create(t, "labelled-ns", plainPod(map[string]string{inject.Label: "false"}, nil)); injected(p) || len(p.Spec.InitContainers) > 0 {
		t.Error("a pod labelled lastcall.dev/inject=false was injected")
	}
	if p := e.create(t, "plain-ns", plainPod(map[string]string{inject.Label: "true"}, nil)); !injected(p) {
		t.Error("a labelled pod in a plain namespace was not injected")
	}
	if p := e.create(t, "plain-ns", plainPod(nil, nil)); injected(p) {
		t.Error("an unlabelled pod in a plain namespace was injected")
	}

	// warnings reach the client; the pod is created anyway
	e.warns.take()
	p = e.create(t, "labelled-ns", plainPod(nil, map[string]string{managed.DrainBudgetAnnotation: "soon"}))
	if !injected(p) {
		t.Error("a pod with a bad annotation was not injected")
	}
	if w := e.warns.take(); len(w) != 1 || !strings.Contains(w[0], `annotation lastcall.dev/drain-budget="soon"`) {
		t.Errorf("warnings %q, want one naming lastcall.dev/drain-budget", w)
	}

	// the image volume mode passes the API server's validation too
	o := testInject()
	o.Mode = inject.ModeImageVolume
	res := inject.Pod(plainPod(nil, nil), o)
	if p := e.create(t, "plain-ns", res.Pod); p.Spec.Volumes[0].Image == nil {
		t.Errorf("image volume dropped: %+v", p.Spec.Volumes)
	}
}

// The init container passes the restricted Pod Security Standard, so injection never makes a
// compliant pod non-compliant.
func TestInjectedPodPassesRestrictedPodSecurity(t *testing.T) {
	e := start(t, "inject-restricted", nil, "restricted-ns")
	e.namespace(t, "restricted-ns", map[string]string{inject.Label: "true", "pod-security.kubernetes.io/enforce": "restricted"})
	restricted := func() *corev1.Pod {
		p := plainPod(nil, nil)
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
		return p
	}
	eventually(t, 30*time.Second, "a compliant pod is created injected", func(g gomega.Gomega) {
		p, err := e.kube.CoreV1().Pods("restricted-ns").Create(e.ctx, restricted(), metav1.CreateOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(injected(p)).To(gomega.BeTrue())
	})
}

// failurePolicy Ignore: a webhook that is down, or that accepts and never answers, does not
// stop pods from being created; they are created as written.
func TestWebhookDownStillCreatesPods(t *testing.T) {
	e := start(t, "inject-down", nil, "down-ns")
	e.namespace(t, "down-ns", map[string]string{inject.Label: "true"})
	e.waitServing(t, "down-ns")
	e.stop()

	began := time.Now()
	if p := e.create(t, "down-ns", plainPod(nil, nil)); injected(p) {
		t.Error("injected by a stopped webhook")
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("refused connection: pod created after %s, want at once", d)
	}

	// a listener that accepts and stays silent: the API server gives up after timeoutSeconds
	l, err := net.Listen("tcp", net.JoinHostPort(e.wcfg.Host, strconv.Itoa(e.wcfg.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		var held []net.Conn // open and silent until the test ends
		defer func() {
			for _, c := range held {
				_ = c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	began = time.Now()
	if p := e.create(t, "down-ns", plainPod(nil, nil)); injected(p) {
		t.Error("injected by a silent listener")
	}
	if d := time.Since(began); d > 3*time.Second+2*time.Second {
		t.Errorf("silent webhook: pod created after %s, want about timeoutSeconds (3s)", d)
	}
}

// Short-lived certificates: the serving certificate is renewed and the CA replaced several times
// while pods are created all along; every one is injected (no moment where the API server
// distrusts the served certificate) and every served certificate verifies against the
// caBundle the API server has.
func TestCertificateRotationKeepsAdmissionWorking(t *testing.T) {
	e := start(t, "inject-rotation", func(c *Config) {
		c.Cert.Validity, c.Cert.CAValidity, c.Cert.Dwell = 6*time.Second, 12*time.Second, time.Second
	}, "rotation-ns")
	e.namespace(t, "rotation-ns", map[string]string{inject.Label: "true"})
	e.waitServing(t, "rotation-ns")

	addr := net.JoinHostPort(e.wcfg.Host, strconv.Itoa(e.wcfg.Port))
	served := map[string]bool{}  // serving certificates seen, by serial
	issuers := map[string]bool{} // CAs that signed them
	bundles := map[string]bool{} // caBundles seen
	pods, missed := 0, 0
	for end := time.Now().Add(22 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		p := e.create(t, "rotation-ns", plainPod(nil, nil))
		pods++
		if !injected(p) {
			missed++
			t.Errorf("pod %s created without injection at %s", p.Name, time.Now().Format(time.StampMilli))
		}
		mwc, err := e.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(e.ctx, e.wcfg.ConfigName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bundle := mwc.Webhooks[0].ClientConfig.CABundle
		bundles[string(bundle)] = true
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the chain is verified below
		if err != nil {
			t.Fatal(err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		_ = conn.Close()
		served[leaf.SerialNumber.String()] = true
		issuers[leaf.Issuer.CommonName] = true
		// the webhook may serve a certificate the caBundle read a moment earlier does not yet
		// hold only if the order of writes were wrong: the bundle is written first
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1"}); err != nil {
			t.Errorf("served certificate %s (issuer %s) does not verify against the caBundle: %v", leaf.SerialNumber, leaf.Issuer.CommonName, err)
		}
	}
	t.Logf("%d pods, %d not injected; %d serving certificates, %d CAs, %d caBundles", pods, missed, len(served), len(issuers), len(bundles))
	if len(served) < 4 || len(issuers) < 2 || len(bundles) < 3 {
		t.Errorf("saw %d serving certificates, %d issuing CAs, %d caBundles in 22s; want renewals (≥ 4, ≥ 2, ≥ 3)", len(served), len(issuers), len(bundles))
	}
}

// The RBAC that config/webhook (and the chart) grants is enough: the controller's
// ServiceAccount keeps the Secret and the caBundle with nothing more, and cannot touch other
// Secrets or webhook configurations.
func TestLeastRBACIsEnough(t *testing.T) {
	cfg := apitest.Shared(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	const ns, sa, secret, mwcName = "lastcall-system", "lastcall-controller", "lastcall-webhook-cert", "lastcall-webhook"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, obj := range readObjects(t, "../../config/webhook/rbac.yaml", "../../config/webhook/secret.yaml") {
		createObject(t, admin, obj)
	}
	mwc := webhookConfiguration(mwcName, freePort(t), "no-namespace-of-this-test")
	if _, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, mwcName, metav1.DeleteOptions{})
	})

	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa}
	kube := kubernetes.NewForConfigOrDie(as)
	certs := NewCerts(&Certs{Client: kube, Namespace: ns, SecretName: secret, ConfigName: mwcName,
		Options: CertOptions{DNSNames: []string{"lastcall-webhook.lastcall-system.svc"}, Validity: time.Hour, CAValidity: 4 * time.Hour},
		Resync:  time.Minute, Log: logr.Discard()})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- certs.Serving().Start(runCtx) }()
	go func() { errs <- certs.Rotator().Start(runCtx) }()
	eventually(t, 30*time.Second, "the certificate is served and its CA is in the caBundle", func(g gomega.Gomega) {
		_, err := certs.GetCertificate(nil)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		got, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwcName, metav1.GetOptions{})
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(got.Webhooks[0].ClientConfig.CABundle).NotTo(gomega.BeEmpty())
	})
	_, err := kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{})
	if err == nil {
		t.Error("the controller may create Secrets; want access to its certificate Secret only")
	}
	if _, err := kube.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); err == nil {
		t.Error("the controller may list every Secret of its namespace")
	}
	select {
	case err := <-errs:
		t.Fatalf("a runnable ended early: %v", err)
	default:
	}
}

// readObjects reads the YAML documents of files as unstructured JSON for createObject.
func readObjects(t *testing.T, files ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			j, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(j)) > 0 && string(j) != "null" {
				out = append(out, j)
			}
		}
	}
	return out
}

// createObject creates one of the kinds config/webhook's RBAC and Secret files hold.
func createObject(t *testing.T, kube kubernetes.Interface, j []byte) {
	t.Helper()
	ctx := context.Background()
	var meta metav1.TypeMeta
	if err := json.Unmarshal(j, &meta); err != nil {
		t.Fatal(err)
	}
	var err error
	switch meta.Kind {
	case "Role":
		var o rbacv1.Role
		mustDecode(t, j, &o)
		_, err = kube.RbacV1().Roles(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
	case "RoleBinding":
		var o rbacv1.RoleBinding
		mustDecode(t, j, &o)
		_, err = kube.RbacV1().RoleBindings(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
	case "ClusterRole":
		var o rbacv1.ClusterRole
		mustDecode(t, j, &o)
		_, err = kube.RbacV1().ClusterRoles().Create(ctx, &o, metav1.CreateOptions{})
	case "ClusterRoleBinding":
		var o rbacv1.ClusterRoleBinding
		mustDecode(t, j, &o)
		_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, &o, metav1.CreateOptions{})
	case "Secret":
		var o corev1.Secret
		mustDecode(t, j, &o)
		_, err = kube.CoreV1().Secrets(o.Namespace).Create(ctx, &o, metav1.CreateOptions{})
	default:
		t.Fatalf("unexpected kind %q", meta.Kind)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) { // -count=2 shares the API server
		t.Fatalf("create %s: %v", meta.Kind, err)
	}
}

func mustDecode(t *testing.T, j []byte, into any) {
	t.Helper()
	if err := json.Unmarshal(j, into); err != nil {
		t.Fatal(err)
	}
}

// The install check passes only while the API server really injects through the webhook, and
// its configuration entry selects the check pod alone in lastcall's own namespace.
func TestCheckFollowsTheAPIServer(t *testing.T) {
	e := start(t, "inject-check", nil, "lastcall-system")
	e.namespace(t, "lastcall-system", nil)
	pods := e.kube.CoreV1().Pods("lastcall-system")
	check := func(within time.Duration) error {
		ctx, cancel := context.WithTimeout(e.ctx, within)
		defer cancel()
		return Check(ctx, pods, "lastcall-controller:test", 100*time.Millisecond, logr.Discard())
	}
	if err := check(30 * time.Second); err != nil {
		t.Fatalf("serving webhook: %v", err)
	}
	if p := e.create(t, "lastcall-system", plainPod(map[string]string{inject.Label: "true"}, nil)); injected(p) {
		t.Error("a labelled pod without the check label was injected in lastcall's own namespace")
	}

	e.stop()
	if err := check(2 * time.Second); !errors.Is(err, ErrNotInjected) {
		t.Fatalf("stopped webhook: Check = %v, want %v", err, ErrNotInjected)
	}

	// started again once the check has been refused: it passes
	refused := make(chan struct{})
	var once sync.Once
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, ErrNotInjected.Error()) {
			once.Do(func() { close(refused) })
		}
	}, funcr.Options{})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
		defer cancel()
		done <- Check(ctx, pods, "lastcall-controller:test", 100*time.Millisecond, log)
	}()
	<-refused
	e.stop = e.run(t, e.kube)
	if err := <-done; err != nil {
		t.Fatalf("restarted webhook: %v", err)
	}
}

// With cert-manager (the chart's webhook.certManager.enabled), the controller serves the Secret
// cert-manager writes and only reads the caBundle: get on its Secret and get on its webhook
// configuration, both by name, are enough to turn Ready; without the read of the configuration
// it never does (the chart once granted none).
func TestCertManagerModeRBACIsEnough(t *testing.T) {
	cfg := apitest.Shared(t)
	admin := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	const ns, sa, secret, mwcName = "lastcall-system", "lastcall-cm", "lastcall-cm-webhook-cert", "lastcall-cm-webhook"
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// what cert-manager writes: a CA-signed serving certificate, its CA in ca.crt and the caBundle
	now := time.Now()
	ca, err := newCA(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := newLeaf(now, ca, CertOptions{DNSNames: []string{"lastcall-cm-webhook.lastcall-system.svc"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{keyCert: leaf.certPEM, keyKey: leaf.keyPEM, keyCACert: ca.certPEM}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mwc := webhookConfiguration(mwcName, freePort(t), "no-namespace-of-this-test")
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.CABundle = ca.certPEM
	}
	if _, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, mwcName, metav1.DeleteOptions{})
		_ = admin.CoreV1().Secrets(ns).Delete(ctx, secret, metav1.DeleteOptions{})
	})
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: ns}}
	createRBAC(t, admin, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{secret}, Verbs: []string{"get", "list", "watch"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: ns}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa}, Subjects: subject})

	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":" + sa}
	certs := NewCerts(&Certs{Client: kubernetes.NewForConfigOrDie(as), Namespace: ns, SecretName: secret, ConfigName: mwcName, Resync: time.Minute, Log: logr.Discard()})
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = certs.Serving().Start(runCtx) }()
	ready := func() error {
		r := httptest.NewRequest(http.MethodGet, "/readyz", nil)
		return certs.Trusted(r)
	}
	eventually(t, 30*time.Second, "cert-manager's certificate is served", func(g gomega.Gomega) {
		_, err := certs.GetCertificate(nil)
		g.Expect(err).NotTo(gomega.HaveOccurred())
	})
	if err := ready(); err == nil || !apierrors.IsForbidden(errors.Unwrap(err)) {
		t.Fatalf("without the read of the configuration: readiness %v, want forbidden", err)
	}
	createRBAC(t, admin, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: sa},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{mwcName}, Verbs: []string{"get"}}}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: sa}, Subjects: subject})
	eventually(t, 30*time.Second, "Ready with get on the configuration", func(g gomega.Gomega) {
		g.Expect(ready()).To(gomega.Succeed())
	})
}

// createRBAC creates Roles, ClusterRoles and their bindings, deleted when the test ends.
func createRBAC(t *testing.T, kube kubernetes.Interface, objs ...any) {
	t.Helper()
	ctx := context.Background()
	rbac := kube.RbacV1()
	for _, o := range objs {
		var err error
		switch o := o.(type) {
		case *rbacv1.Role:
			_, err = rbac.Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.Roles(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		case *rbacv1.RoleBinding:
			_, err = rbac.RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.RoleBindings(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		case *rbacv1.ClusterRole:
			_, err = rbac.ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		case *rbacv1.ClusterRoleBinding:
			_, err = rbac.ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(ctx, o.Name, metav1.DeleteOptions{}) })
		default:
			t.Fatalf("createRBAC: %T", o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
