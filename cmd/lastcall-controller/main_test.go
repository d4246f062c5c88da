package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/onsi/gomega"

	"github.com/lastcall-dev/lastcall/controllers"
	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consul"
	"github.com/lastcall-dev/lastcall/registry/endpoints/apitest"
	"github.com/lastcall-dev/lastcall/registry/envflag"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

func TestMain(m *testing.M) { apitest.Main(m) }

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func parseArgs(args []string, env map[string]string, table []registry.Adapter) (options, error) {
	fs := flag.NewFlagSet("lastcall-controller", flag.ContinueOnError)
	return parse(fs, args, func(k string) string { return env[k] }, io.Discard, table)
}

// The manager as shipped, against a real API server, with a registry added to the table: probes
// answer, the metrics endpoint serves lastcall's metrics (the added registry's sweeper counter
// among them); cancelling the context stops it cleanly.
func TestManagerServesProbesAndMetrics(t *testing.T) {
	cfg := apitest.Shared(t)
	table := append(adapters.All(), memory.Adapter(memory.New("mem", memory.Immediate)))
	o, err := parseArgs(append([]string{"--metrics-bind-address", freeAddr(t), "--health-probe-bind-address", freeAddr(t), "--registries=auto,mem"}, webhookArgs(t)...), nil, table)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, o, logr.Discard()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	g := gomega.NewWithT(t)
	for _, u := range []struct{ url, want string }{
		{"http://" + o.probeAddr + "/healthz", "ok"},
		{"http://" + o.probeAddr + "/readyz", "ok"},
		{"http://" + o.metricsAddr + "/metrics", `lastcall_stale_registrations_removed_total{registry="mem"} 0`},
	} {
		// The manager is starting: nothing to wait on but the port.
		g.Eventually(func(g gomega.Gomega) {
			code, body := get(u.url)
			g.Expect(code).To(gomega.Equal(http.StatusOK))
			g.Expect(body).To(gomega.ContainSubstring(u.want))
		}).WithTimeout(20*time.Second).WithPolling(50*time.Millisecond).Should(gomega.Succeed(), u.url)
	}
	checkWebhookServed(t, cfg, o)
}

// The controller's own namespace is excluded from injection as the chart's webhook excludes it,
// whether the webhook runs here or not.
func TestInjectExcludesTheControllersNamespace(t *testing.T) {
	defer func() { readNamespaceFile = os.ReadFile }()
	readNamespaceFile = func(string) ([]byte, error) { return []byte("lastcall-system\n"), nil }
	if o, err := parseArgs(nil, nil, adapters.All()); err != nil || !slices.Equal(o.controllers.InjectExcluded, []string{"lastcall-system"}) {
		t.Errorf("in a cluster: excluded %v (err %v), want the pod's namespace", o.controllers.InjectExcluded, err)
	}
	if o, err := parseArgs([]string{"--webhook-port=9443", "--webhook-namespace=lc"}, nil, adapters.All()); err != nil || !slices.Equal(o.controllers.InjectExcluded, []string{"lc"}) {
		t.Errorf("with --webhook-namespace: excluded %v (err %v), want it", o.controllers.InjectExcluded, err)
	}
	readNamespaceFile = func(string) ([]byte, error) { return nil, os.ErrNotExist }
	if o, err := parseArgs([]string{"--webhook-port=9443", "--webhook-namespace=lc", "--webhook-exclude-namespaces=a, b"}, nil, adapters.All()); err != nil || !slices.Equal(o.controllers.InjectExcluded, []string{"lc", "a", "b"}) {
		t.Errorf("with --webhook-exclude-namespaces: excluded %v (err %v), want lc, a, b", o.controllers.InjectExcluded, err)
	}
	if o, err := parseArgs(nil, nil, adapters.All()); err != nil || len(o.controllers.InjectExcluded) != 0 {
		t.Errorf("outside a cluster: excluded %v (err %v), want none", o.controllers.InjectExcluded, err)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(o options) bool
		wantErr []string
	}{
		{name: "defaults", check: func(o options) bool {
			c := o.controllers
			return o.metricsAddr == ":8080" && o.probeAddr == ":8081" && !o.leaderElect && o.qps == 50 && o.burst == 100 &&
				c.SweepInterval == 30*time.Second && c.GateRetry == time.Second && c.ObservePoll == 250*time.Millisecond &&
				c.Drain == prestop.Drain{MaxWait: 20 * time.Second, Reserve: 10 * time.Second} && slices.Equal(c.Registries, []string{"endpoints"})
		}},
		{name: "bare --leader-elect", args: []string{"--leader-elect"}, check: func(o options) bool { return o.leaderElect }},
		{name: "consul from CONSUL_HTTP_ADDR, meta key from env", env: map[string]string{"CONSUL_HTTP_ADDR": "http://c:8500", "LASTCALL_CONSUL_META_KEY": "uid"},
			check: func(o options) bool {
				co := o.controllers.Set.Options(consul.Name).(*consul.Options)
				return slices.Equal(o.controllers.Registries, []string{"endpoints", "consul"}) && co.Addr == "http://c:8500" && co.MetaKey == "uid"
			}},
		{name: "drain budget as lastcall-prestop takes it", args: []string{"--max-wait=45s"}, env: map[string]string{"LASTCALL_RESERVE": "5s"},
			check: func(o options) bool {
				return o.controllers.Drain == prestop.Drain{MaxWait: 45 * time.Second, Reserve: 5 * time.Second}
			}},
		{name: "zap flags stay", args: []string{"--zap-log-level=debug"}, check: func(options) bool { return true }},
		{name: "zero interval", args: []string{"--sweep-interval=0"}, wantErr: []string{"--sweep-interval / LASTCALL_SWEEP_INTERVAL", "above zero"}},
		{name: "consul chosen without an address", args: []string{"--registries=consul"}, wantErr: []string{"registry consul", "--consul-addr"}},
		{name: "per-pod consul settings are lastcall-prestop's", args: []string{"--consul-service-id=x"}, wantErr: []string{"consul-service-id"}},
		{name: "positional argument", args: []string{"run"}, wantErr: []string{`"run"`, "only flags"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseArgs(tt.args, tt.env, adapters.All())
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) || strings.Contains(err.Error(), "\n") {
						t.Errorf("error %q: want one line with %q", err, w)
					}
				}
				return
			}
			if err != nil || !tt.check(o) {
				t.Errorf("options = %+v, %v", o, err)
			}
		})
	}
}

// help runs --help of both binaries on the production table.
func help(t *testing.T) (controller, preStop string) {
	t.Helper()
	var c, p bytes.Buffer
	fs := flag.NewFlagSet("lastcall-controller", flag.ContinueOnError)
	if _, err := parse(fs, []string{"--help"}, func(string) string { return "" }, &c, adapters.All()); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("controller --help: %v", err)
	}
	if _, err := prestop.Parse([]string{"--help"}, func(string) string { return "" }, &p, adapters.All()); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("lastcall-prestop --help: %v", err)
	}
	return c.String(), p.String()
}

// The registries' settings and the drain budget are the same in both binaries: every setting the
// controller shares with lastcall-prestop has the same flag, variables and default in both --help.
func TestSharedSettingsMatchLastcallPrestop(t *testing.T) {
	controllerHelp, prestopHelp := help(t)
	shared := 0
	for _, v := range (&options{controllers: controllersConfig()}).vars() {
		head := v.Flag
		if head == "" {
			head = v.Env
		}
		line := helpLine(controllerHelp, head)
		if line == "" {
			t.Errorf("controller --help lacks %s", head)
			continue
		}
		if other := helpLine(prestopHelp, head); other != "" {
			shared++
			if other != line {
				t.Errorf("%s differs:\n  controller: %s\n  prestop:    %s", head, line, other)
			}
		}
	}
	for _, want := range []string{"--registries", "--consul-addr", "--consul-meta-key", "--reserve", "--max-wait", "LASTCALL_CONSUL_TOKEN", "--zap-log-level", "--kubeconfig"} {
		if !strings.Contains(controllerHelp, want) {
			t.Errorf("controller --help lacks %s", want)
		}
	}
	if shared < 7 {
		t.Errorf("only %d settings shared with lastcall-prestop", shared)
	}
}

func controllersConfig() (c controllers.Config) {
	c.Set = registry.NewSet(registry.Controller, adapters.All())
	return c
}

// helpLine is the first line of help that names the setting, with its variables and default.
func helpLine(help, name string) string {
	for _, line := range strings.Split(help, "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "--"+name+",") || strings.HasPrefix(line, "$"+name) {
			return line
		}
	}
	return ""
}

func TestREADMEDocumentsEveryOption(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	start := strings.Index(readme, "## lastcall-controller")
	end := strings.Index(readme[start+1:], "\n## ")
	if start < 0 || end < 0 {
		t.Fatal("README lacks the lastcall-controller section")
	}
	section := readme[start : start+1+end]
	for _, v := range (&options{controllers: controllersConfig()}).vars() {
		if row := envflag.Row(v); !strings.Contains(section, row) {
			t.Errorf("README's lastcall-controller flag table lacks %s", row)
		}
	}
	for _, v := range (&checkOptions{}).vars() {
		if row := envflag.Row(v); !strings.Contains(section, row) {
			t.Errorf("README's check-webhook flag table lacks %s", row)
		}
	}
}
