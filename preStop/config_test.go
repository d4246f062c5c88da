package prestop

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/endpoints"
	"github.com/lastcall-dev/lastcall/registry/envflag"
)

const (
	Consul    = consul.Name
	Endpoints = endpoints.Name
)

func parse(args []string, getenv func(string) string) (Config, error) {
	return Parse(args, getenv, nil, adapters.All())
}

func consulOf(c Config) *consul.Options       { return c.Set.Options(Consul).(*consul.Options) }
func endpointsOf(c Config) *endpoints.Options { return c.Set.Options(Endpoints).(*endpoints.Options) }

func env(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

var podEnv = map[string]string{"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_IP": "10.0.0.7", "POD_UID": "u-1"}

func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestParseDefaults(t *testing.T) {
	c, err := parse(nil, env(with(podEnv, "KUBERNETES_SERVICE_HOST", "10.96.0.1")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Drain.Reserve != 10*time.Second || c.Drain.MaxWait != 20*time.Second || c.MinWait != time.Second ||
		c.Quiet != time.Second || endpointsOf(c).Settle != 500*time.Millisecond {
		t.Errorf("durations = %+v", c)
	}
	if !slices.Equal(c.Registries, []string{Endpoints}) {
		t.Errorf("auto registries in a cluster without Consul = %v, want [endpoints]", c.Registries)
	}
	if c.LogFile != "/proc/1/fd/1" || c.LogFormat != "json" || c.LogLevel != slog.LevelInfo || consulOf(c).MetaKey != "pod-uid" {
		t.Errorf("log/meta defaults = %q %q %v %q", c.LogFile, c.LogFormat, c.LogLevel, consulOf(c).MetaKey)
	}
	if c.PodName != "web-1" || c.PodNamespace != "shop" || c.PodIP != "10.0.0.7" || c.PodUID != "u-1" {
		t.Errorf("identity = %+v", c)
	}
}

func TestParsePrecedence(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(Config) bool
	}{
		{"env over default", nil, with(podEnv, "LASTCALL_QUIET", "3s"), func(c Config) bool { return c.Quiet == 3*time.Second }},
		{"flag over env", []string{"--quiet=250ms"}, with(podEnv, "LASTCALL_QUIET", "3s"), func(c Config) bool { return c.Quiet == 250*time.Millisecond }},
		{"flag with separate value", []string{"--quiet", "2s"}, podEnv, func(c Config) bool { return c.Quiet == 2*time.Second }},
		{"last flag wins", []string{"--quiet=2s", "-quiet=4s"}, podEnv, func(c Config) bool { return c.Quiet == 4*time.Second }},
		{"consul from CONSUL_HTTP_ADDR", nil, with(podEnv, "CONSUL_HTTP_ADDR", "127.0.0.1:8500"), func(c Config) bool {
			return consulOf(c).Addr == "127.0.0.1:8500" && slices.Equal(c.Registries, []string{Consul})
		}},
		{"LASTCALL_CONSUL_ADDR over CONSUL_HTTP_ADDR", nil, with(podEnv, "CONSUL_HTTP_ADDR", "a:1", "LASTCALL_CONSUL_ADDR", "b:2"), func(c Config) bool { return consulOf(c).Addr == "b:2" }},
		{"auto in cluster with Consul", nil, with(podEnv, "KUBERNETES_SERVICE_HOST", "x", "CONSUL_HTTP_ADDR", "a:1"), func(c Config) bool {
			return slices.Equal(c.Registries, []string{Endpoints, Consul})
		}},
		{"auto outside a cluster without Consul drains nothing", nil, podEnv, func(c Config) bool { return len(c.Registries) == 0 && !c.InCluster }},
		{"LASTCALL_CONSUL_TOKEN over CONSUL_HTTP_TOKEN", nil, with(podEnv, "CONSUL_HTTP_TOKEN", "t1", "LASTCALL_CONSUL_TOKEN", "t2"), func(c Config) bool { return consulOf(c).Token == "t2" }},
		{"token", nil, with(podEnv, "CONSUL_HTTP_TOKEN", "t1"), func(c Config) bool { return consulOf(c).Token == "t1" }},
		{"ports and servers lists", []string{"--ports", " 8080, 9090 ", "--consul-servers", "http://s1:8500,http://s2:8500"}, podEnv, func(c Config) bool {
			return slices.Equal(c.Ports, []int{8080, 9090}) && len(consulOf(c).Servers) == 2
		}},
		{"app admin trailing slash", []string{"--app-admin", "http://127.0.0.1:9901/"}, podEnv, func(c Config) bool { return c.AppAdmin == "http://127.0.0.1:9901" }},
		{"registries deduplicated", []string{"--registries", "consul,consul", "--consul-addr", "a:1"}, podEnv, func(c Config) bool { return slices.Equal(c.Registries, []string{Consul}) }},
		{"quiet-max", []string{"--quiet-max=8s"}, podEnv, func(c Config) bool { return c.QuietMax == 8*time.Second && TimingOf(c).QuietMax == 8*time.Second }},
		{"quiet-max off by default", nil, podEnv, func(c Config) bool { return c.QuietMax == 0 }},
		{"wait-connections off by default", nil, podEnv, func(c Config) bool { return !c.WaitConnections && !TimingOf(c).WaitConnections }},
		{"wait-connections flag", []string{"--wait-connections"}, podEnv, func(c Config) bool { return c.WaitConnections && TimingOf(c).WaitConnections }},
		{"wait-connections env", nil, with(podEnv, "LASTCALL_WAIT_CONNECTIONS", "true"), func(c Config) bool { return c.WaitConnections }},
		{"result file: the kubelet's default", nil, podEnv, func(c Config) bool { return c.ResultFile == "/dev/termination-log" }},
		{"result file from env", nil, with(podEnv, "LASTCALL_RESULT_FILE", "/tmp/msg"), func(c Config) bool { return c.ResultFile == "/tmp/msg" }},
		{"result file off by -", nil, with(podEnv, "LASTCALL_RESULT_FILE", "-"), func(c Config) bool { return c.ResultFile == "" }},
		{"result file off by an empty flag", []string{"--result-file="}, with(podEnv, "LASTCALL_RESULT_FILE", "/tmp/msg"), func(c Config) bool { return c.ResultFile == "" }},
		{"wait-connections flag over env", []string{"--wait-connections=false"}, with(podEnv, "LASTCALL_WAIT_CONNECTIONS", "true"), func(c Config) bool { return !c.WaitConnections }},
		{"zero durations allowed where they mean off", []string{"--min-wait=0", "--quiet=0s", "--reserve=0s", "--settle=0s"}, podEnv, func(c Config) bool {
			return c.MinWait == 0 && c.Quiet == 0 && c.Drain.Reserve == 0 && endpointsOf(c).Settle == 0
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(c) {
				t.Errorf("unexpected config: %+v", c)
			}
		})
	}
}

// parseErrorCases are bad settings: Parse fails on each with one line, ParseLenient goes on.
var parseErrorCases = []struct {
	name string
	args []string
	env  map[string]string
	want []string // every part must appear in the one-line error
}{
	{"bad duration flag", []string{"--quiet=soon"}, podEnv, []string{"--quiet", "LASTCALL_QUIET", `"soon"`, "500ms"}},
	{"bad duration env", nil, with(podEnv, "LASTCALL_RESERVE", "10"), []string{"env LASTCALL_RESERVE", "--reserve", "duration"}},
	{"negative duration", []string{"--min-wait=-1s"}, podEnv, []string{"--min-wait", "zero or more"}},
	{"zero max-wait", []string{"--max-wait=0"}, podEnv, []string{"--max-wait", "above zero"}},
	{"unknown registry", []string{"--registries=etcd"}, podEnv, []string{"--registries", `"etcd"`, "endpoints, consul, or auto"}},
	{"port out of range", []string{"--ports=80,70000"}, podEnv, []string{"--ports", "70000", "1 to 65535"}},
	{"port not a number", nil, with(podEnv, "LASTCALL_PORTS", "http"), []string{"LASTCALL_PORTS", `"http"`}},
	{"app admin not a URL", []string{"--app-admin=127.0.0.1:9901"}, podEnv, []string{"--app-admin", "http(s) URL"}},
	{"wait-connections not a bool", nil, with(podEnv, "LASTCALL_WAIT_CONNECTIONS", "sometimes"), []string{"LASTCALL_WAIT_CONNECTIONS", "--wait-connections", "true or false"}},
	{"log format", []string{"--log-format=xml"}, podEnv, []string{"--log-format", "json, text"}},
	{"log level", []string{"--log-level=loud"}, podEnv, []string{"--log-level", "debug, info"}},
	{"unknown flag", []string{"--budget=3s"}, podEnv, []string{"budget", "--help"}},
	{"bad registry setting", nil, with(podEnv, "LASTCALL_ENDPOINTS_SETTLE", "soon"), []string{"--settle", "LASTCALL_ENDPOINTS_SETTLE", "duration"}},
	{"positional argument", []string{"sleep", "5"}, podEnv, []string{`"sleep"`, "only flags"}},
	{"consul without address", []string{"--registries=consul"}, podEnv, []string{"registry consul", "--consul-addr", "CONSUL_HTTP_ADDR"}},
	{"consul without identity", []string{"--registries=consul", "--consul-addr=a:1"}, map[string]string{}, []string{"POD_IP", "POD_UID", "--consul-service-id"}},
	{"endpoints without identity", []string{"--registries=endpoints"}, map[string]string{"POD_NAME": "x"}, []string{"POD_NAMESPACE", "POD_UID", "downward API"}},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parse(tt.args, env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestHelpDocumentsEveryOption(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}} {
		var buf bytes.Buffer
		_, err := Parse(args, env(nil), &buf, adapters.All())
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: err = %v, want flag.ErrHelp", args, err)
		}
		for _, v := range allVars() {
			want := "--" + v.Flag + ", $" + v.Env
			if v.Flag == "" {
				want = "$" + v.Env
			}
			if !strings.Contains(buf.String(), want) {
				t.Errorf("--help lacks %s", want)
			}
		}
		for _, s := range []string{"--version", "CONSUL_HTTP_TOKEN", "CONSUL_HTTP_ADDR", "(default 20s)"} {
			if !strings.Contains(buf.String(), s) {
				t.Errorf("--help lacks %s", s)
			}
		}
	}
}

// allVars is every setting lastcall-prestop offers with the production adapters.
func allVars() []envflag.Var {
	c := Config{Set: registry.NewSet(registry.PreStop, adapters.All())}
	return c.vars()
}

func TestREADMEDocumentsEveryOption(t *testing.T) {
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start := strings.Index(readme, "## lastcall-prestop")
	end := strings.Index(readme, "## lastcall-controller")
	if start < 0 || end < start {
		t.Fatal("README lacks the lastcall-prestop and lastcall-controller sections")
	}
	section := readme[start:end]
	for _, v := range allVars() {
		row := envflag.Row(v)
		if !strings.Contains(section, row) {
			t.Errorf("README's lastcall-prestop flag table lacks %s", row)
		}
	}
}

// ParseLenient never fails: every bad setting is reported and the rest still configures a
// drain with a budget.
func TestParseLenientGoesOnWithEveryBadSetting(t *testing.T) {
	for _, tt := range parseErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := ParseLenient(tt.args, env(tt.env), adapters.All())
			if len(errs) == 0 {
				t.Fatal("no error reported")
			}
			if msg := errors.Join(errs...).Error(); !strings.Contains(msg, tt.want[0]) {
				t.Errorf("errors %q do not mention %q", msg, tt.want[0])
			}
			if c.Drain.MaxWait <= 0 || c.Quiet < 0 || c.ShowVersion {
				t.Errorf("config not usable for a drain: max-wait %s, quiet %s", c.Drain.MaxWait, c.Quiet)
			}
		})
	}
}

func TestParseLenientKeepsTheGoodSettings(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"--grace=3", "--min-wait=7s"}, nil},
		{"unknown flag with its value apart", []string{"--grace", "3", "--min-wait=7s"}, nil},
		{"bad value: the env var instead", []string{"--min-wait=soon"}, map[string]string{"LASTCALL_MIN_WAIT": "7s"}},
		{"stray argument", []string{"--min-wait=7s", "sleep", "5"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, errs := ParseLenient(tt.args, env(with(podEnv, flatten(tt.env)...)), adapters.All())
			if len(errs) == 0 || c.MinWait != 7*time.Second || c.PodName != "web-1" {
				t.Errorf("errors %v, min-wait %s, pod %q; want an error, 7s and web-1", errs, c.MinWait, c.PodName)
			}
		})
	}
}

func flatten(m map[string]string) []string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k, v)
	}
	return kv
}
