// Command lastcall-controller closes the gaps a preStop hook alone cannot: it holds new pods
// un-ready until callers can find them, deregisters deleted pods the hook missed, and warns about
// unsafe drain settings. See --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/inject"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/controllers/webhook"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

var version = "dev"

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	leaderElectionNS       string
	leaderElectionID       string
	qps                    float64
	burst                  int
	showVersion            bool
	zap                    zap.Options
	// controllers are the reconcilers' settings; its Set holds every registry's options.
	controllers controllers.Config
	// webhook is the injection webhook's; on when its port is set.
	webhook        webhook.Config
	webhookService string
	injectMode     string
	injectPull     string
	// injectExcluded are the namespaces the webhook's configuration excludes besides
	// kube-system and its own (the chart's webhook.excludeNamespaces)
	injectExcluded []string
}

// vars lists the controller's settings: its own, then the registries' and the drain budget's,
// which are lastcall-prestop's too.
func (o *options) vars() []envflag.Var {
	c := &o.controllers
	vars := []envflag.Var{
		{Flag: "metrics-bind-address", Env: "LASTCALL_METRICS_BIND_ADDRESS", Default: ":8080", Help: "address of the Prometheus metrics endpoint (0 disables it)", Set: envflag.String(&o.metricsAddr)},
		{Flag: "health-probe-bind-address", Env: "LASTCALL_HEALTH_PROBE_BIND_ADDRESS", Default: ":8081", Help: "address of /healthz and /readyz", Set: envflag.String(&o.probeAddr)},
		{Flag: "leader-elect", Env: "LASTCALL_LEADER_ELECT", Default: "false", Bool: true, Help: "elect a leader so that only one replica reconciles and sweeps", Set: envflag.Bool(&o.leaderElect)},
		{Flag: "leader-election-namespace", Env: "LASTCALL_LEADER_ELECTION_NAMESPACE", Help: "namespace of the leader election Lease (default: the pod's own)", Set: envflag.String(&o.leaderElectionNS)},
		{Flag: "leader-election-id", Env: "LASTCALL_LEADER_ELECTION_ID", Default: "lastcall-controller.lastcall.dev", Help: "name of the leader election Lease; releases sharing a namespace need different names", Set: envflag.String(&o.leaderElectionID)},
		{Flag: "sweep-interval", Env: "LASTCALL_SWEEP_INTERVAL", Default: "30s", Help: "how often registries that keep entries until removed (Consul) are swept for entries of pods that no longer exist", Set: envflag.PositiveDuration(&c.SweepInterval)},
		{Flag: "gate-retry", Env: "LASTCALL_GATE_RETRY", Default: "1s", Help: "how soon a pod not yet visible to callers is checked again", Set: envflag.PositiveDuration(&c.GateRetry)},
		{Flag: "observe-interval", Env: "LASTCALL_OBSERVE_INTERVAL", Default: "250ms", Help: "how often a draining pod's registries are read for its drain timeline when they can only be polled (EndpointSlices and Consul are followed, not polled); the interval grows with the drain's age, to at most 5s", Set: envflag.PositiveDuration(&c.ObservePoll)},
		{Flag: "reconcile-timeout", Env: "LASTCALL_RECONCILE_TIMEOUT", Default: "30s", Help: "longest one reconcile of the gate, backstop, drain timelines or warnings may take; one that runs out is retried", Set: envflag.PositiveDuration(&c.ReconcileTimeout)},
		{Flag: "dataplane-agents", Env: "LASTCALL_DATAPLANE_AGENTS", Default: "false", Bool: true, Help: "ask the lastcall-node agents whether every node stopped routing to a draining pod, and publish the answer as the pod condition lastcall.dev/dataplane-drained", Set: envflag.Bool(&c.Dataplane.Enabled)},
		{Flag: "dataplane-agent-port", Env: "LASTCALL_DATAPLANE_AGENT_PORT", Default: strconv.Itoa(dataplane.DefaultPort), Help: "port of the lastcall-node API on each node's IP (hostNetwork)", Set: envflag.Int(&c.Dataplane.Port, 1)},
		{Flag: "dataplane-agent-service", Env: "LASTCALL_DATAPLANE_AGENT_SERVICE", Default: dataplane.DefaultService, Help: "headless Service selecting the lastcall-node pods; its EndpointSlices tell which node has an agent", Set: envflag.String(&c.Dataplane.Service)},
		{Flag: "dataplane-agent-namespace", Env: "LASTCALL_DATAPLANE_AGENT_NAMESPACE", Default: dataplane.DefaultNamespace, Help: "namespace of that Service", Set: envflag.String(&c.Dataplane.Namespace)},
		{Flag: "dataplane-node-timeout", Env: "LASTCALL_DATAPLANE_NODE_TIMEOUT", Default: dataplane.DefaultNodeTimeout.String(), Help: "how long a failing agent is waited for before its node is reported unconfirmed (the helper then waits --settle for it); also the longest a poll of an agent stays open", Set: envflag.PositiveDuration(&c.Dataplane.NodeTimeout)},
		{Flag: "kube-api-qps", Env: "LASTCALL_KUBE_API_QPS", Default: "50", Help: "sustained rate of requests to the Kubernetes API", Set: envflag.Float(&o.qps)},
		{Flag: "kube-api-burst", Env: "LASTCALL_KUBE_API_BURST", Default: "100", Help: "burst of requests to the Kubernetes API", Set: envflag.Int(&o.burst, 1)},
	}
	vars = append(vars, o.webhookVars()...)
	vars = append(vars, c.Set.Vars()...)
	return append(vars, c.Drain.Vars()...)
}

// webhookVars are the injection webhook's settings (issue 16); the drain budget it passes to
// the hook is --max-wait and --reserve.
func (o *options) webhookVars() []envflag.Var {
	w := &o.webhook
	return []envflag.Var{
		{Flag: "webhook-port", Env: "LASTCALL_WEBHOOK_PORT", Default: "0", Help: "serve the injection webhook (pods labelled " + inject.Label + "=true, or in a namespace so labelled) over HTTPS on this port; 0 turns it off", Set: envflag.Int(&w.Port, 0)},
		{Flag: "webhook-namespace", Env: "LASTCALL_WEBHOOK_NAMESPACE", Help: "namespace of the webhook's Service and certificate Secret (default: the pod's own)", Set: envflag.String(&w.Namespace)},
		{Flag: "webhook-exclude-namespaces", Env: "LASTCALL_WEBHOOK_EXCLUDE_NAMESPACES", Help: "comma-separated namespaces the webhook's configuration never selects besides kube-system and its own, so their pods are not reported as uninjected (the chart passes webhook.excludeNamespaces)", Set: envflag.List(&o.injectExcluded)},
		{Flag: "webhook-service", Env: "LASTCALL_WEBHOOK_SERVICE", Default: "lastcall-webhook", Help: "Service the API server calls the webhook through; the serving certificate is made for its DNS names", Set: envflag.String(&o.webhookService)},
		{Flag: "webhook-config-name", Env: "LASTCALL_WEBHOOK_CONFIG_NAME", Default: "lastcall-webhook", Help: "MutatingWebhookConfiguration whose caBundle the controller keeps current", Set: envflag.String(&w.ConfigName)},
		{Flag: "webhook-cert-secret", Env: "LASTCALL_WEBHOOK_CERT_SECRET", Default: "lastcall-webhook-cert", Help: "Secret holding the webhook's CA and serving certificate (tls.crt, tls.key)", Set: envflag.String(&w.SecretName)},
		{Flag: "webhook-manage-cert", Env: "LASTCALL_WEBHOOK_MANAGE_CERT", Default: "true", Bool: true, Help: "make and rotate the CA and serving certificate in that Secret and the caBundle (false: serve what cert-manager writes there)", Set: envflag.Bool(&w.ManageCert)},
		{Flag: "webhook-cert-validity", Env: "LASTCALL_WEBHOOK_CERT_VALIDITY", Default: "2160h", Help: "lifetime of the serving certificate, renewed when a third is left; the CA lives four times as long and is replaced the same way", Set: envflag.PositiveDuration(&w.Cert.Validity)},
		{Flag: "inject-image", Env: "LASTCALL_INJECT_IMAGE", Default: "lastcall-prestop:" + version, Help: "lastcall-prestop image the webhook injects the helper from", Set: envflag.String(&w.Inject.Image)},
		{Flag: "inject-image-pull-policy", Env: "LASTCALL_INJECT_IMAGE_PULL_POLICY", Default: string(corev1.PullIfNotPresent), Help: "pull policy of that image: Always, IfNotPresent or Never", Set: envflag.OneOf(&o.injectPull, string(corev1.PullAlways), string(corev1.PullIfNotPresent), string(corev1.PullNever))},
		{Flag: "inject-mode", Env: "LASTCALL_INJECT_MODE", Default: string(inject.ModeInitContainer), Help: "how the helper reaches the pod: init-container (copied into an emptyDir) or image-volume (the image mounted as a volume; needs image volumes, KEP-4639)", Set: envflag.OneOf(&o.injectMode, inject.Modes...)},
		{Flag: "inject-consul-addr", Env: "LASTCALL_INJECT_CONSUL_ADDR", Help: "Consul address given to injected pods that name a Consul service and set none themselves, e.g. http://$(HOST_IP):8500 for an agent on every node", Set: envflag.String(&w.Inject.ConsulAddr)},
	}
}

// webhookConfig completes the webhook's settings from the others once they are parsed.
func (o *options) webhookConfig(readFile func(string) ([]byte, error)) error {
	w := &o.webhook
	if w.Port == 0 {
		return nil
	}
	if w.Port > 65535 {
		return fmt.Errorf("--webhook-port %d: want a port number, 1 to 65535 (0 turns the webhook off)", w.Port)
	}
	if w.Namespace == "" {
		ns, err := readFile(serviceAccountNamespace)
		if err != nil {
			return errors.New("--webhook-namespace is not set and the pod's namespace is unknown (not in a cluster): set it")
		}
		w.Namespace = strings.TrimSpace(string(ns))
	}
	if w.Inject.Image == "" {
		return errors.New("--inject-image is empty: name the lastcall-prestop image")
	}
	svc := o.webhookService + "." + w.Namespace
	w.Cert.DNSNames = []string{svc + ".svc", svc + ".svc.cluster.local", svc}
	w.Cert.CAValidity = 4 * w.Cert.Validity
	w.Inject.Mode = inject.Mode(o.injectMode)
	w.Inject.PullPolicy = corev1.PullPolicy(o.injectPull)
	w.Inject.Drain = o.controllers.Drain
	w.Inject.Adapters = o.controllers.Set.Adapters()
	w.Inject.Resources = inject.DefaultResources()
	return nil
}

// serviceAccountNamespace is where Kubernetes writes the pod's namespace; tests replace
// readNamespaceFile.
const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

var readNamespaceFile = os.ReadFile

// parse reads args (on fs, which also carries controller-runtime's --kubeconfig), then env, then
// defaults, for the controller and every registry in table. --help writes usage and returns
// flag.ErrHelp.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string, usage io.Writer, table []registry.Adapter) (options, error) {
	o := options{controllers: controllers.Config{Set: registry.NewSet(registry.Controller, table)}}
	fs.SetOutput(io.Discard)
	bound := envflag.Bind(fs, o.vars())
	o.zap.BindFlags(fs)
	config.RegisterFlags(fs) // --kubeconfig, which ctrl.GetConfigOrDie reads
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	help := fs.Bool("help", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) { // -h
			return o, fmt.Errorf("%w (see --help)", err)
		}
		*help = true
	}
	if *help {
		fmt.Fprintf(usage, "lastcall-controller: registration gate, deregistration backstop and sweeper, drain timelines, unsafe-settings warnings and (with --dataplane-agents) dataplane confirmation for pods labelled %s=true; with --webhook-port, the webhook that injects lastcall into pods labelled %s=true.\n\nUsage: lastcall-controller [flags]\n       lastcall-controller check-webhook [flags]   (see check-webhook --help)\n\nEach flag can also be set by the environment variable shown; a flag wins over the env var.\n\n", managed.Label, inject.Label)
		bound.Usage(usage)
		return o, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: lastcall-controller takes only flags (see --help)", fs.Arg(0))
	}
	if err := bound.Apply(getenv); err != nil || o.showVersion {
		return o, err
	}
	if err := o.webhookConfig(readNamespaceFile); err != nil {
		return o, err
	}
	// The webhook never selects the controller's own namespace (the chart's release namespace), so
	// its pods are not reported as uninjected.
	if ns := o.webhook.Namespace; ns != "" {
		o.controllers.InjectExcluded = []string{ns}
	} else if ns, err := readNamespaceFile(serviceAccountNamespace); err == nil {
		o.controllers.InjectExcluded = []string{strings.TrimSpace(string(ns))}
	}
	o.controllers.InjectExcluded = append(o.controllers.InjectExcluded, o.injectExcluded...)
	if p := o.controllers.Dataplane.Port; p > 65535 {
		return o, fmt.Errorf("--dataplane-agent-port %d: want a port number, 1 to 65535", p)
	}
	var err error
	o.controllers.Registries, err = o.controllers.Set.Select(registry.Env{Binary: registry.Controller, InCluster: true})
	return o, err
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == checkCommand {
		os.Exit(checkMain(os.Args[2:]))
	}
	o, err := parse(flag.CommandLine, os.Args[1:], os.Getenv, os.Stdout, adapters.All())
	switch {
	case errors.Is(err, flag.ErrHelp):
		return
	case err != nil:
		fmt.Fprintf(os.Stderr, "lastcall-controller: %v\n", err)
		os.Exit(2)
	case o.showVersion:
		fmt.Printf("lastcall-controller %s\n", version)
		return
	}
	logger := zap.New(zap.UseFlagOptions(&o.zap))
	ctrl.SetLogger(logger)
	if err := run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), o, logger); err != nil {
		ctrl.Log.Error(err, "lastcall-controller failed")
		os.Exit(1)
	}
}

// checkMain runs the check-webhook subcommand and returns its exit code: 0 passed, 1 failed,
// 2 bad usage.
func checkMain(args []string) int {
	o, err := parseCheck(flag.NewFlagSet(checkCommand, flag.ContinueOnError), args, os.Getenv, os.Stdout)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(os.Stderr, "lastcall-controller %s: %v\n", checkCommand, err)
		return 2
	}
	cfg, err := config.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "lastcall-controller %s: %v\n", checkCommand, err)
		return 1
	}
	cfg.UserAgent = "lastcall-controller/" + version + " " + checkCommand
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "lastcall-controller %s: %v\n", checkCommand, err)
		return 1
	}
	if err := runCheck(ctrl.SetupSignalHandler(), clientset, o); err != nil {
		fmt.Fprintf(os.Stderr, "lastcall-controller %s: %v\n", checkCommand, err)
		return 1
	}
	return 0
}

// run starts the manager with every reconciler; log is the sink the registries' slog logs join.
func run(ctx context.Context, cfg *rest.Config, o options, log logr.Logger) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "lastcall-controller/" + version
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	var hook *webhook.Webhook
	var webhookServer ctrlwebhook.Server
	if o.webhook.Port > 0 {
		clientset, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("webhook client: %w", err)
		}
		if hook, err = webhook.New(clientset, o.webhook, log.WithName("webhook")); err != nil {
			return err
		}
		webhookServer = hook.Server()
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		WebhookServer:           webhookServer,
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:  o.probeAddr,
		LeaderElection:          o.leaderElect,
		LeaderElectionID:        o.leaderElectionID,
		LeaderElectionNamespace: o.leaderElectionNS,
		Cache:                   controllers.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	cc := o.controllers
	cc.Log = log
	if err := controllers.Setup(mgr, cc); err != nil {
		return fmt.Errorf("set up reconcilers: %w", err)
	}
	if hook != nil {
		if err := hook.Setup(mgr); err != nil {
			return fmt.Errorf("set up the injection webhook: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.WithName("setup").Info("starting", "version", version, "registries", cc.Registries, "leaderElection", o.leaderElect,
		"drainBudget", cc.Drain.MaxWait.String(), "reserve", cc.Drain.Reserve.String(), "webhookPort", o.webhook.Port)
	return mgr.Start(ctx)
}
