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

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/dataplane"
	"github.com/lastcall-dev/lastcall/controllers/managed"
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
		{Flag: "observe-interval", Env: "LASTCALL_OBSERVE_INTERVAL", Default: "250ms", Help: "how often a draining pod's registries are read for its drain timeline", Set: envflag.PositiveDuration(&c.ObservePoll)},
		{Flag: "dataplane-agents", Env: "LASTCALL_DATAPLANE_AGENTS", Default: "false", Bool: true, Help: "ask the lastcall-node agents whether every node stopped routing to a draining pod, and publish the answer as the pod condition lastcall.dev/dataplane-drained", Set: envflag.Bool(&c.Dataplane.Enabled)},
		{Flag: "dataplane-agent-port", Env: "LASTCALL_DATAPLANE_AGENT_PORT", Default: strconv.Itoa(dataplane.DefaultPort), Help: "port of the lastcall-node API on each node's IP (hostNetwork)", Set: envflag.Int(&c.Dataplane.Port, 1)},
		{Flag: "dataplane-agent-service", Env: "LASTCALL_DATAPLANE_AGENT_SERVICE", Default: dataplane.DefaultService, Help: "headless Service selecting the lastcall-node pods; its EndpointSlices tell which node has an agent", Set: envflag.String(&c.Dataplane.Service)},
		{Flag: "dataplane-agent-namespace", Env: "LASTCALL_DATAPLANE_AGENT_NAMESPACE", Default: dataplane.DefaultNamespace, Help: "namespace of that Service", Set: envflag.String(&c.Dataplane.Namespace)},
		{Flag: "dataplane-node-timeout", Env: "LASTCALL_DATAPLANE_NODE_TIMEOUT", Default: dataplane.DefaultNodeTimeout.String(), Help: "how long a failing agent is waited for before its node is reported unconfirmed (the helper then waits --settle for it); also the longest a poll of an agent stays open", Set: envflag.PositiveDuration(&c.Dataplane.NodeTimeout)},
		{Flag: "kube-api-qps", Env: "LASTCALL_KUBE_API_QPS", Default: "50", Help: "sustained rate of requests to the Kubernetes API", Set: envflag.Float(&o.qps)},
		{Flag: "kube-api-burst", Env: "LASTCALL_KUBE_API_BURST", Default: "100", Help: "burst of requests to the Kubernetes API", Set: envflag.Int(&o.burst, 1)},
	}
	vars = append(vars, c.Set.Vars()...)
	return append(vars, c.Drain.Vars()...)
}

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
		fmt.Fprintf(usage, "lastcall-controller: registration gate, deregistration backstop and sweeper, drain timelines, unsafe-settings warnings and (with --dataplane-agents) dataplane confirmation for pods labelled %s=true.\n\nUsage: lastcall-controller [flags]\n\nEach flag can also be set by the environment variable shown; a flag wins over the env var.\n\n", managed.Label)
		bound.Usage(usage)
		return o, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: lastcall-controller takes only flags (see --help)", fs.Arg(0))
	}
	if err := bound.Apply(getenv); err != nil || o.showVersion {
		return o, err
	}
	if p := o.controllers.Dataplane.Port; p > 65535 {
		return o, fmt.Errorf("--dataplane-agent-port %d: want a port number, 1 to 65535", p)
	}
	var err error
	o.controllers.Registries, err = o.controllers.Set.Select(registry.Env{Binary: registry.Controller, InCluster: true})
	return o, err
}

func main() {
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

// run starts the manager with every reconciler; log is the sink the registries' slog logs join.
func run(ctx context.Context, cfg *rest.Config, o options, log logr.Logger) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "lastcall-controller/" + version
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
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
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.WithName("setup").Info("starting", "version", version, "registries", cc.Registries, "leaderElection", o.leaderElect,
		"drainBudget", cc.Drain.MaxWait.String(), "reserve", cc.Drain.Reserve.String())
	return mgr.Start(ctx)
}
