package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
)

func TestRunExitCodes(t *testing.T) {
	emptyToken := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(emptyToken, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout string
		stderr string
	}{
		{name: "help", args: []string{"--help"}, stdout: "--kube-proxy-metrics, $LASTCALL_KUBE_PROXY_METRICS (default http://127.0.0.1:10249)"},
		{name: "-h", args: []string{"-h"}, stdout: "Usage: lastcall-node [flags]"},
		{name: "version", args: []string{"--version"}, stdout: "lastcall-node dev\n"},
		{name: "bad mode", args: []string{"--mode=ipvs"}, code: 2, stderr: `lastcall-node: invalid flag --mode="ipvs" (--mode / LASTCALL_MODE): want one of auto, iptables, nftables` + "\n"},
		{name: "bad env duration", env: map[string]string{"LASTCALL_RECHECK": "0s"}, code: 2, stderr: `lastcall-node: invalid env LASTCALL_RECHECK="0s" (--recheck / LASTCALL_RECHECK): want a duration above zero` + "\n"},
		{name: "bad URL", args: []string{"--kube-proxy-metrics=127.0.0.1:10249"}, code: 2, stderr: "want an http(s) URL"},
		{name: "timeouts", args: []string{"--default-timeout=10m"}, code: 2, stderr: "lastcall-node: --default-timeout 10m0s is more than --max-timeout 5m0s\n"},
		{name: "empty token file", args: []string{"--token-file", emptyToken}, code: 2, stderr: "is empty: put the token in it or leave the setting unset\n"},
		{name: "argument", args: []string{"serve"}, code: 2, stderr: `unexpected argument "serve"`},
		{name: "unknown flag", args: []string{"--port=1"}, code: 2, stderr: "flag provided but not defined: -port (see --help)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(context.Background(), tt.args, func(k string) string { return tt.env[k] }, &out, &errOut, nil)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut.String())
			}
			if !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("stdout %q / stderr %q; want %q / %q", out.String(), errOut.String(), tt.stdout, tt.stderr)
			}
			if tt.code != 0 && strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("error is not one line: %q", errOut.String())
			}
		})
	}
}

// --help names every flag with its variable.
func TestHelpNamesEverySetting(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &out, &out, nil); code != 0 {
		t.Fatal(code)
	}
	var c config
	for _, v := range c.vars() {
		if !strings.Contains(out.String(), "--"+v.Flag+", $"+v.Env) {
			t.Errorf("--help lacks --%s, $%s", v.Flag, v.Env)
		}
	}
}

// fakeKubeProxy serves kube-proxy's /proxyMode and /metrics; sync() records a rule sync.
type fakeKubeProxy struct {
	mode string
	mu   sync.Mutex
	last time.Time
}

func (k *fakeKubeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch r.URL.Path {
	case "/proxyMode":
		fmt.Fprint(w, k.mode)
	case "/metrics":
		fmt.Fprintln(w, "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge")
		if !k.last.IsZero() {
			fmt.Fprintf(w, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} %.6f\n", float64(k.last.UnixMicro())/1e6)
		}
		fmt.Fprintln(w, "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0")
	default:
		http.NotFound(w, r)
	}
}

func (k *fakeKubeProxy) sync() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.last = time.Now()
}

// agentProcess runs the command in this process until the test ends and returns its URL.
func agentProcess(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan int, 1)
	var logs syncBuffer
	go func() {
		done <- run(ctx, append([]string{"--listen=127.0.0.1:0", "--node-name=test-node"}, args...), func(string) string { return "" }, &logs, &logs, ready)
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("exit %d", code)
		}
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	select {
	case addr := <-ready:
		return "http://" + addr
	case code := <-done:
		t.Fatalf("exit %d before serving: %s", code, logs.String())
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The command wires kube-proxy's metrics, the mode it names and the probe of that mode: here
// nftables over a fake nft that prints a fixture.
func TestServesWithKubeProxysMode(t *testing.T) {
	cat, err := exec.LookPath("cat")
	if err != nil {
		t.Skip("no cat")
	}
	fixture, err := filepath.Abs("../../registry/endpoints/dataplane/nftables/testdata/terminating.json")
	if err != nil {
		t.Fatal(err)
	}
	nft := filepath.Join(t.TempDir(), "nft")
	script := "#!/bin/sh\ncase \"$*\" in\n" +
		"'--json list table ip kube-proxy') exec " + cat + " '" + fixture + "' ;;\n" +
		"'--json list map ip kube-proxy service-ips') echo '{\"nftables\": []}' ;;\n" +
		"*) echo \"Error: No such file or directory\" >&2; exit 1 ;;\nesac\n"
	if err := os.WriteFile(nft, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	kp := &fakeKubeProxy{mode: "nftables"}
	kpSrv := httptest.NewServer(kp)
	defer kpSrv.Close()
	kp.sync()
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url := agentProcess(t, "--kube-proxy-metrics="+kpSrv.URL, "--nft="+nft, "--token-file="+token)

	c := &agent.Client{URL: url, Token: "s3cret"}
	ans, err := c.Check(context.Background(), agent.CheckRequest{IPs: []agent.TargetJSON{{IP: "10.244.1.2"}, {IP: "10.244.1.5"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ip := range ans.IPs {
		got[ip.IP] = ip.Verdict
	}
	if ans.Mode != "nftables" || ans.Node != "test-node" || ans.KubeProxy.Metrics != "ok" || got["10.244.1.2"] != "NotRouted" || got["10.244.1.5"] != "LastBackend" {
		t.Errorf("answer %+v", ans)
	}
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz %d", resp.StatusCode)
	}
}
