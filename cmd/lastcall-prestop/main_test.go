package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	prestop "github.com/lastcall-dev/lastcall/preStop"
	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/adapters"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
	"github.com/lastcall-dev/lastcall/registry/memory"
)

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout string
		stderr string
		// badInput: stderr is the one line the kubelet puts in its FailedPreStopHook Event, and
		// the hook still drained (its log says so, and names the setting)
		badInput bool
	}{
		{name: "help", args: []string{"--help"}, stdout: "--max-wait, $LASTCALL_MAX_WAIT"},
		{name: "version", args: []string{"--version"}, stdout: "lastcall-prestop dev"},
		{name: "bad flag value", args: []string{"--quiet=later"}, code: 2, stderr: "--quiet", badInput: true},
		{name: "bad env value", env: map[string]string{"LASTCALL_RESERVE": "-5s"}, code: 2, stderr: "LASTCALL_RESERVE", badInput: true},
		{name: "unknown flag", args: []string{"--grace=3"}, code: 2, stderr: "grace", badInput: true},
		{name: "unknown flag with a separate value", args: []string{"--grace", "3", "--min-wait=0"}, code: 2, stderr: "grace", badInput: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "fd1")
			if err := os.WriteFile(logFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"LASTCALL_LOG_FILE": logFile, "LASTCALL_QUIET": "0s", "LASTCALL_MAX_WAIT": "300ms"}
			for k, v := range tt.env {
				env[k] = v
			}
			var out, errOut bytes.Buffer
			code := run(adapters.All(), tt.args, func(k string) string { return env[k] }, &out, &errOut)
			if code != tt.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tt.code, errOut.String())
			}
			if !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("stdout %q / stderr %q; want %q / %q", out.String(), errOut.String(), tt.stdout, tt.stderr)
			}
			if !tt.badInput {
				return
			}
			if strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("error is not one line: %q", errOut.String())
			}
			logs, _ := os.ReadFile(logFile)
			if !strings.Contains(string(logs), `"msg":"drain done"`) || !strings.Contains(string(logs), tt.stderr) {
				t.Errorf("the hook did not drain despite the bad setting, or its log does not name %s: %s", tt.stderr, logs)
			}
		})
	}
}

func TestLogsGoToTheLogFileWhenWritable(t *testing.T) {
	for _, tt := range []struct {
		name     string
		writable bool
	}{{"writable", true}, {"missing falls back to stderr", false}} {
		t.Run(tt.name, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "fd1")
			if tt.writable {
				if err := os.WriteFile(logFile, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var out, errOut bytes.Buffer
			args := []string{"--registries=", "--max-wait=200ms", "--min-wait=0", "--quiet=0", "--log-file", logFile}
			if code := run(adapters.All(), args, func(string) string { return "" }, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			data, _ := os.ReadFile(logFile)
			inFile := strings.Contains(string(data), `"msg":"drain done"`)
			inStderr := strings.Contains(errOut.String(), `"msg":"drain done"`)
			if inFile != tt.writable || inStderr == tt.writable {
				t.Errorf("summary in file=%v, in stderr=%v; want file=%v", inFile, inStderr, tt.writable)
			}
		})
	}
}

// --wait-connections with real sockets: the helper waits for the caller to close its
// connection, and returns by the budget when it does not; the summary says how many were open.
func TestWaitConnectionsWithRealSockets(t *testing.T) {
	const budget = 400 * time.Millisecond
	for _, tt := range []struct {
		name    string
		closeIn time.Duration // 0: the caller keeps its connection
		open    string
		atMost  time.Duration
	}{
		{name: "the caller closes", closeIn: 150 * time.Millisecond, open: `"openConnections":0`, atMost: budget - 50*time.Millisecond},
		{name: "the caller keeps it: the budget ends the wait", open: `"openConnections":1`, atMost: budget + 50*time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			port, c := inboundConnection(t)
			if tt.closeIn > 0 {
				time.AfterFunc(tt.closeIn, func() { _ = c.Close() })
			}
			logFile := filepath.Join(t.TempDir(), "fd1")
			if err := os.WriteFile(logFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"--registries=", "--max-wait=" + budget.String(), "--min-wait=0", "--quiet=50ms", "--wait-connections",
				"--ports=" + strconv.Itoa(port), "--log-file", logFile}
			var out, errOut bytes.Buffer
			start := time.Now()
			if code := run(adapters.All(), args, func(string) string { return "" }, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if el := time.Since(start); el > tt.atMost {
				t.Errorf("returned after %s, want at most %s (budget %s)", el, tt.atMost, budget)
			}
			logs, _ := os.ReadFile(logFile)
			if !strings.Contains(string(logs), tt.open) || !strings.Contains(string(logs), `"step":"wait-connections"`) {
				t.Errorf("log lacks %s or the wait-connections step:\n%s", tt.open, logs)
			}
		})
	}
}

// The result reaches the termination message the kubelet created, after the app's own text;
// the helper never creates that file, and a file it cannot write costs neither the drain nor
// the budget, only one log line.
func TestTheResultIsAppendedToTheTerminationMessage(t *testing.T) {
	const budget = 300 * time.Millisecond
	port, _ := inboundConnection(t)

	const appText = "app: bye\n"
	tests := []struct {
		name string
		// setup makes what is at path (nothing: absent) and returns the --result-file value
		setup func(t *testing.T, path string) string
		// file: what path holds after the drain: "report" (the app's text, then the report),
		// "app" (the app's text alone), "absent", or "" (a directory: not checked)
		file string
		log  string // in the helper's log
	}{
		{name: "the kubelet's file: appended", file: "report", setup: func(t *testing.T, path string) string {
			if err := os.WriteFile(path, []byte(appText), 0o666); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{name: "absent: not created", file: "absent", log: "the result file does not exist", setup: func(_ *testing.T, path string) string { return path }},
		{name: "unwritable: logged", log: "result not handed over", setup: func(t *testing.T, path string) string {
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			return path
		}},
		{name: "off", file: "app", setup: func(t *testing.T, path string) string {
			if err := os.WriteFile(path, []byte(appText), 0o666); err != nil {
				t.Fatal(err)
			}
			return "-"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "termination-log")
			flagValue := tt.setup(t, path)
			logFile := filepath.Join(dir, "fd1")
			if err := os.WriteFile(logFile, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			env := map[string]string{"LASTCALL_RESULT_FILE": flagValue}
			args := []string{"--registries=", "--max-wait=" + budget.String(), "--min-wait=100ms", "--quiet=0",
				"--ports=" + strconv.Itoa(port), "--log-file", logFile}
			var out, errOut bytes.Buffer
			start := time.Now()
			if code := run(adapters.All(), args, func(k string) string { return env[k] }, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if el := time.Since(start); el > budget+150*time.Millisecond {
				t.Errorf("returned after %s, budget %s", el, budget)
			}
			logs, _ := os.ReadFile(logFile)
			if !strings.Contains(string(logs), `"msg":"drain done"`) || !strings.Contains(string(logs), tt.log) {
				t.Errorf("log lacks the summary or %q:\n%s", tt.log, logs)
			}
			data, err := os.ReadFile(path)
			switch tt.file {
			case "absent":
				if err == nil {
					t.Errorf("the helper created %s", path)
				}
				return
			case "app":
				if string(data) != appText {
					t.Errorf("file = %q, want the app's text alone", data)
				}
				return
			case "":
				return
			}
			rest, ok := strings.CutPrefix(string(data), appText)
			if !ok || strings.Count(rest, "\n") != 1 {
				t.Fatalf("file = %q: want the app's text, then one line", data)
			}
			r, ok := prestop.ParseReport(string(data))
			if !ok || r.Open == nil || *r.Open != 1 || r.BudgetMs != budget.Milliseconds() || r.TookMs > budget.Milliseconds() {
				t.Errorf("report %q = %+v (ok %v): want 1 open connection, budget %s", rest, r, ok, budget)
			}
		})
	}
}

// inboundConnection is one established connection to a loopback listener, closed with the
// test: the listener's port, and the caller's end.
func inboundConnection(t *testing.T) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().(*net.TCPAddr).Port, c
}

// The whole command against a real Consul agent: the pod's instance is gone, its neighbour stays.
func TestConsulPathEndToEnd(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client(t, nil)
	health := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer health.Close()
	for _, s := range []struct{ id, ip, uid string }{{"web-1", "10.3.0.1", "uid-1"}, {"web-2", "10.3.0.2", "uid-2"}} {
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: s.id, Name: "web", Address: s.ip, Meta: map[string]string{"pod-uid": s.uid},
			Check: &api.AgentServiceCheck{HTTP: health.URL, Interval: "1s"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	env := map[string]string{"POD_NAME": "web-1", "POD_NAMESPACE": "shop", "POD_UID": "uid-1", "POD_IP": "10.3.0.1", "CONSUL_HTTP_ADDR": agent.Addr}
	var out, errOut bytes.Buffer
	start := time.Now()
	code := run(adapters.All(), []string{"--max-wait=5s", "--min-wait=0", "--quiet=100ms", "--log-file="}, func(k string) string { return env[k] }, &out, &errOut)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if el := time.Since(start); el > 5*time.Second+500*time.Millisecond {
		t.Errorf("took %s, budget 5s", el)
	}
	for _, s := range []string{`"step":"deregister"`, `"removed":"web/web-1"`, `"step":"propagate"`, `"consul":"confirmed"`} {
		if !strings.Contains(errOut.String(), s) {
			t.Errorf("log lacks %s:\n%s", s, errOut.String())
		}
	}
	svcs, _, err := c.Catalog().Service("web", "", (&api.QueryOptions{RequireConsistent: true}).WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if len(svcs) != 1 || svcs[0].ServiceID != "web-2" {
		t.Errorf("catalog after the drain = %d instances (%v), want only web-2", len(svcs), svcs)
	}
}

// A registry added to the table goes through the same path as consul and endpoints: its flags
// and env in --help and in the configuration, its constructor, the drain.
func TestARegistryAddedToTheTableIsDrained(t *testing.T) {
	pod := registry.Instance{Namespace: "shop", Pod: "web-1", UID: "uid-1", IP: "10.3.0.1"}
	env := map[string]string{"POD_NAME": pod.Pod, "POD_NAMESPACE": pod.Namespace, "POD_UID": pod.UID, "POD_IP": pod.IP}
	table := func(r *memory.Registry) []registry.Adapter { return append(adapters.All(), memory.Adapter(r)) }

	var help bytes.Buffer
	if code := run(table(memory.New("inmem", memory.Immediate)), []string{"--help"}, func(string) string { return "" }, &help, &help); code != 0 ||
		!strings.Contains(help.String(), "--inmem-behaviour, $LASTCALL_INMEM_BEHAVIOUR") || !strings.Contains(help.String(), "endpoints, consul, inmem, or auto") {
		t.Fatalf("--help (exit %d) does not offer the added registry:\n%s", code, help.String())
	}

	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		outcome string
		removed bool
	}{
		{"chosen by flag, behaviour from env", []string{"--registries=inmem"}, map[string]string{"LASTCALL_INMEM_BEHAVIOUR": "immediate"}, `"inmem":"confirmed"`, true},
		{"chosen by env, behaviour from flag", []string{"--inmem-behaviour=fail"}, map[string]string{"LASTCALL_REGISTRIES": "inmem"}, `"inmem":"failed"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := memory.New("inmem", memory.Hang) // the setting decides, not this
			reg.Register(pod)
			getenv := func(k string) string {
				if v, ok := tt.env[k]; ok {
					return v
				}
				return env[k]
			}
			var out, errOut bytes.Buffer
			args := append([]string{"--max-wait=300ms", "--min-wait=0", "--quiet=0", "--log-file="}, tt.args...)
			if code := run(table(reg), args, getenv, &out, &errOut); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			if !strings.Contains(errOut.String(), tt.outcome) {
				t.Errorf("log lacks %s:\n%s", tt.outcome, errOut.String())
			}
			if reg.Registered(pod.UID) == tt.removed {
				t.Errorf("registered after the drain = %v, want %v", !tt.removed, !tt.removed)
			}
		})
	}
	var errOut bytes.Buffer
	if code := run(table(memory.New("inmem", memory.Immediate)), []string{"--inmem-behaviour=slow"}, func(string) string { return "" }, io.Discard, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "--inmem-behaviour / LASTCALL_INMEM_BEHAVIOUR") {
		t.Errorf("bad setting of the added registry: exit %d, %q", code, errOut.String())
	}
}

// A kubeconfig the API client cannot use (here: a CA that is not PEM) is reported and the drain
// goes on without the API; it used to panic in metadata.NewForConfigOrDie.
func TestBuildDepsReportsAnUnusableAPIClientInsteadOfPanicking(t *testing.T) {
	kc := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", certificate-authority-data: bm90IGEgY2VydGlmaWNhdGU=}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := prestop.Config{Kubeconfig: kc, InCluster: true}
	_, err := buildDeps(cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "kubernetes API client") {
		t.Fatalf("buildDeps error = %v; want it to report the unusable API client", err)
	}
}

func TestCopyToCopiesTheBinary(t *testing.T) {
	dir := t.TempDir()
	var errOut bytes.Buffer
	if code := run(adapters.All(), []string{"copy-to", dir}, func(string) string { return "" }, io.Discard, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "lastcall-prestop"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from the binary (err %v)", err)
	}
	st, err := os.Stat(filepath.Join(dir, "lastcall-prestop"))
	if err != nil || st.Mode().Perm() != 0o555 {
		t.Fatalf("mode %v, want r-xr-xr-x (err %v)", st.Mode(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("left %d files, want only the binary", len(entries))
	}
	if code := run(adapters.All(), []string{"copy-to"}, func(string) string { return "" }, io.Discard, &errOut); code != 2 {
		t.Errorf("copy-to without a folder: exit %d, want 2", code)
	}
}
