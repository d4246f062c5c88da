// Command lastcall-controller closes the gaps a preStop hook alone cannot: it holds new pods
// un-ready until callers can find them, deregisters deleted pods the hook missed, and warns about
// unsafe drain settings. See --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/lastcall-dev/lastcall/controllers"
	"github.com/lastcall-dev/lastcall/controllers/managed"
	"github.com/lastcall-dev/lastcall/registry/consul"
)

var version = "dev"

type options struct {
	metricsAddr, probeAddr string
	leaderElect            bool
	leaderElectionNS       string
	consulAddr             string
	consulServers          string
	sweepInterval          time.Duration
	gateRetry              time.Duration
	observePoll            time.Duration
	qps                    float64
	burst                  int
	showVersion            bool
}

func main() {
	var o options
	fs := flag.CommandLine
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint (0 disables it)")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so that only one replica reconciles and sweeps")
	fs.StringVar(&o.leaderElectionNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: the pod's own)")
	fs.StringVar(&o.consulAddr, "consul-addr", os.Getenv("CONSUL_HTTP_ADDR"), "Consul HTTP address; empty disables the Consul gate, backstop and sweeper (env CONSUL_HTTP_ADDR; token from CONSUL_HTTP_TOKEN)")
	fs.StringVar(&o.consulServers, "consul-servers", "", "comma-separated HTTP addresses of the Consul servers callers read from; a pod is visible when every one lists it (default: --consul-addr)")
	fs.DurationVar(&o.sweepInterval, "sweep-interval", 30*time.Second, "how often stale Consul registrations are swept")
	fs.DurationVar(&o.gateRetry, "gate-retry", time.Second, "how soon a pod not yet visible to callers is checked again")
	fs.DurationVar(&o.observePoll, "observe-interval", 250*time.Millisecond, "how often a draining pod's registries are read for its drain timeline")
	fs.Float64Var(&o.qps, "kube-api-qps", 50, "sustained rate of requests to the Kubernetes API")
	fs.IntVar(&o.burst, "kube-api-burst", 100, "burst of requests to the Kubernetes API")
	fs.BoolVar(&o.showVersion, "version", false, "print the version and exit")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "lastcall-controller: registration gate, Consul backstop and sweeper, unsafe-settings warnings for pods labelled %s=true.\n\nUsage: lastcall-controller [flags]\n\n", managed.Label)
		fs.PrintDefaults()
	}
	flag.Parse()
	if o.showVersion {
		fmt.Printf("lastcall-controller %s\n", version)
		return
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	if err := run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), o); err != nil {
		ctrl.Log.Error(err, "lastcall-controller failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg *rest.Config, o options) error {
	if o.sweepInterval <= 0 || o.gateRetry <= 0 || o.observePoll <= 0 {
		return errors.New("--sweep-interval, --gate-retry and --observe-interval must be above zero")
	}
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
		LeaderElectionID:        "lastcall-controller.lastcall.dev",
		LeaderElectionNamespace: o.leaderElectionNS,
		Cache:                   controllers.CacheOptions(),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	cc := controllers.Config{SweepInterval: o.sweepInterval, GateRetry: o.gateRetry, ObservePoll: o.observePoll}
	log := ctrl.Log.WithName("setup")
	if o.consulAddr != "" {
		if cc.Consul, err = consulRegistry(o); err != nil {
			return err
		}
	} else {
		log.Info("no --consul-addr: Consul gate, backstop and sweeper are off")
	}
	if err := controllers.Setup(mgr, cc); err != nil {
		return fmt.Errorf("set up reconcilers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("starting", "version", version, "consul", o.consulAddr != "", "leaderElection", o.leaderElect)
	return mgr.Start(ctx)
}

func consulRegistry(o options) (*consul.Registry, error) {
	newClient := func(addr string) (*api.Client, error) {
		c := api.DefaultConfig()
		c.Address = addr
		return api.NewClient(c)
	}
	agent, err := newClient(o.consulAddr)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", o.consulAddr, err)
	}
	var servers []*api.Client
	for _, s := range strings.Split(o.consulServers, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		c, err := newClient(s)
		if err != nil {
			return nil, fmt.Errorf("consul client for %s: %w", s, err)
		}
		servers = append(servers, c)
	}
	return consul.New(consul.Config{Client: agent, Servers: servers})
}
