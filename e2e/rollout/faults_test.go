//go:build e2e

package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

// Faults under load (issue 14, label faults, `make e2e-faults`): each case runs a change under
// the two-path load with lastcall and without it (control) while something fails, and reports
// what the targets count: failures by class, Consul instances left for pods that are
// gone, pods alive past their grace period, the longest drain. faults.md in the report
// directory has a table per case; docs/reliability.md copies it.

const (
	// staleLimit is how long after a fault ends Consul may still list instances of pods that
	// are gone.
	staleLimit = 60 * time.Second
	// giveUpLimit is how long after Kubernetes deleted a lost node's pods Consul may still list
	// their instances with lastcall.
	giveUpLimit = 10 * time.Second
	// graceSlack absorbs the harness's watch latency when it compares a drain with the grace
	// period.
	graceSlack = 2 * time.Second
	// leaseName is the controller's leader election Lease (the chart's --leader-election-id).
	leaseName = "lastcall-controller.lastcall.dev"
)

// faultCase is one bad day: a scenario, what breaks during it, and what must still hold.
type faultCase struct {
	name, about string
	sc          scenario
	// tweak changes both variants' Deployment (grace period, annotations); helperArgs are
	// appended to lastcall-prestop's command.
	tweak      func(*appsv1.Deployment)
	helperArgs []string
	// setup runs before the case's runs, undo after them (e.g. two controller replicas).
	setup func(ctx context.Context) (undo func(context.Context) error, err error)
	// inject breaks something at the change + at, and returns what mends it after hold.
	inject func(ctx context.Context, workload string) (heal func(context.Context) error, err error)
	at     time.Duration
	hold   time.Duration
	// zero: lastcall must fail no request (the fault leaves a live registry and a live pod).
	zero bool
	// events are Warning reasons lastcall must record on the Deployment.
	events []string
	// noKubelet: pods on a node without a kubelet cannot exit, whatever their grace period;
	// their drains are reported, not held to it.
	noKubelet bool
}

// faultResult is one run of one case.
type faultResult struct {
	name       string
	run        report.Run
	start, end time.Time     // the fault
	clean      time.Duration // fault end → no Consul instance of a pod that is gone; -1: not within staleLimit
	stale      int           // such instances at the end of that wait
	pastGrace  int
	longest    time.Duration
	// helpers is how many helpers reported, helperCPU the CPU time they used together.
	helpers   int
	helperCPU time.Duration
	events    []string // Warning reasons and messages on the Deployment
	detail    string   // what the fault itself measured
	// node-lost: Kubernetes deleting the lost pods → Consul listing none of them; -1 when
	// either did not happen during the outage
	afterGiveUp time.Duration
	err         error
}

var faultResults []faultResult

var faultCases = []faultCase{
	{
		name: "consul-restart", about: "the Consul server's process killed 2 s into a rolling update; the kubelet restarts it with its data",
		sc: rollingUpdate, at: 2 * time.Second, zero: true,
		inject: func(ctx context.Context, _ string) (func(context.Context) error, error) {
			if err := signalConsul(ctx, "TERM"); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return waitConsulLeader(ctx, 2*time.Minute) }, nil
		},
	},
	{
		name: "consul-hang-20s", about: "the Consul server frozen (SIGSTOP) for 20 s, 2 s into a rolling update: connections open, nothing answers",
		sc: rollingUpdate, at: 2 * time.Second, hold: 20 * time.Second,
		inject: func(ctx context.Context, _ string) (func(context.Context) error, error) {
			if err := signalConsul(ctx, "STOP"); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return signalConsul(ctx, "CONT") }, nil
		},
	},
	{
		name: "consul-refused-20s", about: "connections to the Consul server refused (TCP reset) for 20 s, 2 s into a rolling update, and one serving pod deleted 1 s into it: Consul down, not frozen",
		sc: rollingUpdate, at: 2 * time.Second, hold: 20 * time.Second,
		inject: func(ctx context.Context, workload string) (func(context.Context) error, error) {
			heal, err := refuseConsul(ctx)
			if err != nil {
				return nil, err
			}
			// Both variants must drain a pod inside the outage: the rollout alone may delete none
			// there (its new pods cannot register while Consul refuses), and did so in one
			// variant only in a run where the other did.
			err = sleepCtx(ctx, time.Second)
			if err == nil {
				err = deleteOne(ctx, workload, nil)
			}
			if err != nil {
				return nil, errors.Join(err, heal(context.WithoutCancel(ctx)))
			}
			return heal, nil
		},
	},
	{
		name: "leader-killed", about: "two controller replicas; the leader's pod force-deleted 2 s into a rolling update",
		sc: rollingUpdate, at: 2 * time.Second, zero: true,
		setup: func(ctx context.Context) (func(context.Context) error, error) {
			if err := helmInstall(ctx, "--set", "replicaCount=2"); err != nil {
				return nil, err
			}
			return func(ctx context.Context) error { return helmInstall(ctx) }, waitDeploymentAvailable(ctx, releaseNamespace, "lastcall-controller", 3*time.Minute)
		},
		inject: func(ctx context.Context, _ string) (func(context.Context) error, error) {
			return nil, killLeader(ctx)
		},
	},
	{
		name: "api-outage-20s", about: "the API server unreachable from the workers and their pods for 20 s (packets dropped), 2 s into a rolling update",
		sc: rollingUpdate, at: 2 * time.Second, hold: 20 * time.Second, zero: true,
		inject: apiOutage,
	},
	{
		name: "force-delete", about: "`kubectl delete --grace-period=0 --force` of one serving pod under load",
		sc: scenario{name: "force-delete", before: 6, after: 6, retired: 1, change: func(context.Context, string, int) error { return nil }},
		inject: func(ctx context.Context, workload string) (func(context.Context) error, error) {
			return nil, forceDeleteOne(ctx, workload)
		},
	},
	{
		name: "grace-squeeze", about: "terminationGracePeriodSeconds 12 against a drain budget of 20 s and a reserve of 10 s; scale-down 6 → 2",
		sc: scaleDown, zero: true, events: []string{"GraceTooShort"},
		tweak: func(d *appsv1.Deployment) { d.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](12) },
	},
	{
		name: "bad-input", about: "garbage in every drain annotation and in a helper flag; scale-down 6 → 2",
		sc: scaleDown, zero: true, events: []string{"InvalidAnnotation"},
		tweak: func(d *appsv1.Deployment) {
			a := d.Spec.Template.Annotations
			if a == nil {
				a = map[string]string{}
			}
			a["lastcall.dev/drain-budget"] = "banana"
			a["lastcall.dev/reserve"] = "-3s"
			d.Spec.Template.Annotations = a
		},
		helperArgs: []string{"--quiet=banana"},
	},
	{
		name: "node-lost", about: "the worker without the controller killed (`docker kill`: every process on it gets SIGKILL, none a SIGTERM) under load for 100 s, then started again; pods tolerate the unreachable node for 30 s",
		sc: scenario{name: "node-lost", before: 6, after: 6, retired: 1, change: func(context.Context, string, int) error { return nil }},
		tweak: func(d *appsv1.Deployment) {
			for _, key := range []string{"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"} {
				d.Spec.Template.Spec.Tolerations = append(d.Spec.Template.Spec.Tolerations, corev1.Toleration{
					Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](30)})
			}
		},
		at: 2 * time.Second, hold: 100 * time.Second, noKubelet: true,
		inject: loseNode,
	},
	{
		name: "fifty-at-once", about: "50 pods draining at once: scale-down 60 → 10",
		sc: scenario{name: "scale-down-60-10", before: 60, after: 10, change: func(ctx context.Context, name string, _ int) error {
			return updateDeployment(ctx, name, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](10) })
		}},
		zero: true,
	},
}

var _ = Describe("faults under load", Label("faults"), Ordered, ContinueOnFailure, func() {
	AfterAll(func() {
		if len(faultResults) == 0 {
			return
		}
		md := faultsMarkdown(faultResults)
		fmt.Fprintf(os.Stdout, "\n%s\n", md)
		Expect(os.MkdirAll(conf.reportDir, 0o755)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(conf.reportDir, "faults.md"), []byte(md), 0o644)).To(Succeed())
	})

	for _, fc := range faultCases {
		It(fc.name+": "+fc.about, Label(fc.name), func(ctx SpecContext) {
			if fc.setup != nil {
				undo, err := fc.setup(ctx)
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(func(ctx SpecContext) { Expect(undo(ctx)).To(Succeed()) }, NodeTimeout(5*time.Minute))
			}
			var lc, ctl faultResult
			for _, v := range []variant{withLastcall, control} {
				res := runFault(ctx, fc, v)
				faultResults = append(faultResults, res)
				keep(res.run)
				Expect(res.err).NotTo(HaveOccurred())
				if v.lastcall {
					lc = res
				} else {
					ctl = res
				}
			}
			for _, s := range report.Summarize(lc.run) {
				GinkgoWriter.Printf("%s\n", describe(s))
			}
			// a pod the webhook missed drains like the control: the run would not measure lastcall
			Expect(lc.events).NotTo(ContainElement(HavePrefix("NotInjected:")), "lastcall pods were created without injection (controllers/warnings.NotInjected)")
			if !fc.noKubelet {
				Expect(lc.pastGrace).To(BeZero(), "pods alive past their grace period with lastcall")
			}
			Expect(lc.stale).To(BeZero(), "Consul instances of pods that are gone, %s after the fault", staleLimit)
			if fc.noKubelet {
				// The pods were killed outright: what fails is what was in flight to them or sent
				// before Consul's check and the node's NotReady stopped routing there, the same
				// with and without lastcall, so one run's difference is noise; what lastcall owns
				// is removing the instances Kubernetes has given up on.
				Expect(lc.afterGiveUp).To(And(BeNumerically(">=", 0), BeNumerically("<=", giveUpLimit)),
					"Consul still listed lost pods' instances %s after Kubernetes deleted them (limit %s)", lc.afterGiveUp, giveUpLimit)
			} else {
				Expect(failedAll(lc.run)).To(BeNumerically("<=", failedAll(ctl.run)), "lastcall failed more requests than the control")
			}
			if fc.zero {
				Expect(failedAll(lc.run)).To(BeZero(), "lastcall failed requests although the fault leaves a live registry and a live pod")
			}
			for _, reason := range fc.events {
				Expect(lc.events).To(ContainElement(HavePrefix(reason+":")), "no Warning %s on the Deployment", reason)
			}
		}, SpecTimeout(2*runTimeout+10*time.Minute))
	}
})

// runFault runs fc's scenario once with v, breaking what fc breaks during the change, and
// measures, before the workload is torn down, how long Consul kept instances of pods that are
// gone and which Warnings the Deployment got.
func runFault(ctx context.Context, fc faultCase, v variant) faultResult {
	res := faultResult{name: fc.name, clean: -1}
	// extra helper flags need the hook written into the template, not injected
	v.handWritten = v.handWritten || len(fc.helperArgs) > 0
	v.tweak = func(d *appsv1.Deployment) {
		if fc.tweak != nil {
			fc.tweak(d)
		}
		if v.lastcall && len(fc.helperArgs) > 0 {
			h := d.Spec.Template.Spec.Containers[0].Lifecycle.PreStop.Exec
			h.Command = append(h.Command, fc.helperArgs...)
		}
	}
	sc := fc.sc
	sc.name = "fault-" + fc.name
	type window struct {
		start, end time.Time
		err        error
	}
	done := make(chan window, 1)
	base := sc.change
	sc.change = func(ctx context.Context, name string, i int) error {
		if err := base(ctx, name, i); err != nil {
			return err
		}
		if fc.inject == nil {
			now := time.Now()
			done <- window{start: now, end: now}
			return nil
		}
		go func() {
			var w window
			defer func() { done <- w }()
			if sleepCtx(ctx, fc.at) != nil {
				return
			}
			w.start = time.Now()
			GinkgoWriter.Printf("fault %s: injected\n", fc.name)
			heal, err := fc.inject(ctx, name)
			if err != nil {
				w.err = fmt.Errorf("inject %s: %w", fc.name, err)
				return
			}
			if fc.hold > 0 {
				_ = sleepCtx(ctx, fc.hold)
			}
			if heal != nil {
				w.err = heal(context.WithoutCancel(ctx))
			}
			w.end = time.Now()
			GinkgoWriter.Printf("fault %s: healed after %s\n", fc.name, w.end.Sub(w.start).Round(time.Millisecond))
		}()
		return nil
	}
	sc.check = func(ctx context.Context, workload string) error {
		var w window
		select {
		case w = <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if w.err != nil {
			return w.err
		}
		res.start, res.end = w.start, w.end
		res.detail, res.afterGiveUp = lostNodeReport.take()
		res.clean, res.stale = waitNoStaleConsul(ctx, workload, w.end)
		evs, err := warnings(ctx, workload)
		res.events = evs
		return err
	}
	run, err := execute(ctx, v, sc, 1)
	res.run, res.err = run, err
	grace := time.Duration(gracePeriod) * time.Second
	if g := v.deployment(1).Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	for _, d := range run.Drains {
		took := d.Exited.Sub(d.Deleted)
		if !d.KillAt.IsZero() && !d.Finished.IsZero() {
			// the kubelet's record, to the second: the watch lags exits by seconds under load
			took = d.Finished.Sub(d.KillAt.Add(-grace))
		}
		res.longest = max(res.longest, took)
		if pastGrace(d, grace) {
			res.pastGrace++
		}
		if d.Helper != nil && d.Helper.CPUMs != nil {
			res.helpers++
			res.helperCPU += time.Duration(*d.Helper.CPUMs) * time.Millisecond
		}
	}
	return res
}

// pastGrace tells whether a pod outlived its grace period: by the kubelet's own record when it
// has one (SIGKILL's exit code 137, or the container's end after the deletionTimestamp), else
// by the watch, whose latency (seconds with 50 pods exiting at once on 2 cores) graceSlack
// absorbs.
func pastGrace(d report.Drain, grace time.Duration) bool {
	if d.ExitCode != nil && !d.KillAt.IsZero() && !d.Finished.IsZero() {
		// finishedAt has 1 s precision; the kubelet adds 2 s to a grace period the hook used up
		return *d.ExitCode == 137 || d.Finished.After(d.KillAt.Add(graceSlack+time.Second))
	}
	return d.Exited.Sub(d.Deleted) > grace+graceSlack
}

func failedAll(r report.Run) int {
	n := 0
	for _, s := range report.Summarize(r) {
		n += s.Failed
	}
	return n
}

// nodeExec runs a command in a kind node's container.
func nodeExec(ctx context.Context, node string, args ...string) error {
	out, err := exec.CommandContext(ctx, "docker", append([]string{"exec", node}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker exec %s %s: %w: %s", node, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// signalConsul sends sig to the Consul server's process, from its node's container (which sees
// its pods' processes; the host may run other Consul processes).
func signalConsul(ctx context.Context, sig string) error {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=consul"})
	if err != nil {
		return fmt.Errorf("the consul pod: %w", err)
	}
	if len(pods.Items) != 1 {
		return fmt.Errorf("the consul pod: %d found, want 1", len(pods.Items))
	}
	script := fmt.Sprintf(`n=0; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = consul ] && kill -%s ${p#/proc/} && n=$((n+1)); done; [ $n -ge 1 ]`, sig)
	return nodeExec(ctx, pods.Items[0].Spec.NodeName, "sh", "-c", script)
}

// refuseConsul answers every TCP packet to the Consul server's HTTP port with a reset, on its
// node's forwarding path (every pod's traffic to it, wherever the pod runs); the kubelet's probe
// (from the node itself) still passes, so Consul stays an endpoint that refuses.
func refuseConsul(ctx context.Context) (func(context.Context) error, error) {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=consul"})
	if err != nil {
		return nil, fmt.Errorf("the consul pod: %w", err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Status.PodIP == "" {
		return nil, fmt.Errorf("the consul pod: %d found, want 1 with an IP", len(pods.Items))
	}
	p := pods.Items[0]
	rule := func(ctx context.Context, op string) error {
		return nodeExec(ctx, p.Spec.NodeName, "iptables", op, "FORWARD", "-d", p.Status.PodIP, "-p", "tcp", "--dport", "8500",
			"-j", "REJECT", "--reject-with", "tcp-reset")
	}
	if err := rule(ctx, "-I"); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return rule(ctx, "-D") }, nil
}

// waitConsulLeader waits until the Consul server answers with a leader again.
func waitConsulLeader(ctx context.Context, timeout time.Duration) error {
	return wait(ctx, timeout, func() (bool, error) {
		_, err := cs.CoreV1().Services(namespace).ProxyGet("http", "consul", "8500", "/v1/catalog/nodes", nil).DoRaw(ctx)
		return err == nil, nil
	})
}

// killLeader force-deletes the controller pod that holds the leader Lease.
func killLeader(ctx context.Context) error {
	l, err := cs.CoordinationV1().Leases(releaseNamespace).Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("leader lease: %w", err)
	}
	holder := ptr.Deref(l.Spec.HolderIdentity, "")
	pod, _, _ := strings.Cut(holder, "_") // controller-runtime: <hostname>_<uuid>
	if pod == "" {
		return fmt.Errorf("leader lease %s has no holder", leaseName)
	}
	GinkgoWriter.Printf("fault leader-killed: deleting %s\n", pod)
	return cs.CoreV1().Pods(releaseNamespace).Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
}

// apiOutage drops, on the control-plane node, every packet to the API server's port from the
// workers and from their pods; the harness (from the Docker host) still reaches it.
func apiOutage(ctx context.Context, _ string) (func(context.Context) error, error) {
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var cp string
	var sources []string
	for _, n := range nodes.Items {
		if _, ok := n.Labels[controlPlaneLabel]; ok {
			cp = n.Name
			continue
		}
		sources = append(sources, n.Spec.PodCIDRs...)
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				sources = append(sources, a.Address)
			}
		}
	}
	if cp == "" || len(sources) == 0 {
		return nil, fmt.Errorf("control-plane node %q, sources %v", cp, sources)
	}
	rule := func(op string) error {
		for _, src := range sources {
			if err := nodeExec(ctx, cp, "iptables", op, "INPUT", "-p", "tcp", "--dport", "6443", "-s", src, "-j", "DROP"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := rule("-I"); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return rule("-D") }, nil
}

// forceDeleteOne deletes one ready pod of workload with grace period 0, as
// `kubectl delete --grace-period=0 --force` does.
func forceDeleteOne(ctx context.Context, workload string) error {
	return deleteOne(ctx, workload, ptr.To[int64](0))
}

// deleteOne deletes one ready pod of workload, with its own grace period when grace is nil.
func deleteOne(ctx context.Context, workload string, grace *int64) error {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + workload})
	if err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil && podReady(p) {
			GinkgoWriter.Printf("fault: deleting %s (grace %v)\n", p.Name, ptr.Deref(grace, -1))
			return cs.CoreV1().Pods(namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: grace})
		}
	}
	return fmt.Errorf("no ready pod of %s to delete", workload)
}

// waitNoStaleConsul waits, up to staleLimit after since, until Consul lists no instance of
// service whose pod (its pod-uid meta) is gone; it returns how long after since that held (-1:
// never) and how many such instances were left.
func waitNoStaleConsul(ctx context.Context, service string, since time.Time) (time.Duration, int) {
	stale := -1
	for {
		n, err := staleConsul(ctx, service)
		if err == nil {
			stale = n
			if n == 0 {
				return max(time.Since(since), 0), 0
			}
		}
		if time.Since(since) > staleLimit || sleepCtx(ctx, 250*time.Millisecond) != nil {
			return -1, stale
		}
	}
}

// consulPodUIDs lists the pod-uid meta of Consul's instances of service, one per instance.
func consulPodUIDs(ctx context.Context, service string) ([]string, error) {
	raw, err := cs.CoreV1().Services(namespace).ProxyGet("http", "consul", "8500", "/v1/catalog/service/"+service, nil).DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	var entries []struct {
		ServiceMeta map[string]string
	}
	if err := json.Unmarshal(raw, &entries); err != nil {
		return nil, fmt.Errorf("consul catalog: %w", err)
	}
	uids := make([]string, len(entries))
	for i, e := range entries {
		uids[i] = e.ServiceMeta["pod-uid"]
	}
	return uids, nil
}

// staleConsul counts Consul's instances of service whose pod-uid names no pod of the API.
func staleConsul(ctx context.Context, service string) (int, error) {
	uids, err := consulPodUIDs(ctx, service)
	if err != nil {
		return 0, err
	}
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + service})
	if err != nil {
		return 0, err
	}
	live := map[string]bool{}
	for _, p := range pods.Items {
		live[string(p.UID)] = true
	}
	n := 0
	for _, uid := range uids {
		if uid != "" && !live[uid] {
			n++
		}
	}
	return n, nil
}

// warnings lists the Warning Events on workload's Deployment as "Reason: message".
func warnings(ctx context.Context, workload string) ([]string, error) {
	d, err := cs.AppsV1().Deployments(namespace).Get(ctx, workload, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	evs, err := cs.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(d.UID) + ",type=Warning"})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// faultsMarkdown is a table per case, lastcall and control side by side.
func faultsMarkdown(results []faultResult) string {
	var b strings.Builder
	b.WriteString("## Faults under load\n\n")
	b.WriteString("One run per variant and case, under the suite's two-path load. clean = the fault's end → Consul lists no instance of a pod " +
		"that is gone (\"> 60 s\": some were left, counted in stale); past grace = pods the kubelet killed (exit code 137) or whose app " +
		"container ended more than 2 s after the deletionTimestamp (the kubelet's record, to the second); longest = the longest drain, " +
		"deletion → the container's end by the same record; helpers' CPU = the CPU time the lastcall-prestop processes used together " +
		"(from their reports in the termination messages; how many reported).\n")
	var order []string
	byCase := map[string][]faultResult{}
	for _, r := range results {
		if _, ok := byCase[r.name]; !ok {
			order = append(order, r.name)
		}
		byCase[r.name] = append(byCase[r.name], r)
	}
	for _, name := range order {
		i := slices.IndexFunc(faultCases, func(c faultCase) bool { return c.name == name })
		fmt.Fprintf(&b, "\n### %s\n\n%s.\n\n", name, faultCases[i].about)
		b.WriteString("| variant | requests (service / consul) | failed (service / consul) | failures by class | fault | clean | stale | past grace | longest | helpers' CPU | Warnings |\n" +
			"| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
		for _, r := range byCase[name] {
			var req, failed [2]int
			classes := map[report.Outcome]int{}
			for _, s := range report.Summarize(r.run) {
				k := 0
				if s.Path == report.PathConsul {
					k = 1
				}
				req[k] += s.Requests
				failed[k] += s.Failed
				for o, n := range s.Failures {
					classes[o] += n
				}
			}
			var cls []string
			for o, n := range classes {
				cls = append(cls, fmt.Sprintf("%s=%d", o, n))
			}
			slices.Sort(cls)
			clean := "> 60 s"
			if r.clean >= 0 {
				clean = short(r.clean)
			}
			var reasons []string
			for _, e := range r.events {
				reason, _, _ := strings.Cut(e, ":")
				reasons = append(reasons, reason)
			}
			cpu := "–"
			if r.helpers > 0 {
				cpu = fmt.Sprintf("%s (%d)", r.helperCPU.Round(10*time.Millisecond), r.helpers)
			}
			fmt.Fprintf(&b, "| %s | %d / %d | %d / %d | %s | %s | %s | %d | %d | %s | %s | %s |\n", r.run.Variant, req[0], req[1], failed[0], failed[1],
				strings.Join(cls, " "), short(r.end.Sub(r.start)), clean, r.stale, r.pastGrace, short(r.longest), cpu, strings.Join(slices.Compact(reasons), ", "))
		}
		for _, r := range byCase[name] {
			if r.detail != "" {
				fmt.Fprintf(&b, "\n%s: %s\n", r.run.Variant, r.detail)
			}
		}
	}
	return b.String()
}

// lostNodeReport carries what loseNode measured to the run's result.
var lostNodeReport faultNote

type faultNote struct {
	mu          sync.Mutex
	text        string
	afterGiveUp time.Duration
}

func (r *faultNote) set(s string, afterGiveUp time.Duration) {
	r.mu.Lock()
	r.text, r.afterGiveUp = s, afterGiveUp
	r.mu.Unlock()
}

func (r *faultNote) take() (string, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, d := r.text, r.afterGiveUp
	r.text, r.afterGiveUp = "", 0
	return s, d
}

// loseNode kills the worker that runs some of workload's pods but not the controller, and
// follows, every 250 ms until the node is started again, when the node turned NotReady, when
// its pods were deleted (Kubernetes gave up on them), when the EndpointSlices stopped listing
// them as ready and when Consul stopped listing them.
func loseNode(ctx context.Context, workload string) (func(context.Context) error, error) {
	pods, err := cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + workload})
	if err != nil {
		return nil, err
	}
	ctrl, err := cs.CoreV1().Pods(releaseNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=lastcall-controller"})
	if err != nil {
		return nil, err
	}
	avoid := map[string]bool{}
	for _, p := range ctrl.Items {
		avoid[p.Spec.NodeName] = true
	}
	onNode := map[string][]string{} // node → pod UIDs
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && !avoid[p.Spec.NodeName] {
			onNode[p.Spec.NodeName] = append(onNode[p.Spec.NodeName], string(p.UID))
		}
	}
	var node string
	for n, uids := range onNode {
		if node == "" || len(uids) > len(onNode[node]) {
			node = n
		}
	}
	if node == "" {
		return nil, fmt.Errorf("no worker runs pods of %s without the controller (controller on %v)", workload, avoid)
	}
	lost := map[string]bool{}
	for _, uid := range onNode[node] {
		lost[uid] = true
	}
	// the removal is measured by these pods' pod-uid meta: it must match them before the kill
	n, err := consulInstancesOf(ctx, workload, lost)
	if err != nil {
		return nil, fmt.Errorf("before the kill, Consul's catalog: %w", err)
	}
	if n != len(lost) {
		return nil, fmt.Errorf("before the kill Consul lists %d of the %d pods' instances on %s: the probe could not see their removal", n, len(lost), node)
	}
	GinkgoWriter.Printf("fault node-lost: killing %s (%d pods of %s)\n", node, len(lost), workload)
	start := time.Now()
	// kill, not stop: `docker stop` signals the node's systemd, which sends SIGTERM to every
	// process before the kill lands, and an app that deregisters on SIGTERM leaves Consul in
	// that window (a lost node gives its pods no such chance)
	if out, err := exec.CommandContext(ctx, "docker", "kill", node).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("docker kill %s: %w: %s", node, err, out)
	}
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var notReady, deleted, unlisted, deregistered time.Duration
	listed, consulErrs := -1, 0
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		since := func(d *time.Duration, ok bool) {
			if ok && *d == 0 {
				*d = time.Since(start)
			}
		}
		for watchCtx.Err() == nil {
			if n, err := cs.CoreV1().Nodes().Get(watchCtx, node, metav1.GetOptions{}); err == nil {
				ready := false
				for _, c := range n.Status.Conditions {
					ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
				}
				since(&notReady, !ready)
			}
			if ps, err := cs.CoreV1().Pods(namespace).List(watchCtx, metav1.ListOptions{LabelSelector: "app=" + workload}); err == nil {
				all := true
				for _, p := range ps.Items {
					if lost[string(p.UID)] && p.DeletionTimestamp == nil {
						all = false
					}
				}
				since(&deleted, all)
			}
			if n, err := readyOnNode(watchCtx, workload, node); err == nil {
				since(&unlisted, n == 0)
			}
			if n, err := consulInstancesOf(watchCtx, workload, lost); err == nil {
				if n != listed {
					// every change, so that a count that starts at 0 (a probe that matches
					// nothing) cannot pass for a fast removal
					GinkgoWriter.Printf("fault node-lost: %s after the kill Consul lists %d of the %d lost pods' instances\n", short(time.Since(start)), n, len(lost))
					listed = n
				}
				since(&deregistered, n == 0)
			} else {
				consulErrs++
			}
			_ = sleepCtx(watchCtx, 250*time.Millisecond)
		}
	}()
	return func(ctx context.Context) error {
		stopWatch()
		<-watched
		dash := func(d time.Duration) string {
			if d == 0 {
				return "not within the outage"
			}
			return short(d)
		}
		afterGiveUp := time.Duration(-1)
		if deleted > 0 && deregistered > 0 {
			afterGiveUp = max(deregistered-deleted, 0)
		}
		lostNodeReport.set(fmt.Sprintf("%s killed with %d pods of the workload; after the kill: node NotReady %s, "+
			"EndpointSlices list none of them as ready %s, their pods deleted (Kubernetes gave up) %s, Consul lists none of them %s "+
			"(%d catalog reads failed)",
			node, len(lost), dash(notReady), dash(unlisted), dash(deleted), dash(deregistered), consulErrs), afterGiveUp)
		if out, err := exec.CommandContext(ctx, "docker", "start", node).CombinedOutput(); err != nil {
			return fmt.Errorf("docker start %s: %w: %s", node, err, out)
		}
		return wait(ctx, 5*time.Minute, func() (bool, error) {
			n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // the API may lag the node's return: keep waiting
			}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					return c.Status == corev1.ConditionTrue, nil
				}
			}
			return false, nil
		})
	}, nil
}

// readyOnNode counts the workload's endpoints on node that its EndpointSlices list as ready.
func readyOnNode(ctx context.Context, workload, node string) (int, error) {
	eps, err := cs.DiscoveryV1().EndpointSlices(namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + workload})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, sl := range eps.Items {
		for _, e := range sl.Endpoints {
			if e.NodeName != nil && *e.NodeName == node && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				n++
			}
		}
	}
	return n, nil
}

// consulInstancesOf counts Consul's instances of service whose pod-uid is in uids.
func consulInstancesOf(ctx context.Context, service string, uids map[string]bool) (int, error) {
	listed, err := consulPodUIDs(ctx, service)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, uid := range listed {
		if uids[uid] {
			n++
		}
	}
	return n, nil
}
