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
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/lastcall-dev/lastcall/e2e/cluster"
)

const smokeImage = "lastcall.local/smokeapp:e2e"

var (
	cl        *cluster.Cluster
	cs        kubernetes.Interface
	namespace string
)

func TestSmoke(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kind smoke")
}

var _ = BeforeSuite(func(ctx SpecContext) {
	var err error
	cl, err = cluster.Connect(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	cs = cl.Client

	if os.Getenv("SMOKE_SKIP_IMAGES") != "1" {
		By("building " + smokeImage + " FROM scratch and loading it into the cluster")
		Expect(cl.Script(ctx, GinkgoWriter, []string{"BASE_IMAGE=scratch"}, "hack/images.sh",
			"e2e/smoke/testdata/smokeapp/Dockerfile="+smokeImage)).To(Succeed())
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

// run runs kubectl (same kubeconfig rules as the client: $KUBECONFIG, else ~/.kube/config) in
// the suite's namespace and returns its combined output.
func run(ctx context.Context, args ...string) (string, error) {
	return cl.KubectlOutput(ctx, namespace, args...)
}
