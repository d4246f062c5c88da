package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/lastcall-dev/lastcall/controllers/webhook"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// checkCommand is the subcommand the chart's install hook runs (templates/webhook-check.yaml):
// it returns once the API server injects labelled pods, so that `helm install` returns only
// then.
const checkCommand = "check-webhook"

type checkOptions struct {
	namespace string
	image     string
	timeout   time.Duration
	interval  time.Duration
	zap       zap.Options
}

func (o *checkOptions) vars() []envflag.Var {
	return []envflag.Var{
		{Flag: "namespace", Env: "LASTCALL_CHECK_NAMESPACE", Help: "namespace to dry-run the check pod in: the webhook's own, which only the check entry of its configuration selects (default: the pod's own)", Set: envflag.String(&o.namespace)},
		{Flag: "image", Env: "LASTCALL_CHECK_IMAGE", Default: "lastcall-controller:" + version, Help: "image named in the check pod (a dry run pulls nothing)", Set: envflag.String(&o.image)},
		{Flag: "timeout", Env: "LASTCALL_CHECK_TIMEOUT", Default: "2m", Help: "how long to keep asking before failing", Set: envflag.PositiveDuration(&o.timeout)},
		{Flag: "interval", Env: "LASTCALL_CHECK_INTERVAL", Default: "1s", Help: "pause between two tries", Set: envflag.PositiveDuration(&o.interval)},
	}
}

// parseCheck reads the subcommand's flags, then env, then defaults; --help writes usage and
// returns flag.ErrHelp.
func parseCheck(fs *flag.FlagSet, args []string, getenv func(string) string, usage io.Writer) (checkOptions, error) {
	var o checkOptions
	fs.SetOutput(io.Discard)
	bound := envflag.Bind(fs, o.vars())
	o.zap.BindFlags(fs)
	config.RegisterFlags(fs)
	help := fs.Bool("help", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			return o, fmt.Errorf("%w (see %s --help)", err, checkCommand)
		}
		*help = true
	}
	if *help {
		fmt.Fprintf(usage, "lastcall-controller %s: dry-run a pod labelled %s=true and %s=true in the webhook's namespace until the API server returns it injected; exit 0 then, 1 when --timeout runs out or the API server refuses for good (the reason is logged).\n\nIt proves what readiness cannot: that the API server reaches the webhook through its Service. The chart runs it as a post-install and post-upgrade hook, so `helm install` returns once pods created afterwards are injected.\n\nUsage: lastcall-controller %s [flags]\n\n", checkCommand, "lastcall.dev/inject", webhook.CheckLabel, checkCommand)
		bound.Usage(usage)
		return o, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: %s takes only flags (see --help)", fs.Arg(0), checkCommand)
	}
	if err := bound.Apply(getenv); err != nil {
		return o, err
	}
	if o.namespace == "" {
		ns, err := readNamespaceFile(serviceAccountNamespace)
		if err != nil {
			return o, errors.New("--namespace is not set and the pod's namespace is unknown (not in a cluster): set it to the webhook's namespace")
		}
		o.namespace = strings.TrimSpace(string(ns))
	}
	if o.image == "" {
		return o, errors.New("--image is empty: name any image (the dry run pulls nothing)")
	}
	return o, nil
}

// runCheck runs the check with clientset until it passes or o.timeout runs out.
func runCheck(ctx context.Context, clientset kubernetes.Interface, o checkOptions) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	log := zap.New(zap.UseFlagOptions(&o.zap)).WithName("check-webhook").WithValues("namespace", o.namespace)
	return webhook.Check(ctx, clientset.CoreV1().Pods(o.namespace), o.image, o.interval, log)
}
