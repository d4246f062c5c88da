// Command lastcall-prestop runs as a container's lifecycle.preStop.exec: it takes the pod out of
// every registry callers use, waits until they have observably stopped sending, and returns in
// time for the app's own shutdown. See --help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(adapters.All(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is the whole command for the registries in table.
func run(table []registry.Adapter, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "copy-to" {
		return copyTo(args[1:], stderr)
	}
	code := 0
	cfg, err := prestop.Parse(args, getenv, stdout, table)
	var bad []error
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		// A bad setting must not cost requests: drain with the settings that parse (the bad
		// ones from the next source, at worst their defaults, always within the budget), then
		// exit 2, so that the kubelet records a FailedPreStopHook Event with these lines.
		fmt.Fprintf(stderr, "lastcall-prestop: %v\n", err)
		cfg, bad = prestop.ParseLenient(args, getenv, table)
		code = 2
	case cfg.ShowVersion:
		fmt.Fprintf(stdout, "lastcall-prestop %s\n", version)
		return 0
	}
	log, closeLog := newLogger(cfg, stderr)
	defer closeLog()
	for _, e := range bad {
		log.Error("bad setting, draining without it", "err", e)
	}

	// SIGTERM to the hook itself (the kubelet gave up on it) ends every wait at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	deps, err := buildDeps(cfg, log)
	if err != nil {
		log.Error("setup failed, draining with what is left", "err", err)
	}
	res := prestop.Run(ctx, prestop.TimingOf(cfg), cfg.Instance(), deps)
	// The termination message carries the result to lastcall-controller's drain timeline; an app
	// that writes that file when it exits replaces it, which costs the timeline, not the drain.
	prestop.HandOver(cfg.ResultFile, prestop.ReportOf(res), log)
	return code
}

// buildDeps wires the registries, the pod reader, the app admin client and the traffic meter.
// A part that cannot be built is left out and reported; the rest still runs.
func buildDeps(cfg prestop.Config, log *slog.Logger) (prestop.Deps, error) {
	d := prestop.Deps{Log: log}
	var errs []error
	if cfg.AppAdmin != "" {
		app := prestop.NewAppAdmin(cfg.AppAdmin)
		d.App = app
		// the app counts every request: the sockets, costly to dump, are looked at once a second
		sockets := &prestop.Throttled{Meter: prestop.NewConnMeter(cfg.Ports, []int{app.Port()}, log), Every: time.Second}
		d.Meter = prestop.Sum{sockets, &prestop.AppMeter{App: app}}
	} else {
		d.Meter = prestop.NewConnMeter(cfg.Ports, nil, log)
	}
	var kube registry.Kube
	if cfg.InCluster {
		rc, err := restConfig(cfg.Kubeconfig)
		if err != nil {
			errs = append(errs, fmt.Errorf("kubernetes API: %w", err))
		} else if md, err := metadata.NewForConfig(rc); err != nil {
			// NewForConfigOrDie would panic here; the helper promises to log and fall back.
			errs = append(errs, fmt.Errorf("kubernetes API client: %w", err))
		} else {
			kube = registry.KubeOf(rc)
			d.Deletion = deletion(md, cfg.PodNamespace, cfg.PodName)
		}
	}
	regs, err := cfg.Set.Build(cfg.Env(kube, log), cfg.Registries)
	d.Registries = regs
	return d, errors.Join(append(errs, err)...)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	var rc *rest.Config
	var err error
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "lastcall-prestop/" + version
	return rc, nil
}

var podResource = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// deletion reads only the pod's metadata: deletionTimestamp is when the kubelet sends SIGKILL,
// deletionGracePeriodSeconds the grace period that set it.
func deletion(client metadata.Interface, ns, name string) func(context.Context) (*prestop.Deletion, error) {
	return func(ctx context.Context) (*prestop.Deletion, error) {
		if name == "" {
			return nil, errors.New("POD_NAME is not set: cannot read the pod's deletionTimestamp")
		}
		pod, err := client.Resource(podResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get pod %s/%s: %w", ns, name, err)
		}
		if pod.DeletionTimestamp == nil {
			return nil, nil
		}
		d := &prestop.Deletion{KillAt: pod.DeletionTimestamp.Time}
		if g := pod.DeletionGracePeriodSeconds; g != nil {
			d.Grace = time.Duration(*g) * time.Second
		}
		return d, nil
	}
}

// newLogger writes to the container's main stdout when it can, since the kubelet discards what
// a preStop hook prints; stderr otherwise.
func newLogger(cfg prestop.Config, stderr io.Writer) (*slog.Logger, func()) {
	w := stderr
	closeFn := func() {}
	if cfg.LogFile != "" {
		if f, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_APPEND, 0); err == nil {
			w, closeFn = f, func() { _ = f.Close() }
		}
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel, ReplaceAttr: readableDurations}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("component", "lastcall-prestop"), closeFn
}

// readableDurations logs durations as "1.234s" rather than integer nanoseconds.
func readableDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().Round(time.Millisecond).String())
	}
	return a
}

// copyTo is the injection webhook's init container: the image has no shell, so the binary
// copies itself into the pod's shared volume (lastcall-prestop copy-to DIR).
func copyTo(args []string, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "" {
		fmt.Fprintln(stderr, "lastcall-prestop: copy-to takes one argument, the folder to copy the binary into")
		return 2
	}
	if err := copySelf(args[0]); err != nil {
		fmt.Fprintf(stderr, "lastcall-prestop: copy-to %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// copySelf writes the running binary to dir/lastcall-prestop through a rename, so a container
// never sees half a file.
func copySelf(dir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	src, err := os.Open(exe)
	if err != nil {
		return err
	}
	defer func() { _ = src.Close() }()
	tmp, err := os.CreateTemp(dir, ".lastcall-prestop-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := io.Copy(tmp, src); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o555); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, "lastcall-prestop"))
}
