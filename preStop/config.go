package prestop

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

// Config is everything lastcall-prestop is told, after flags, LASTCALL_* env and defaults.
type Config struct {
	PodName, PodNamespace, PodIP, PodUID string

	// Registries are the names of the registries to drain, "auto" resolved.
	Registries []string
	// Set holds every known registry's options; Set.Build makes the chosen ones.
	Set *registry.Set

	Kubeconfig string
	// InCluster is true when the Kubernetes API is expected to be reachable.
	InCluster bool

	Drain          Drain
	MinWait, Quiet time.Duration
	// QuietMax caps the quiet window the traffic's pauses call for; zero: the budget alone.
	QuietMax time.Duration
	// WaitConnections: after quiet, wait within the budget for callers to close their inbound
	// connections.
	WaitConnections bool

	// Ports are the serving ports whose inbound connections are watched; empty means every
	// non-loopback listening port but the app's admin port.
	Ports    []int
	AppAdmin string

	// ResultFile receives the drain's Report for lastcall-controller (the container's
	// terminationMessagePath); empty: off.
	ResultFile string

	LogFormat string
	LogLevel  slog.Level
	LogFile   string

	ShowVersion bool
}

// Drain is the budget of a drain, which both binaries know: lastcall-prestop returns within it,
// and lastcall-controller warns about grace periods that cannot hold it.
type Drain struct {
	// Reserve is the time kept back for the app after SIGTERM.
	Reserve time.Duration
	// MaxWait is the budget when the pod's deletionTimestamp cannot be read, and the longest
	// fallback wait.
	MaxWait time.Duration
}

// The drain defaults, in one place for both binaries.
const (
	DefaultReserve = 10 * time.Second
	DefaultMaxWait = 20 * time.Second
)

// Vars binds the drain settings; their flags, variables and defaults are the same in both
// binaries.
func (d *Drain) Vars() []envflag.Var {
	return []envflag.Var{
		{Flag: "reserve", Env: "LASTCALL_RESERVE", Default: DefaultReserve.String(),
			Help: "time kept back for the app after SIGTERM: lastcall-prestop returns by deletionTimestamp minus this; when the grace period cannot hold max-wait plus this, the two share it in proportion",
			Set:  envflag.Duration(&d.Reserve)},
		{Flag: "max-wait", Env: "LASTCALL_MAX_WAIT", Default: DefaultMaxWait.String(),
			Help: "drain budget when the pod's deletionTimestamp cannot be read, and the longest fallback wait when a registry cannot confirm (lastcall-controller: the budget of workloads without lastcall.dev/drain-budget)",
			Set:  envflag.PositiveDuration(&d.MaxWait)},
	}
}

// Instance is this pod as registries know it.
func (c Config) Instance() registry.Instance {
	in := registry.Instance{Namespace: c.PodNamespace, Pod: c.PodName, UID: c.PodUID, IP: c.PodIP}
	for _, p := range c.Ports {
		in.Ports = append(in.Ports, int32(p))
	}
	return in
}

// Env is what the registries are configured and built in; kube and log are added for Build.
func (c Config) Env(kube registry.Kube, log *slog.Logger) registry.Env {
	return registry.Env{Binary: registry.PreStop, Pod: c.Instance(), InCluster: c.InCluster, Kube: kube, Log: log}
}

// vars lists every setting of lastcall-prestop, registries' included, in --help order.
func (c *Config) vars() []envflag.Var {
	vars := []envflag.Var{
		{Flag: "pod-name", Env: "POD_NAME", Help: "this pod's name (downward API metadata.name)", Set: envflag.String(&c.PodName)},
		{Flag: "pod-namespace", Env: "POD_NAMESPACE", Help: "this pod's namespace (downward API metadata.namespace)", Set: envflag.String(&c.PodNamespace)},
		{Flag: "pod-ip", Env: "POD_IP", Help: "this pod's IP (downward API status.podIP)", Set: envflag.String(&c.PodIP)},
		{Flag: "pod-uid", Env: "POD_UID", Help: "this pod's UID (downward API metadata.uid)", Set: envflag.String(&c.PodUID)},
		{Flag: "kubeconfig", Env: "KUBECONFIG", Help: "kubeconfig file for the Kubernetes API (default: in-cluster service account)", Set: envflag.String(&c.Kubeconfig)},
	}
	vars = append(vars, c.Set.Vars()...)
	vars = append(vars, c.Drain.Vars()...)
	return append(vars,
		envflag.Var{Flag: "min-wait", Env: "LASTCALL_MIN_WAIT", Default: "1s", Help: "floor: the helper never returns sooner than this after it started (within the budget)", Set: envflag.Duration(&c.MinWait)},
		envflag.Var{Flag: "quiet", Env: "LASTCALL_QUIET", Default: "1s", Help: "traffic quiescence: no new inbound connection, no byte received on one, and no new request (with --app-admin) for this long at least; " +
			"longer when the traffic pauses longer: " + strconv.Itoa(GapFactor) + " × the longest pause seen between two moves of the traffic since the helper started, bounded by the budget (0: no quiet wait)", Set: envflag.Duration(&c.Quiet)},
		envflag.Var{Flag: "quiet-max", Env: "LASTCALL_QUIET_MAX", Default: "0s", Help: "longest quiet window the traffic's pauses may call for (never below --quiet); 0: the budget alone bounds it. Set it when something keeps sending on the serving ports whatever the registries say, such as metrics scrapes or gRPC keepalive pings", Set: envflag.Duration(&c.QuietMax)},
		envflag.Var{Flag: "wait-connections", Env: "LASTCALL_WAIT_CONNECTIONS", Default: "false", Bool: true, Help: "after quiet, wait (within the budget) until callers closed their inbound connections on the serving ports; how many were left is logged either way", Set: envflag.Bool(&c.WaitConnections)},
		envflag.Var{Flag: "ports", Env: "LASTCALL_PORTS", Help: "comma-separated serving ports whose inbound connections are watched (default: every listening port not bound to loopback, except the app admin port)", Set: c.setPorts},
		envflag.Var{Flag: "app-admin", Env: "LASTCALL_APP_ADMIN", Help: "base URL of the app's lastcall admin endpoint (graceful library), e.g. http://127.0.0.1:9901; enables drain mode and request counting", Set: envflag.URL(&c.AppAdmin)},
		envflag.Var{Flag: "result-file", Env: "LASTCALL_RESULT_FILE", Default: DefaultResultFile, Help: "the container's terminationMessagePath: on return the helper appends one line \"" + strings.TrimSpace(ReportMarker) + " {json}\" to it (open connections, quiet window, fallback, time taken), which lastcall-controller reads into the drain timeline; only when the file exists (the kubelet creates it), never created; -: off", Set: c.setResultFile},
		envflag.Var{Flag: "log-format", Env: "LASTCALL_LOG_FORMAT", Default: "json", Help: "log format: json or text", Set: envflag.OneOf(&c.LogFormat, "json", "text")},
		envflag.Var{Flag: "log-level", Env: "LASTCALL_LOG_LEVEL", Default: "info", Help: "log level: debug, info, warn or error", Set: c.setLevel},
		envflag.Var{Flag: "log-file", Env: "LASTCALL_LOG_FILE", Default: "/proc/1/fd/1", Help: "where logs go when writable (the container's main stdout, so kubectl logs shows them); stderr otherwise", Set: envflag.String(&c.LogFile)},
	)
}

// Parse reads args, then env (through getenv) for every flag not given, then defaults, for
// lastcall-prestop and every registry in table. The returned error is one line naming the flag,
// its env var and what is allowed.
func Parse(args []string, getenv func(string) string, usage io.Writer, table []registry.Adapter) (Config, error) {
	c, fs, bound, help := newFlags(table)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) { // -h
			*help = true
		} else {
			return *c, fmt.Errorf("%w (see --help)", err)
		}
	}
	if *help {
		Usage(usage, bound)
		return *c, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return *c, fmt.Errorf("unexpected argument %q: lastcall-prestop takes only flags (see --help)", fs.Arg(0))
	}
	if err := bound.Apply(getenv); err != nil {
		return *c, err
	}
	if c.ShowVersion {
		return *c, nil
	}
	c.InCluster = c.Kubeconfig != "" || getenv("KUBERNETES_SERVICE_HOST") != ""
	var err error
	c.Registries, err = c.Set.Select(c.Env(nil, nil))
	return *c, err
}

// ParseLenient is Parse for a hook that was given bad settings and must still drain: an
// unknown flag or stray argument is dropped, a value that does not parse gives way to the next
// source (env, then the default), a registry whose settings fail its check is left out. Every
// such problem is returned; the Config is always usable.
func ParseLenient(args []string, getenv func(string) string, table []registry.Adapter) (Config, []error) {
	var errs []error
	for {
		c, fs, bound, _ := newFlags(table)
		err := fs.Parse(args)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			errs = append(errs, err)
			if rest, ok := dropBadArg(args, err); ok {
				args = rest
				continue
			}
			c, fs, bound, _ = newFlags(table) // unrecognisable: env and defaults only
			_ = fs.Parse(nil)
		}
		if fs.NArg() > 0 {
			errs = append(errs, fmt.Errorf("unexpected arguments %q ignored", fs.Args()))
		}
		errs = append(errs, bound.ApplyLenient(getenv)...)
		c.ShowVersion = false
		c.InCluster = c.Kubeconfig != "" || getenv("KUBERNETES_SERVICE_HOST") != ""
		regs, rerrs := c.Set.SelectLenient(c.Env(nil, nil))
		c.Registries = regs
		return *c, append(errs, rerrs...)
	}
}

// dropBadArg removes from args the flag that err (from flag.FlagSet.Parse) names, with its value
// when it is a separate argument; ok is false when err names no flag found in args.
func dropBadArg(args []string, err error) (rest []string, ok bool) {
	msg := err.Error()
	i := strings.LastIndex(msg, " -")
	if i < 0 {
		return nil, false
	}
	name := strings.TrimLeft(strings.TrimSpace(msg[i+1:]), "-")
	if k := strings.IndexAny(name, "=: "); k >= 0 {
		name = name[:k]
	}
	for j, a := range args {
		bare := strings.TrimLeft(a, "-")
		if !strings.HasPrefix(a, "-") || (bare != name && !strings.HasPrefix(bare, name+"=")) {
			continue
		}
		end := j + 1
		if bare == name && end < len(args) && !strings.HasPrefix(args[end], "-") {
			end++ // "--flag value"
		}
		return append(slices.Clone(args[:j]), args[end:]...), true
	}
	return nil, false
}

// newFlags is the flag set of Parse and ParseLenient, bound to a new Config.
func newFlags(table []registry.Adapter) (*Config, *flag.FlagSet, *envflag.Bound, *bool) {
	c := &Config{Set: registry.NewSet(registry.PreStop, table)}
	fs := flag.NewFlagSet("lastcall-prestop", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	bound := envflag.Bind(fs, c.vars())
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	help := fs.Bool("help", false, "print this help and exit")
	return c, fs, bound, help
}

// Usage writes --help: every flag with its env var and default.
func Usage(w io.Writer, bound *envflag.Bound) {
	fmt.Fprint(w, `lastcall-prestop: run as a container's lifecycle.preStop.exec. It takes the pod out of every
registry callers use (EndpointSlices, Consul), waits until callers have observably stopped
sending, and returns before the app needs its own shutdown time. It never outlives its budget.
It exits 0; with a bad setting it still drains (an unknown flag dropped, a bad value replaced by
the next source, at worst its default), then prints the problem on one line and exits 2.

Usage: lastcall-prestop [flags]
       lastcall-prestop copy-to DIR   (copy this binary into DIR: the injection webhook's init container)

Each flag can also be set by the environment variable shown; a flag wins over the env var.

`)
	bound.Usage(w)
	fmt.Fprint(w, "\nAlso read: KUBERNETES_SERVICE_HOST, and the CONSUL_* variables of Consul's API client (CONSUL_CACERT, ...).\n")
}

func (c *Config) setPorts(v string) error {
	c.Ports = nil
	for _, p := range envflag.Split(v) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want comma-separated numbers from 1 to 65535", p)
		}
		c.Ports = append(c.Ports, n)
	}
	return nil
}

func (c *Config) setResultFile(v string) error {
	c.ResultFile = strings.TrimSpace(v)
	if c.ResultFile == "-" {
		c.ResultFile = ""
	}
	return nil
}

func (c *Config) setLevel(v string) error {
	if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}
