//go:build e2e

// Package rollout is lastcall's end-to-end proof on a kind cluster (hack/kind-up.sh): a sample
// service on the graceful library, with lastcall-prestop as its preStop hook and the controller's
// readiness gate, is rolled and scaled down under constant load on two paths (the ClusterIP
// Service through kube-proxy, and client-side balancing over Consul straight to pod IPs), and no
// request may fail. Control runs of the same service without lastcall must show failures, and a
// native preStop sleep is searched for the smallest value that drops nothing, for comparison.
//
//	make e2e        (cluster, images, suite, report)
//	go test -tags e2e -timeout 90m ./e2e/rollout/ -ginkgo.v    (against the current kubeconfig)
//
// Label slow-dataplane (dataplane_test.go): kube-proxy's minSyncPeriod set to 10s and a caller
// opening a new connection per request beside the usual load; lastcall with lastcall-node must
// fail nothing, lastcall on --settle alone and preStop sleep 5 must fail requests.
//
//	go test -tags e2e -timeout 60m ./e2e/rollout/ -ginkgo.label-filter=slow-dataplane -ginkgo.v
//
// Env (defaults in brackets): E2E_ITERATIONS [3] runs of each lastcall scenario; E2E_RATE [50]
// requests/s per path; E2E_WORK [50ms] per request; E2E_IDLE [500ms] the load generator's
// keep-alive idle timeout; E2E_PRESTOP_FLAGS [] more lastcall-prestop flags; E2E_SLEEPS [2,5,10,15] preStop sleep values
// searched; E2E_SKIP_IMAGES=1 (images are loaded already); E2E_KEEP=1 (leave namespace, release
// and workloads for debugging); E2E_REPORT_DIR [out/e2e/<UTC time>]; KIND_CLUSTER_NAME [lastcall].
package rollout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lastcall-dev/lastcall/e2e/cluster"
	"github.com/lastcall-dev/lastcall/e2e/report"
)

const (
	namespace        = "lastcall-e2e"
	releaseNamespace = "lastcall-system"
	appImage         = "lastcall-e2e-app:dev"
	loadgenImage     = "lastcall-e2e-loadgen:dev"
	controllerImage  = "lastcall-controller:dev"
	nodeImage        = "lastcall-node:dev"
	prestopImage     = "lastcall-prestop:dev" // what the webhook injects
)

type settings struct {
	iterations   int
	rate         float64
	callerRate   float64 // each default-settings caller's rate (the callers spec)
	raceRate     float64 // the keep-alive race spec's plain POSTs per second on each path
	work         time.Duration
	idle         time.Duration
	prestopFlags []string
	sleeps       []int32
	slowSleeps   []int32 // the slow dataplane's preStop sleep sweep, smallest first
	skipImages   bool
	keep         bool
	reportDir    string
}

var (
	cl   *cluster.Cluster
	cs   kubernetes.Interface
	conf settings
	runs []report.Run
)

func TestRollout(t *testing.T) {
	var err error
	// before RunSpecs: the spec tree (timeouts, iterations) is built from the settings
	if conf, err = loadSettings(); err != nil {
		t.Fatal(err)
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "lastcall e2e: rollouts under load")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	cl, err = cluster.Connect(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	cs = cl.Client
	Expect(loadAdoption(filepath.Join(cl.RepoRoot, "README.md"))).To(Succeed())

	if !conf.skipImages {
		// lastcall-node from the iptables/nft base the offline node image build made (hack/images.sh finds it)
		By("building the app, load generator, controller, lastcall-node and lastcall-prestop images and loading them into kind")
		Expect(cl.Script(ctx, GinkgoWriter, nil, "hack/images.sh",
			"e2e/app/Dockerfile="+appImage,
			"e2e/loadgen/Dockerfile="+loadgenImage,
			"cmd/lastcall-controller/Dockerfile="+controllerImage,
			"cmd/lastcall-node/Dockerfile="+nodeImage,
			"cmd/lastcall-prestop/Dockerfile="+prestopImage)).To(Succeed())
	}
	By("building and loading the Consul image")
	consulImage, err := cl.ScriptOutput(ctx, GinkgoWriter, "hack/consul-image.sh")
	Expect(err).NotTo(HaveOccurred())

	By("a fresh namespace " + namespace)
	Expect(recreateNamespace(ctx, namespace)).To(Succeed())
	_, err = cs.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: appServiceAccount}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())

	By("Consul (one server) and the load generator")
	Expect(deployConsul(ctx, strings.TrimSpace(consulImage))).To(Succeed())
	Expect(deployLoadgen(ctx)).To(Succeed())

	By("helm install lastcall (controller, prestop RBAC for the app's ServiceAccount)")
	Expect(waitDeploymentAvailable(ctx, namespace, "consul", 3*time.Minute)).To(Succeed())
	// A release left by an earlier run keeps running against the Consul this run recreated
	// behind the same name: the controller must follow it (issue 14), so it is not restarted.
	Expect(helmInstall(ctx)).To(Succeed())
	Expect(waitDeploymentAvailable(ctx, releaseNamespace, "lastcall-controller", 3*time.Minute)).To(Succeed())
	Expect(waitPodReady(ctx, namespace, loadgenName, 3*time.Minute)).To(Succeed())
}, NodeTimeout(30*time.Minute))

var _ = AfterSuite(func(ctx SpecContext) {
	if len(runs) > 0 {
		md, err := writeReport(conf.reportDir, runs)
		Expect(err).NotTo(HaveOccurred())
		text, err := os.ReadFile(md)
		Expect(err).NotTo(HaveOccurred())
		// Printed whatever the verbosity: the report is the suite's product.
		fmt.Fprintf(os.Stdout, "\n%s\nreport: %s\n", text, md)
	}
	if conf.keep || cl == nil {
		return
	}
	By("removing the release and the namespace (E2E_KEEP=1 keeps them)")
	if out, err := helm(ctx, "uninstall", "lastcall", "--namespace", releaseNamespace, "--wait", "--timeout", "2m"); err != nil {
		GinkgoWriter.Printf("helm uninstall: %v\n%s\n", err, out)
	}
	err := cs.CoreV1().Namespaces().Delete(ctx, namespace, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}, NodeTimeout(5*time.Minute))

func loadSettings() (settings, error) {
	s := settings{iterations: 3, rate: 50, callerRate: 20, raceRate: 200, work: 50 * time.Millisecond, idle: 500 * time.Millisecond, sleeps: []int32{2, 5, 10, 15}, slowSleeps: []int32{5, 10, 15},
		skipImages: os.Getenv("E2E_SKIP_IMAGES") == "1", keep: os.Getenv("E2E_KEEP") == "1"}
	if v := os.Getenv("E2E_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return s, fmt.Errorf("E2E_ITERATIONS=%q: want a whole number ≥ 1", v)
		}
		s.iterations = n
	}
	for env, dst := range map[string]*float64{"E2E_RATE": &s.rate, "E2E_CALLER_RATE": &s.callerRate, "E2E_RACE_RATE": &s.raceRate} {
		if v := os.Getenv(env); v != "" {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r <= 0 {
				return s, fmt.Errorf("%s=%q: want requests per second > 0", env, v)
			}
			*dst = r
		}
	}
	if v := os.Getenv("E2E_WORK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return s, fmt.Errorf("E2E_WORK=%q: want a duration such as 50ms", v)
		}
		s.work = d
	}
	if v := os.Getenv("E2E_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("E2E_IDLE=%q: want a duration such as 500ms", v)
		}
		s.idle = d
	}
	s.prestopFlags = strings.Fields(os.Getenv("E2E_PRESTOP_FLAGS"))
	for env, dst := range map[string]*[]int32{"E2E_SLEEPS": &s.sleeps, "E2E_SLOW_SLEEPS": &s.slowSleeps} {
		v := os.Getenv(env)
		if v == "" {
			continue
		}
		*dst = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 || n >= gracePeriod {
				return s, fmt.Errorf("%s=%q: want seconds from 1 to %d (the grace period), comma-separated, e.g. 2,5,10,15", env, v, gracePeriod-1)
			}
			*dst = append(*dst, int32(n))
		}
		slices.Sort(*dst)
	}
	s.reportDir = os.Getenv("E2E_REPORT_DIR")
	if s.reportDir == "" {
		s.reportDir = filepath.Join("..", "..", "out", "e2e", time.Now().UTC().Format("20060102-150405"))
	}
	return s, nil
}

// recreateNamespace deletes ns if a previous run left it, waits until it is gone, and creates it.
func recreateNamespace(ctx context.Context, ns string) error {
	err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete namespace %s: %w", ns, err)
	}
	if err == nil {
		Eventually(func() bool {
			_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		}).WithContext(ctx).WithTimeout(3*time.Minute).WithPolling(time.Second).Should(BeTrue(), "namespace %s left by an earlier run is still terminating", ns)
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	return nil
}

// helm runs the helm CLI hack/tool.sh builds from its module at hack/versions.env's HELM_VERSION.
func helm(ctx context.Context, args ...string) (string, error) {
	bin, err := cl.ScriptOutput(ctx, GinkgoWriter, "hack/tool.sh", "helm")
	if err != nil {
		return "", err
	}
	return cl.Run(ctx, strings.TrimSpace(bin), args...)
}

// helmInstall installs or upgrades the release with the suite's values, then extra helm flags.
func helmInstall(ctx context.Context, extra ...string) error {
	args := []string{"upgrade", "--install", "lastcall", filepath.Join(cl.RepoRoot, "charts", "lastcall"),
		"--namespace", releaseNamespace, "--create-namespace",
		"--set", "image.repository=" + strings.Split(controllerImage, ":")[0],
		"--set", "image.tag=" + strings.Split(controllerImage, ":")[1],
		"--set", "image.pullPolicy=Never",
		// lastcall-node, on by default in the chart
		"--set", "node.image.repository=" + strings.Split(nodeImage, ":")[0],
		"--set", "node.image.tag=" + strings.Split(nodeImage, ":")[1],
		"--set", "node.image.pullPolicy=Never",
		// the injection webhook, on by default: the helper from this build, Consul's address
		"--set", "webhook.inject.image.repository=" + strings.Split(prestopImage, ":")[0],
		"--set", "webhook.inject.image.tag=" + strings.Split(prestopImage, ":")[1],
		"--set", "webhook.inject.image.pullPolicy=Never",
		"--set", "webhook.inject.consulAddress=" + consulURL,
		// one replica: the machine has 2 cores; leader election still runs
		"--set", "replicaCount=1",
		"--set", "podDisruptionBudget.enabled=false",
		"--set", "consul.address=" + consulURL,
		"--set", "prestop.rbac.bindings[0].namespace=" + namespace,
		"--set", "prestop.rbac.bindings[0].serviceAccount=" + appServiceAccount,
		// helm returns once the chart's install check (webhook.check) saw the API server inject a
		// dry-run pod: the workloads created next are injected, or the lastcall run fails
		// (checkInjected)
		"--wait", "--timeout", "3m"}
	out, err := helm(ctx, append(args, extra...)...)
	if err != nil {
		return fmt.Errorf("helm install: %w\n%s", err, out)
	}
	return nil
}
