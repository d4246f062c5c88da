//go:build e2e

package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

const (
	warmUp   = 3 * time.Second // load before the change: the report shows a steady state first
	tail     = 3 * time.Second // load after the rollout settled: late failures still count
	settleIn = 5 * time.Minute // longest a rollout may take
)

// scenario is a change to a workload of `before` replicas that leaves `after` ready ones.
type scenario struct {
	name          string
	before, after int32
	change        func(ctx context.Context, workload string, iteration int) error
	// > 0: beside the keep-alive load, a caller opening a new connection per request through the
	// Service at this rate (requests/s)
	newConnRate float64
	// retired: how many pods the change deletes, when not what before and after imply (a force
	// deletion replaces one pod without changing the replica count)
	retired int
	// defaultCallers: the load is defaultCallers' (every protocol, client defaults) instead of
	// the tuned HTTP/1.1 callers
	defaultCallers bool
	// plainPOSTs > 0: the load is plain POSTs from Go's default HTTP/1.1 client at this rate
	// on each path, and nothing else
	plainPOSTs float64
	// check, when set, runs once the rollout settled, under load, before the workload is torn
	// down (the fault cases measure the registries there)
	check func(ctx context.Context, workload string) error
}

var (
	rollingUpdate = scenario{name: "rolling-update", before: 6, after: 6, change: func(ctx context.Context, name string, i int) error {
		return updateDeployment(ctx, name, func(d *appsv1.Deployment) {
			c := &d.Spec.Template.Spec.Containers[0]
			c.Env = append(c.Env, revisionEnv(i))
		})
	}}
	rolloutRestart = scenario{name: "rollout-restart", before: 6, after: 6, change: func(ctx context.Context, name string, _ int) error {
		out, err := cl.KubectlOutput(ctx, namespace, "rollout", "restart", "deployment/"+name)
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}}
	scaleDown = scenario{name: "scale-down-6-2", before: 6, after: 2, change: func(ctx context.Context, name string, _ int) error {
		return updateDeployment(ctx, name, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](2) })
	}}
	scenarios = []scenario{rollingUpdate, rolloutRestart, scaleDown}
)

func updateDeployment(ctx context.Context, name string, mutate func(*appsv1.Deployment)) error {
	for {
		d, err := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		mutate(d)
		_, err = cs.AppsV1().Deployments(namespace).Update(ctx, d, metav1.UpdateOptions{})
		if !apierrors.IsConflict(err) {
			return err
		}
	}
}

// execute runs one scenario for one variant: deploy, load, change, wait until the rollout has
// settled and every retired pod has exited, keep loading a little longer, collect.
func execute(ctx context.Context, v variant, sc scenario, iteration int) (report.Run, error) {
	run := report.Run{Scenario: sc.name, Variant: v.name, Iteration: iteration}
	name := v.workload()
	GinkgoWriter.Printf("── %s · %s · #%d\n", sc.name, v.name, iteration)
	if _, err := cs.CoreV1().Services(namespace).Create(ctx, v.service(), metav1.CreateOptions{}); err != nil {
		return run, fmt.Errorf("create service: %w", err)
	}
	if _, err := cs.AppsV1().Deployments(namespace).Create(ctx, v.deployment(sc.before), metav1.CreateOptions{}); err != nil {
		return run, fmt.Errorf("create deployment: %w", err)
	}
	defer func() {
		if err := teardown(context.WithoutCancel(ctx), v); err != nil {
			GinkgoWriter.Printf("teardown of %s: %v\n", name, err)
		}
	}()
	if err := waitDeploymentAvailable(ctx, namespace, name, 3*time.Minute); err != nil {
		return run, err
	}
	if v.lastcall && !v.handWritten {
		if err := checkInjected(ctx, name); err != nil {
			return run, err
		}
	}
	if err := waitConsulPassing(ctx, name, int(sc.before), time.Minute); err != nil {
		return run, err
	}
	if err := waitServiceRouted(ctx, name, time.Minute); err != nil {
		return run, err
	}

	w, err := watchPods(ctx, "app="+name)
	if err != nil {
		return run, fmt.Errorf("watch pods: %w", err)
	}
	defer w.stop()
	old := w.uids()

	loadName := fmt.Sprintf("%s-%s-%d", sc.name, v.name, iteration)
	if err := loadStart(ctx, loadName, name, sc); err != nil {
		return run, err
	}
	stopped := false
	defer func() {
		if !stopped {
			_, _ = loadStop(context.WithoutCancel(ctx), loadName)
		}
	}()
	if err := sleepCtx(ctx, warmUp); err != nil {
		return run, err
	}

	run.Start = time.Now()
	if err := sc.change(ctx, name, iteration); err != nil {
		return run, fmt.Errorf("%s: %w", sc.name, err)
	}
	retired := int(sc.before)
	switch {
	case sc.retired > 0:
		retired = sc.retired
	case sc.after < sc.before:
		retired = int(sc.before - sc.after)
	}
	var last string
	err = wait(ctx, settleIn, func() (bool, error) {
		ready, deleted, allExited := w.progress(old)
		last = fmt.Sprintf("%d ready (want %d), %d of %d retired pods deleted, all exited: %t", ready, sc.after, deleted, retired, allExited)
		if ready != int(sc.after) || deleted < retired || !allExited {
			return false, nil
		}
		d, err := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == sc.after &&
			d.Status.AvailableReplicas == sc.after && d.Status.Replicas == sc.after, nil
	})
	if err != nil {
		return run, fmt.Errorf("rollout did not settle (%s): %w", last, err)
	}
	drains, ready, end := w.drains(run.Start)
	run.End, run.Drains, run.Ready = end, drains, ready
	if sc.check != nil {
		if err := sc.check(ctx, name); err != nil {
			return run, fmt.Errorf("%s: %w", sc.name, err)
		}
	}
	if err := sleepCtx(ctx, tail); err != nil {
		return run, err
	}
	records, err := loadStop(ctx, loadName)
	stopped = true
	if err != nil {
		return run, err
	}
	run.Records = records
	return run, nil
}

// teardown deletes the variant's workload and waits until its pods are gone, so the next run
// starts on an idle cluster.
func teardown(ctx context.Context, v variant) error {
	name := v.workload()
	fg := metav1.DeletePropagationForeground
	err := cs.AppsV1().Deployments(namespace).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &fg})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err := cs.CoreV1().Services(namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return wait(ctx, 2*time.Minute, func() (bool, error) {
		pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		_, derr := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		return len(pods.Items) == 0 && apierrors.IsNotFound(derr), nil
	})
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitConsulPassing waits until Consul lists n passing instances of service, read through the
// API server's service proxy.
func waitConsulPassing(ctx context.Context, service string, n int, timeout time.Duration) error {
	var got int
	err := wait(ctx, timeout, func() (bool, error) {
		raw, err := cs.CoreV1().Services(namespace).ProxyGet("http", "consul", "8500",
			"/v1/health/service/"+service, map[string]string{"passing": "true"}).DoRaw(ctx)
		if err != nil {
			return false, nil //nolint:nilerr // Consul or the proxy not ready yet: keep waiting
		}
		var entries []json.RawMessage
		if err := json.Unmarshal(raw, &entries); err != nil {
			return false, fmt.Errorf("consul answer: %w", err)
		}
		got = len(entries)
		return got == n, nil
	})
	if err != nil {
		return fmt.Errorf("consul lists %d passing instances of %s, want %d: %w", got, service, n, err)
	}
	return nil
}

// The load generator's control API, reached through the API server's pod proxy.

type generator struct {
	Path           report.Path     `json:"path"`
	Protocol       report.Protocol `json:"protocol,omitempty"`
	URL            string          `json:"url,omitempty"`
	ConsulAddr     string          `json:"consulAddr,omitempty"`
	Service        string          `json:"service,omitempty"`
	Port           int             `json:"port,omitempty"`
	URLPath        string          `json:"urlPath,omitempty"`
	Rate           float64         `json:"rate"`
	Method         string          `json:"method,omitempty"`
	Conns          int             `json:"conns,omitempty"`
	Timeout        string          `json:"timeout"`
	IdleTimeout    string          `json:"idleTimeout,omitempty"`
	Connection     string          `json:"connection,omitempty"`
	IdempotencyKey bool            `json:"idempotencyKey,omitempty"`
}

func loadProxy(ctx context.Context, verb, endpoint string, params map[string]string, body []byte) ([]byte, error) {
	req := cs.CoreV1().RESTClient().Verb(verb).Namespace(namespace).Resource("pods").
		Name(fmt.Sprintf("%s:%d", loadgenName, loadgenPort)).SubResource("proxy").Suffix(endpoint)
	for k, v := range params {
		req = req.Param(k, v)
	}
	if body != nil {
		req = req.Body(body).SetHeader("Content-Type", "application/json")
	}
	raw, err := req.DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("loadgen %s /%s: %w: %s", verb, endpoint, err, strings.TrimSpace(string(raw)))
	}
	return raw, nil
}

func loadStart(ctx context.Context, name, workload string, sc scenario) error {
	gens := tunedCallers(workload, sc.newConnRate)
	switch {
	case sc.defaultCallers:
		gens = defaultCallers(workload)
	case sc.plainPOSTs > 0:
		gens = plainPOSTs(workload, sc.plainPOSTs)
	}
	body, err := json.Marshal(map[string]any{"name": name, "generators": gens})
	if err != nil {
		return err
	}
	_, err = loadProxy(ctx, "POST", "start", nil, body)
	return err
}

// tunedCallers is the load the suite was built on: HTTP/1.1 POSTs from a client tuned for
// lastcall, through the Service and balanced over Consul, plus a new-connection caller when
// newConnRate > 0.
func tunedCallers(workload string, newConnRate float64) []generator {
	// POST: Go's client does not resend it when a keep-alive connection closes under it, so
	// every lost request shows. Idle connections close after 500 ms, below lastcall-prestop's
	// --quiet (1 s): see "Callers' idle connections" in the README.
	common := generator{Rate: conf.rate, Method: "POST", Conns: 32, Timeout: "5s", IdleTimeout: conf.idle.String()}
	svc, viaConsul := common, common
	svc.Path, svc.URL = "service", fmt.Sprintf("http://%s.%s.svc.cluster.local/work", workload, namespace)
	viaConsul.Path, viaConsul.ConsulAddr, viaConsul.Service, viaConsul.Port, viaConsul.URLPath = "consul", consulURL, workload, appPort, "/work"
	gens := []generator{svc, viaConsul}
	if newConnRate > 0 {
		// every request on a new connection, routed afresh by the node's dataplane
		fresh := svc
		fresh.Rate, fresh.Connection = newConnRate, "new"
		gens = append(gens, fresh)
	}
	return gens
}

// plainPOSTs is the caller the keep-alive race hits: POSTs without an Idempotency-Key from Go's
// default HTTP/1.1 client (90 s idle connections), at rate on each path.
func plainPOSTs(workload string, rate float64) []generator {
	var gens []generator
	for _, g := range defaultCallers(workload) {
		if g.Protocol == report.ProtoHTTP1Default && !g.IdempotencyKey {
			g.Rate = rate
			gens = append(gens, g)
		}
	}
	return gens
}

// defaultCallers are callers as they come (issue 15), each with its client library's defaults,
// on both paths at conf.callerRate: HTTP/1.1 through Go's http.DefaultTransport settings (90 s
// idle connections) with plain POSTs and with POSTs carrying an Idempotency-Key, h2c, and gRPC
// unary calls (pick_first: one connection through the Service; one per instance over Consul).
func defaultCallers(workload string) []generator {
	var gens []generator
	for _, path := range []report.Path{report.PathService, report.PathConsul} {
		base := generator{Path: path, Rate: conf.callerRate, Timeout: "5s", Method: "POST"}
		if path == report.PathService {
			base.URL = fmt.Sprintf("http://%s.%s.svc.cluster.local/work", workload, namespace)
		} else {
			base.ConsulAddr, base.Service, base.Port, base.URLPath = consulURL, workload, appPort, "/work"
		}
		plain, keyed, h2c := base, base, base
		plain.Protocol, keyed.Protocol, h2c.Protocol = report.ProtoHTTP1Default, report.ProtoHTTP1Default, report.ProtoH2C
		keyed.IdempotencyKey = true
		rpc := base
		rpc.Protocol, rpc.Method, rpc.URLPath = report.ProtoGRPC, "", ""
		if path == report.PathService {
			rpc.URL = fmt.Sprintf("%s.%s.svc.cluster.local:%d", workload, namespace, grpcPort)
		} else {
			rpc.Port = grpcPort
		}
		gens = append(gens, plain, keyed, h2c, rpc)
	}
	return gens
}

func loadStop(ctx context.Context, name string) ([]report.Record, error) {
	raw, err := loadProxy(ctx, "POST", "stop", map[string]string{"name": name}, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		Records []report.Record `json:"records"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("loadgen stop answer: %w", err)
	}
	if len(out.Records) == 0 {
		return nil, errors.New("loadgen recorded no request")
	}
	return out.Records, nil
}

// checkInjected fails when a pod of the label-only workload was admitted without injection:
// created right after `helm install`, it proves the chart's install check held Helm long enough.
func checkInjected(ctx context.Context, name string) error {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return fmt.Errorf("list pods of %s: %w", name, err)
	}
	for _, p := range pods.Items {
		if p.Annotations["lastcall.dev/injected"] == "" {
			return fmt.Errorf("pod %s was admitted without injection (no lastcall.dev/injected): the API server did not reach the webhook", p.Name)
		}
	}
	return nil
}
