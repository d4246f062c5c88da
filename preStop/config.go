package prestop

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is everything lastcall-prestop is told, after flags, LASTCALL_* env and defaults.
type Config struct {
	PodName, PodNamespace, PodIP, PodUID string

	// Registries to drain: "consul", "endpoints". Resolved from "auto" by Parse.
	Registries []string

	ConsulAddr      string
	ConsulServers   []string
	ConsulService   string
	ConsulServiceID string
	ConsulMetaKey   string
	ConsulToken     string

	Kubeconfig string
	// InCluster is true when the Kubernetes API is expected to be reachable.
	InCluster bool

	Reserve, MaxWait, MinWait, Quiet, Settle time.Duration

	// Ports are the serving ports watched for new inbound connections; empty means every
	// non-loopback listening port but the app's admin port.
	Ports    []int
	AppAdmin string

	LogFormat string
	LogLevel  slog.Level
	LogFile   string

	ShowVersion bool
}

// Registry names.
const (
	Consul    = "consul"
	Endpoints = "endpoints"
)

// option is one setting: its flag, its env var, its default and how to check it.
type option struct {
	flag, env, def, help string
	// set parses a value into cfg; its error says what is allowed.
	set func(c *Config, v string) error
}

func options() []option {
	return []option{
		{"pod-name", "POD_NAME", "", "this pod's name (downward API metadata.name)", str(func(c *Config) *string { return &c.PodName })},
		{"pod-namespace", "POD_NAMESPACE", "", "this pod's namespace (downward API metadata.namespace)", str(func(c *Config) *string { return &c.PodNamespace })},
		{"pod-ip", "POD_IP", "", "this pod's IP (downward API status.podIP)", str(func(c *Config) *string { return &c.PodIP })},
		{"pod-uid", "POD_UID", "", "this pod's UID (downward API metadata.uid)", str(func(c *Config) *string { return &c.PodUID })},
		{"registries", "LASTCALL_REGISTRIES", "auto", "comma-separated registries to drain: consul, endpoints, or auto (endpoints when running in a cluster, consul when a Consul address is set)", setRegistries},
		{"consul-addr", "LASTCALL_CONSUL_ADDR", "", "Consul agent HTTP address the pod registered with, e.g. http://$(HOST_IP):8500 (falls back to CONSUL_HTTP_ADDR)", str(func(c *Config) *string { return &c.ConsulAddr })},
		{"consul-servers", "LASTCALL_CONSUL_SERVERS", "", "comma-separated HTTP addresses of the Consul servers callers read from; each must show the deregistration (default: --consul-addr only)", list(func(c *Config) *[]string { return &c.ConsulServers })},
		{"consul-service", "LASTCALL_CONSUL_SERVICE", "", "Consul service name of this pod's instances (default: any service whose instance matches the pod)", str(func(c *Config) *string { return &c.ConsulService })},
		{"consul-service-id", "LASTCALL_CONSUL_SERVICE_ID", "", "explicit Consul service ID to deregister (default: instances whose address is the pod IP or whose meta carries the pod UID)", str(func(c *Config) *string { return &c.ConsulServiceID })},
		{"consul-meta-key", "LASTCALL_CONSUL_META_KEY", "pod-uid", "Consul service meta key that carries the pod UID", str(func(c *Config) *string { return &c.ConsulMetaKey })},
		{"kubeconfig", "KUBECONFIG", "", "kubeconfig file for the Kubernetes API (default: in-cluster service account)", str(func(c *Config) *string { return &c.Kubeconfig })},
		{"reserve", "LASTCALL_RESERVE", "10s", "time kept back for the app after SIGTERM: the helper returns by deletionTimestamp minus this", dur(func(c *Config) *time.Duration { return &c.Reserve }, false)},
		{"max-wait", "LASTCALL_MAX_WAIT", "20s", "budget when the pod's deletionTimestamp cannot be read, and the longest fallback wait when a registry cannot confirm", dur(func(c *Config) *time.Duration { return &c.MaxWait }, true)},
		{"min-wait", "LASTCALL_MIN_WAIT", "1s", "floor: the helper never returns sooner than this after it started (within the budget)", dur(func(c *Config) *time.Duration { return &c.MinWait }, false)},
		{"quiet", "LASTCALL_QUIET", "1s", "traffic quiescence: no new inbound connection and no new request for this long", dur(func(c *Config) *time.Duration { return &c.Quiet }, false)},
		{"settle", "LASTCALL_ENDPOINTS_SETTLE", "500ms", "extra wait after EndpointSlices show the pod not ready, for node proxies to apply it (one kube-proxy sync)", dur(func(c *Config) *time.Duration { return &c.Settle }, false)},
		{"ports", "LASTCALL_PORTS", "", "comma-separated serving ports watched for new inbound connections (default: every listening port not bound to loopback, except the app admin port)", setPorts},
		{"app-admin", "LASTCALL_APP_ADMIN", "", "base URL of the app's lastcall admin endpoint (graceful library), e.g. http://127.0.0.1:9901; enables drain mode and request counting", setAppAdmin},
		{"log-format", "LASTCALL_LOG_FORMAT", "json", "log format: json or text", oneOf(func(c *Config) *string { return &c.LogFormat }, "json", "text")},
		{"log-level", "LASTCALL_LOG_LEVEL", "info", "log level: debug, info, warn or error", setLevel},
		{"log-file", "LASTCALL_LOG_FILE", "/proc/1/fd/1", "where logs go when writable (the container's main stdout, so kubectl logs shows them); stderr otherwise", str(func(c *Config) *string { return &c.LogFile })},
	}
}

// Parse reads args, then env (through getenv) for every flag not given, then defaults. The
// returned error is one line naming the flag, its env var and what is allowed.
func Parse(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	var c Config
	opts := options()
	fs := flag.NewFlagSet("lastcall-prestop", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	given := map[string]string{} // flags as given; applied below, after env, so one error format fits all
	for _, o := range opts {
		fs.Func(o.flag, o.help, func(v string) error { given[o.flag] = v; return nil })
	}
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	help := fs.Bool("help", false, "print this help and exit")
	fs.BoolVar(help, "h", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w (see --help)", err)
	}
	if *help {
		Usage(usage)
		return c, flag.ErrHelp
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: lastcall-prestop takes only flags (see --help)", fs.Arg(0))
	}
	for _, o := range opts {
		v, from := o.def, "default"
		if e := getenv(o.env); e != "" {
			v, from = e, "env "+o.env
		}
		if f, ok := given[o.flag]; ok {
			v, from = f, "flag --"+o.flag
		}
		if err := o.set(&c, v); err != nil {
			return c, fmt.Errorf("invalid %s=%q (--%s / %s): %w", from, v, o.flag, o.env, err)
		}
	}
	if c.ShowVersion {
		return c, nil
	}
	if c.ConsulAddr == "" {
		c.ConsulAddr = getenv("CONSUL_HTTP_ADDR")
	}
	c.ConsulToken = firstNonEmpty(getenv("LASTCALL_CONSUL_TOKEN"), getenv("CONSUL_HTTP_TOKEN"))
	c.InCluster = c.Kubeconfig != "" || getenv("KUBERNETES_SERVICE_HOST") != ""
	return c, c.resolve()
}

// resolve turns "auto" into registries and checks settings that depend on each other.
func (c *Config) resolve() error {
	if slices.Contains(c.Registries, "auto") {
		c.Registries = nil
		if c.InCluster {
			c.Registries = append(c.Registries, Endpoints)
		}
		if c.ConsulAddr != "" {
			c.Registries = append(c.Registries, Consul)
		}
	}
	if slices.Contains(c.Registries, Endpoints) && (c.PodNamespace == "" || c.PodUID == "") {
		return errors.New("registry endpoints needs POD_NAMESPACE and POD_UID (--pod-namespace, --pod-uid): set them from the downward API (metadata.namespace, metadata.uid)")
	}
	if slices.Contains(c.Registries, Consul) {
		if c.ConsulAddr == "" {
			return errors.New("registry consul needs a Consul address: set --consul-addr, LASTCALL_CONSUL_ADDR or CONSUL_HTTP_ADDR")
		}
		if c.ConsulServiceID == "" && c.PodIP == "" && c.PodUID == "" {
			return errors.New("registry consul needs POD_IP or POD_UID (--pod-ip, --pod-uid) to find this pod's instances, or --consul-service-id")
		}
	}
	return nil
}

// Usage writes --help: every flag with its env var and default.
func Usage(w io.Writer) {
	fmt.Fprintf(w, `lastcall-prestop: run as a container's lifecycle.preStop.exec. It takes the pod out of Consul
and EndpointSlices, waits until callers have observably stopped sending, and returns before the
app needs its own shutdown time. It never outlives its budget and always exits 0 once configured.

Usage: lastcall-prestop [flags]

Each flag can also be set by the environment variable shown; a flag wins over the env var.

`)
	for _, o := range options() {
		def := ""
		if o.def != "" {
			def = fmt.Sprintf(" (default %s)", o.def)
		}
		fmt.Fprintf(w, "  --%s, $%s%s\n      %s\n", o.flag, o.env, def, o.help)
	}
	fmt.Fprint(w, `  --version
      print the version and exit
  --help
      print this help and exit

Also read: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN (or LASTCALL_CONSUL_TOKEN), KUBERNETES_SERVICE_HOST.
`)
}

func str(field func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = strings.TrimSpace(v); return nil }
}

func list(field func(*Config) *[]string) func(*Config, string) error {
	return func(c *Config, v string) error { *field(c) = splitList(v); return nil }
}

func oneOf(field func(*Config) *string, allowed ...string) func(*Config, string) error {
	return func(c *Config, v string) error {
		if !slices.Contains(allowed, v) {
			return fmt.Errorf("want one of %s", strings.Join(allowed, ", "))
		}
		*field(c) = v
		return nil
	}
}

func dur(field func(*Config) *time.Duration, positive bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil:
			return errors.New("want a duration such as 500ms, 2s or 1m")
		case positive && d <= 0:
			return errors.New("want a duration above zero")
		case d < 0:
			return errors.New("want a duration of zero or more")
		}
		*field(c) = d
		return nil
	}
}

func setRegistries(c *Config, v string) error {
	c.Registries = nil
	for _, r := range splitList(v) {
		if !slices.Contains([]string{"auto", Consul, Endpoints}, r) {
			return fmt.Errorf("unknown registry %q; want a comma-separated list of consul, endpoints, or auto", r)
		}
		if !slices.Contains(c.Registries, r) {
			c.Registries = append(c.Registries, r)
		}
	}
	return nil
}

func setPorts(c *Config, v string) error {
	c.Ports = nil
	for _, p := range splitList(v) {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q: want comma-separated numbers from 1 to 65535", p)
		}
		c.Ports = append(c.Ports, n)
	}
	return nil
}

func setAppAdmin(c *Config, v string) error {
	if v == "" {
		c.AppAdmin = ""
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http(s) URL such as http://127.0.0.1:9901")
	}
	c.AppAdmin = strings.TrimSuffix(v, "/")
	return nil
}

func setLevel(c *Config, v string) error {
	if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
		return errors.New("want debug, info, warn or error")
	}
	return nil
}

func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
