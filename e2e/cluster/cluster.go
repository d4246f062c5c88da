// Package cluster connects the e2e suites to the cluster of the current kubeconfig (a kind
// cluster from hack/kind-up.sh) and runs the repository's hack/ scripts and kubectl for them.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is a connection to the cluster under test.
type Cluster struct {
	Config   *rest.Config
	Client   kubernetes.Interface
	RepoRoot string
	Kubectl  string // kubectl binary
}

// Connect loads the kubeconfig ($KUBECONFIG, else ~/.kube/config) and finds kubectl.
// repoRoot is the repository's root directory, relative or absolute (hack/ scripts run from there).
func Connect(repoRoot string) (*Cluster, error) {
	repoRoot, err := filepath.Abs(repoRoot)
	if err != nil {
		return nil, fmt.Errorf("repository root: %w", err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("no usable kubeconfig (run hack/kind-up.sh first): %w", err)
	}
	// The suites create and watch a few hundred objects in bursts; client-go's default 5 QPS
	// would make the harness, not the cluster, the slow part.
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	kubectl, err := FindKubectl(repoRoot)
	if err != nil {
		return nil, err
	}
	return &Cluster{Config: cfg, Client: cs, RepoRoot: repoRoot, Kubectl: kubectl}, nil
}

// FindKubectl returns $KUBECTL, kubectl on PATH, or the one hack/build-kube.sh cached.
func FindKubectl(repoRoot string) (string, error) {
	if k := os.Getenv("KUBECTL"); k != "" {
		return k, nil
	}
	if k, err := exec.LookPath("kubectl"); err == nil {
		return k, nil
	}
	cache := os.Getenv("LASTCALL_CACHE")
	if cache == "" {
		cache = filepath.Join(repoRoot, ".cache")
	}
	matches, _ := filepath.Glob(filepath.Join(cache, "kubernetes", "*", "kubectl"))
	if len(matches) == 0 {
		return "", errors.New("no kubectl: set KUBECTL, put kubectl on PATH, or run hack/build-kube.sh kubectl")
	}
	sort.Strings(matches)
	return matches[len(matches)-1], nil
}

// KubectlOutput runs kubectl in namespace (the kubeconfig's default when empty) and returns its
// combined output.
func (c *Cluster) KubectlOutput(ctx context.Context, namespace string, args ...string) (string, error) {
	if namespace != "" {
		args = append([]string{"--namespace", namespace}, args...)
	}
	return c.Run(ctx, c.Kubectl, args...)
}

// Run runs a command from the repository root and returns its combined output.
func (c *Cluster) Run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = c.RepoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w", filepath.Base(bin), strings.Join(args, " "), err)
	}
	return string(out), nil
}

// Script runs a hack/ script (path relative to the repository root) with extra environment,
// its output going to w.
func (c *Cluster) Script(ctx context.Context, w io.Writer, env []string, script string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.RepoRoot, script), args...)
	cmd.Dir = c.RepoRoot
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", script, err)
	}
	return nil
}

// ScriptOutput runs a hack/ script and returns its standard output (stderr goes to w).
func (c *Cluster) ScriptOutput(ctx context.Context, w io.Writer, script string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.RepoRoot, script), args...)
	cmd.Dir = c.RepoRoot
	cmd.Stderr = w
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	return string(out), nil
}
