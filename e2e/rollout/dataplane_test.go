//go:build e2e

package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// The slow dataplane (issue 13): kube-proxy programs a change at most every 10 s, as operators
// set it at scale, and a caller opening a new connection per request through the Service meets
// every node's lag. With lastcall-node's confirmation no request may fail; without it (the
// helper's --settle only) and with `preStop: sleep 5` requests must fail, else the spec cannot
// tell the agent from nothing.

const (
	slowMinSync = "10s"
	// newConnRate is the new-connection caller's rate: low, so that the helper's --quiet window
	// sees gaps between its requests, as it does for such callers in real clusters
	newConnRate = 2.0
	// dataplaneCondition is the pod condition the controller sets from the agents' answers.
	dataplaneCondition = "lastcall.dev/dataplane-drained"
)

var (
	slowRollingUpdate = scenario{name: "slow-dataplane-rolling-update", before: rollingUpdate.before, after: rollingUpdate.after,
		change: rollingUpdate.change, newConnRate: newConnRate}
	slowScaleDown = scenario{name: "slow-dataplane-scale-down-6-2", before: scaleDown.before, after: scaleDown.after,
		change: scaleDown.change, newConnRate: newConnRate}
	slowScenarios = []scenario{slowRollingUpdate, slowScaleDown}

	// each variant its own workload name, so that nothing one leaves behind is taken for another's
	withAgent    = variant{name: "lastcall-agent", lastcall: true}
	settleOnly   = variant{name: "lastcall-settle", lastcall: true}
	slowSleep    = sleepVariant(5)
	agentHelmSet = []string{"--set", "node.enabled=true", "--set", "node.image.tag=dev", "--set", "node.image.pullPolicy=Never"}

	// dataplaneRows: per retired pod of the runs with the agent, for dataplane.md
	dataplaneRows []lagRow
)

var _ = Describe("slow dataplane (kube-proxy minSyncPeriod 10s)", Label("slow-dataplane"), Ordered, ContinueOnFailure, func() {
	BeforeAll(func(ctx SpecContext) {
		if !conf.skipImages {
			// from the iptables/nft base the offline node image build made (hack/images.sh finds it)
			By("building the lastcall-node image and loading it into kind")
			Expect(cl.Script(ctx, GinkgoWriter, nil, "hack/images.sh", "cmd/lastcall-node/Dockerfile=lastcall-node:dev")).To(Succeed())
		}
		By("kube-proxy: minSyncPeriod " + slowMinSync)
		restore, err := setKubeProxyMinSync(ctx, slowMinSync)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx SpecContext) {
			By("kube-proxy: its configuration as it was")
			Expect(restore(ctx)).To(Succeed())
		}, NodeTimeout(5*time.Minute))
	}, NodeTimeout(5*time.Minute))

	AfterAll(func() {
		if len(dataplaneRows) == 0 {
			return
		}
		md := lagMarkdown(dataplaneRows)
		fmt.Fprintf(os.Stdout, "\n%s\n", md)
		Expect(os.MkdirAll(conf.reportDir, 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(conf.reportDir, "dataplane.md"), []byte(md), 0o644)).To(Succeed())
	})

	It("lastcall with lastcall-node fails no request, the new-connection caller's included", func(ctx SpecContext) {
		By("helm upgrade: node.enabled=true (the agents and the controller's fan-in)")
		Expect(helmInstall(ctx, agentHelmSet...)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			By("helm upgrade: the suite's values again (no agent)")
			Expect(helmInstall(ctx)).To(Succeed())
		}, NodeTimeout(5*time.Minute))
		Expect(waitControllerArg(ctx, "--dataplane-agents")).To(Succeed())

		var failed []string
		for _, sc := range slowScenarios {
			for i := 1; i <= conf.iterations; i++ {
				lw, err := watchLag(ctx, withAgent.workload())
				Expect(err).NotTo(HaveOccurred())
				r, err := execute(ctx, withAgent, sc, i)
				rows := lw.rows(sc.name, i, r.Start, r.End)
				lw.stop()
				keep(r)
				dataplaneRows = append(dataplaneRows, rows...)
				for _, row := range rows {
					GinkgoWriter.Printf("%s\n", row)
				}
				Expect(err).NotTo(HaveOccurred())
				for _, s := range report.Summarize(r) {
					GinkgoWriter.Printf("%s\n", describe(s))
					if s.Failed > 0 {
						failed = append(failed, describe(s))
					}
				}
			}
		}
		Expect(failed).To(BeEmpty(), "lastcall runs with the agent that failed requests")
	}, SpecTimeout(time.Duration(len(slowScenarios)*conf.iterations)*runTimeout+10*time.Minute))

	It("lastcall without lastcall-node (--settle only) fails requests of the new-connection caller (control)", func(ctx SpecContext) {
		Expect(helmInstall(ctx)).To(Succeed()) // no agent, no fan-in
		expectNewConnFailures(ctx, settleOnly)
	}, SpecTimeout(time.Duration(len(slowScenarios))*runTimeout+5*time.Minute))

	It("`preStop: sleep 5` fails requests of the new-connection caller (control)", func(ctx SpecContext) {
		expectNewConnFailures(ctx, slowSleep)
	}, SpecTimeout(time.Duration(len(slowScenarios))*runTimeout))
})

// expectNewConnFailures runs every slow scenario once with v and expects the new-connection
// caller to have failed requests in them.
func expectNewConnFailures(ctx context.Context, v variant) {
	failed := 0
	for _, sc := range slowScenarios {
		r, err := execute(ctx, v, sc, 1)
		keep(r)
		Expect(err).NotTo(HaveOccurred())
		sums := report.Summarize(r)
		found := false
		for _, s := range sums {
			GinkgoWriter.Printf("%s\n", describe(s))
			if s.Path == report.PathService && s.Conn == report.ConnNew {
				found = true
				failed += s.Failed
			}
		}
		Expect(found).To(BeTrue(), "the load generator reported no new-connection caller")
	}
	Expect(failed).To(BeNumerically(">", 0),
		"%s failed no request of the new-connection caller in %d runs with kube-proxy's minSyncPeriod %s: this spec could not tell the agent from nothing",
		v.name, len(slowScenarios), slowMinSync)
}

// setKubeProxyMinSync sets minSyncPeriod of kube-proxy's iptables and nftables modes in its
// ConfigMap, restarts the kube-proxy pods and waits until every one is ready again. restore puts
// the ConfigMap back as it was, and restarts them again.
func setKubeProxyMinSync(ctx context.Context, period string) (restore func(context.Context) error, err error) {
	cms := cs.CoreV1().ConfigMaps("kube-system")
	cm, err := cms.Get(ctx, "kube-proxy", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("kube-proxy configmap: %w", err)
	}
	orig := cm.Data["config.conf"]
	var conf map[string]any
	if err := yaml.Unmarshal([]byte(orig), &conf); err != nil {
		return nil, fmt.Errorf("kube-proxy configmap config.conf: %w", err)
	}
	for _, mode := range []string{"iptables", "nftables"} {
		m, _ := conf[mode].(map[string]any)
		if m == nil {
			m = map[string]any{}
		}
		m["minSyncPeriod"] = period
		conf[mode] = m
	}
	text, err := yaml.Marshal(conf)
	if err != nil {
		return nil, err
	}
	apply := func(ctx context.Context, text string) error {
		cm, err := cms.Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kube-proxy configmap: %w", err)
		}
		cm.Data["config.conf"] = text
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update kube-proxy configmap: %w", err)
		}
		return restartKubeProxy(ctx)
	}
	if err := apply(ctx, string(text)); err != nil {
		return nil, err
	}
	GinkgoWriter.Printf("kube-proxy: minSyncPeriod %s, every pod ready again\n", period)
	return func(ctx context.Context) error { return apply(ctx, orig) }, nil
}

// restartKubeProxy restarts the kube-proxy DaemonSet's pods, so they read the ConfigMap again,
// and waits until the restart has reached every node and each new pod is ready.
func restartKubeProxy(ctx context.Context) error {
	if out, err := cl.KubectlOutput(ctx, "kube-system", "rollout", "restart", "ds/kube-proxy"); err != nil {
		return fmt.Errorf("restart kube-proxy: %w: %s", err, out)
	}
	if out, err := cl.KubectlOutput(ctx, "kube-system", "rollout", "status", "ds/kube-proxy", "--timeout=3m"); err != nil {
		return fmt.Errorf("kube-proxy restart: %w: %s", err, out)
	}
	var last string
	err := wait(ctx, 3*time.Minute, func() (bool, error) {
		ds, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "kube-proxy", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-proxy"})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range pods.Items {
			if pods.Items[i].DeletionTimestamp == nil && podReady(&pods.Items[i]) {
				ready++
			}
		}
		want := int(ds.Status.DesiredNumberScheduled)
		last = fmt.Sprintf("%d pods, %d ready, %d nodes", len(pods.Items), ready, want)
		return ds.Status.ObservedGeneration >= ds.Generation && int(ds.Status.UpdatedNumberScheduled) == want &&
			len(pods.Items) == want && ready == want, nil
	})
	if err != nil {
		return fmt.Errorf("kube-proxy pods not all ready after the restart (%s): %w", last, err)
	}
	return nil
}

// waitControllerArg waits until the controller's Deployment has rolled out with arg: helm's
// --wait does not say that the new pod is the one serving.
func waitControllerArg(ctx context.Context, arg string) error {
	d, err := cs.AppsV1().Deployments(releaseNamespace).Get(ctx, "lastcall-controller", metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !slices.Contains(d.Spec.Template.Spec.Containers[0].Args, arg) {
		return fmt.Errorf("lastcall-controller runs without %s: args %v", arg, d.Spec.Template.Spec.Containers[0].Args)
	}
	return waitDeploymentAvailable(ctx, releaseNamespace, "lastcall-controller", 3*time.Minute)
}

// waitServiceRouted waits until the load generator's node routes the workload's new Service:
// until kube-proxy has programmed its ClusterIP (up to minSyncPeriod after its creation),
// connections to it leave the cluster and whatever answers there (HTTP 404 on the project's
// machine) would be counted against the first seconds of the run. Probes open a new connection
// per request, so each is routed afresh; it holds when every one of a second's probes was served
// by a pod of the workload.
func waitServiceRouted(ctx context.Context, workload string, timeout time.Duration) error {
	probe := generator{Path: report.PathService, URL: fmt.Sprintf("http://%s.%s.svc.cluster.local/work", workload, namespace),
		Rate: 20, Method: "POST", Conns: 1, Timeout: "2s", IdleTimeout: "1s", Connection: "new"}
	body, err := json.Marshal(map[string]any{"name": "probe-" + workload, "generators": []generator{probe}})
	if err != nil {
		return err
	}
	var last string
	err = wait(ctx, timeout, func() (bool, error) {
		if _, err := loadProxy(ctx, "POST", "start", nil, body); err != nil {
			return false, err
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return false, err
		}
		recs, err := loadStop(ctx, "probe-"+workload)
		if err != nil {
			return false, err
		}
		for _, r := range recs {
			if r.Outcome != report.OK || !strings.HasPrefix(r.Pod, workload+"-") {
				last = fmt.Sprintf("%s (served by %q): %s", r.Outcome, r.Pod, r.Err)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("service %s not routed from the load generator's node (last probe %s): %w", workload, last, err)
	}
	return nil
}

// lagWatch follows a workload's pods and EndpointSlices and times, per pod, when its endpoint
// stopped being ready and when the controller's dataplane condition answered, as the harness saw
// them (watch events, milliseconds after the fact).
type lagWatch struct {
	mu   sync.Mutex
	pods map[string]*lagPod
	stop context.CancelFunc
}

type lagPod struct {
	deleted, exited    time.Time
	notReady           time.Time // its endpoint first seen not ready, or gone, after being ready
	endpointReady      bool
	firstWord          time.Time // the condition first seen, whatever its status
	answered           time.Time // the condition first seen True or Unknown
	status             corev1.ConditionStatus
	reason, message    string
	lastTransitionTime time.Time
}

func watchLag(ctx context.Context, workload string) (*lagWatch, error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &lagWatch{pods: map[string]*lagPod{}, stop: cancel}
	pf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "app=" + workload }))
	ef := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName + "=" + workload }))
	pi, ei := pf.Core().V1().Pods().Informer(), ef.Discovery().V1().EndpointSlices().Informer()
	onPod := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			w.pod(p)
		}
	}
	bySlice := map[string]map[string]bool{} // slice name → pod → ready; under w.mu
	onSlice := func(obj any, gone bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			w.slice(bySlice, s, gone)
		}
	}
	if _, err := pi.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }}); err != nil {
		cancel()
		return nil, err
	}
	if _, err := ei.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o any) { onSlice(o, false) }, UpdateFunc: func(_, o any) { onSlice(o, false) },
		DeleteFunc: func(o any) { onSlice(o, true) },
	}); err != nil {
		cancel()
		return nil, err
	}
	pf.Start(ctx.Done())
	ef.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pi.HasSynced, ei.HasSynced) {
		cancel()
		return nil, fmt.Errorf("watch %s: caches not synced", workload)
	}
	return w, nil
}

func (w *lagWatch) get(name string) *lagPod {
	p := w.pods[name]
	if p == nil {
		p = &lagPod{}
		w.pods[name] = p
	}
	return p
}

func (w *lagWatch) pod(p *corev1.Pod) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.get(p.Name)
	if p.DeletionTimestamp != nil && st.deleted.IsZero() {
		st.deleted = now
	}
	if !st.deleted.IsZero() && st.exited.IsZero() && appExited(p) {
		st.exited = now
	}
	for _, c := range p.Status.Conditions {
		// the first answer is kept; until then the latest word (False/Waiting …)
		if string(c.Type) != dataplaneCondition || !st.answered.IsZero() {
			continue
		}
		st.status, st.reason, st.message, st.lastTransitionTime = c.Status, c.Reason, c.Message, c.LastTransitionTime.Time
		if st.firstWord.IsZero() {
			st.firstWord = now
		}
		if c.Status != corev1.ConditionFalse {
			st.answered = now
		}
	}
}

// slice notes, for each pod it lists, whether the endpoint is ready; a pod that was ready and
// is now not, or no longer listed, is timed.
func (w *lagWatch) slice(all map[string]map[string]bool, s *discoveryv1.EndpointSlice, gone bool) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := map[string]bool{}
	if !gone {
		for _, e := range s.Endpoints {
			if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
				cur[e.TargetRef.Name] = e.Conditions.Ready == nil || *e.Conditions.Ready
			}
		}
	}
	for name, wasReady := range all[s.Name] {
		if ready, listed := cur[name]; wasReady && (!listed || !ready) {
			if st := w.get(name); st.notReady.IsZero() {
				st.notReady = now
			}
		}
	}
	for name, ready := range cur {
		st := w.get(name)
		st.endpointReady = st.endpointReady || ready
		if !ready && st.endpointReady && st.notReady.IsZero() {
			st.notReady = now
		}
	}
	all[s.Name] = cur
}

// lagRow is one retired pod of a run with the agent.
type lagRow struct {
	scenario           string
	iteration          int
	pod                string
	drain              time.Duration // deletion seen → container exit seen
	lag                time.Duration // endpoint not ready seen → condition's answer seen; 0: none
	firstWord          time.Duration // endpoint not ready seen → the condition first seen (any status); 0: none
	transitionLag      time.Duration // endpoint not ready seen → the condition's lastTransitionTime (whole seconds)
	status             corev1.ConditionStatus
	reason, message    string
	answered, notReady bool
}

func (r lagRow) String() string {
	return fmt.Sprintf("%s · #%d · %s: drain %s, dataplane lag %s (lastTransitionTime %s), first condition after %s, condition %s/%s %q",
		r.scenario, r.iteration, r.pod, r.drain.Round(time.Millisecond), r.lag.Round(time.Millisecond),
		r.transitionLag.Round(time.Millisecond), r.firstWord.Round(time.Millisecond), r.status, r.reason, r.message)
}

// rows lists the pods the change retired: deleted from start to end, not in the teardown.
func (w *lagWatch) rows(scenario string, iteration int, start, end time.Time) []lagRow {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []lagRow
	for name, st := range w.pods {
		if st.deleted.IsZero() || st.deleted.Before(start) || end.IsZero() || st.deleted.After(end) {
			continue
		}
		r := lagRow{scenario: scenario, iteration: iteration, pod: name, status: st.status, reason: st.reason, message: st.message,
			answered: !st.answered.IsZero(), notReady: !st.notReady.IsZero()}
		if !st.exited.IsZero() {
			r.drain = st.exited.Sub(st.deleted)
		}
		if !st.firstWord.IsZero() && r.notReady {
			r.firstWord = st.firstWord.Sub(st.notReady)
		}
		if r.answered && r.notReady {
			r.lag = st.answered.Sub(st.notReady)
			if !st.lastTransitionTime.IsZero() {
				r.transitionLag = st.lastTransitionTime.Sub(st.notReady)
			}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b lagRow) int { return strings.Compare(a.pod, b.pod) })
	return out
}

func lagMarkdown(rows []lagRow) string {
	var b strings.Builder
	b.WriteString("## slow dataplane: lastcall-node's confirmation per retired pod\n\n")
	b.WriteString("kube-proxy minSyncPeriod " + slowMinSync + ". lag = the pod's endpoint seen not ready → the condition `" +
		dataplaneCondition + "` seen answered (True or Unknown), as the harness's watches saw them; " +
		"transition = the same to the condition's lastTransitionTime (whole seconds); first = the same to the condition first seen, " +
		"whatever its status (the helper waits --settle, 500 ms, for a first word before it takes the agent for absent); " +
		"drain = deletion seen → container exit seen.\n\n")
	b.WriteString("| scenario | run | pod | drain | first | lag | transition | condition | message |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | --- | --- |\n")
	var lags []time.Duration
	for _, r := range rows {
		lag, tr := "–", "–"
		if r.answered && r.notReady {
			lag, tr = short(r.lag), short(r.transitionLag)
			lags = append(lags, r.lag)
		}
		cond := "none"
		if r.status != "" {
			cond = fmt.Sprintf("%s/%s", r.status, r.reason)
		}
		first := "–"
		if r.firstWord != 0 {
			first = short(r.firstWord)
		}
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", r.scenario, r.iteration, r.pod, short(r.drain), first, lag, tr, cond,
			strings.ReplaceAll(r.message, "|", `\|`))
	}
	fmt.Fprintf(&b, "\n%d retired pods, %d answered; lag median %s.\n", len(rows), len(lags), short(median(lags)))
	return b.String()
}
