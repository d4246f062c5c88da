//go:build e2e

// Package smoke checks that a kind cluster made by hack/kind-up.sh is fit for lastcall's e2e
// tests: nodes Ready, pod networking across nodes, Services, cluster DNS, logs, and preStop exec
// hooks. It runs against the cluster of the current kubeconfig context:
//
//	hack/kind-up.sh && go test -tags e2e ./e2e/smoke/ -ginkgo.v
//
// Env: KUBECONFIG; KIND_CLUSTER_NAME (where hack/images.sh loads the workload image, default
// lastcall); KUBECTL (default: kubectl on PATH, else the one hack/build-kube.sh caches);
// SMOKE_SKIP_IMAGES=1 (the image lastcall.local/smokeapp:e2e is loaded already);
// SMOKE_KEEP_NAMESPACE=1 (leave the test namespace for debugging).
package smoke

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const smokeImage = "lastcall.local/smokeapp:e2e"

var (
	cs         kubernetes.Interface
	restConfig *rest.Config
	namespace  string
	kubectl    string
	repoRoot   string
)

func TestSmoke(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kind smoke")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	repoRoot, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())

	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	restConfig, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	Expect(err).NotTo(HaveOccurred(), "no usable kubeconfig: run hack/kind-up.sh first")
	cs, err = kubernetes.NewForConfig(restConfig)
	Expect(err).NotTo(HaveOccurred())

	kubectl = findKubectl()

	if os.Getenv("SMOKE_SKIP_IMAGES") != "1" {
		By("building " + smokeImage + " FROM scratch and loading it into the cluster")
		cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "hack", "images.sh"),
			"e2e/smoke/testdata/smokeapp/Dockerfile="+smokeImage)
		cmd.Env = append(os.Environ(), "BASE_IMAGE=scratch")
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Run()).To(Succeed(), "hack/images.sh")
	}

	ns, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "smoke-"},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	namespace = ns.Name
	GinkgoWriter.Printf("namespace %s\n", namespace)
}, NodeTimeout(5*time.Minute))

var _ = AfterSuite(func(ctx SpecContext) {
	if namespace == "" || os.Getenv("SMOKE_KEEP_NAMESPACE") == "1" {
		return
	}
	err := cs.CoreV1().Namespaces().Delete(ctx, namespace, metav1.DeleteOptions{})
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(time.Minute))

// findKubectl: $KUBECTL, kubectl on PATH, or the one hack/build-kube.sh caches.
func findKubectl() string {
	if k := os.Getenv("KUBECTL"); k != "" {
		return k
	}
	if k, err := exec.LookPath("kubectl"); err == nil {
		return k
	}
	cache := os.Getenv("LASTCALL_CACHE")
	if cache == "" {
		cache = filepath.Join(repoRoot, ".cache")
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "kubernetes", "*", "kubectl"))
	Expect(matches).NotTo(BeEmpty(), "no kubectl: set KUBECTL, put kubectl on PATH, or run hack/build-kube.sh kubectl")
	return matches[len(matches)-1]
}

// run runs kubectl (same kubeconfig rules as the client: $KUBECONFIG, else ~/.kube/config) in
// the suite's namespace and returns its combined output.
func run(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--namespace", namespace}, args...)
	out, err := exec.CommandContext(ctx, kubectl, full...).CombinedOutput()
	return string(out), err
}
