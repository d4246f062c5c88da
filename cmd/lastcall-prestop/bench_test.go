package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
)

// BenchmarkBinary builds lastcall-prestop as it ships (static, stripped) and runs the real Consul
// drain path with it. It reports the binary's size, the time from exec to the first logged
// action (the budget step), and the peak RSS of the whole run.
func BenchmarkBinary(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "lastcall-prestop")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	agent := consultest.Start(b)
	c := agent.Client(b, nil)

	var firsts []time.Duration
	var maxRSS int64
	for i := 0; b.Loop(); i++ {
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Address: "10.4.0.1",
			Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}}); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(bin, "--max-wait=5s", "--min-wait=0", "--quiet=50ms", "--log-file=")
		cmd.Env = []string{"POD_NAME=web-1", "POD_NAMESPACE=shop", "POD_IP=10.4.0.1", "CONSUL_HTTP_ADDR=" + agent.Addr}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		var log []string
		for sc.Scan() {
			if len(log) == 0 {
				firsts = append(firsts, time.Since(start))
			}
			log = append(log, sc.Text())
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		if !strings.Contains(strings.Join(log, "\n"), `"consul":"confirmed"`) {
			b.Fatalf("drain not confirmed:\n%s", strings.Join(log, "\n"))
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			maxRSS = max(maxRSS, ru.Maxrss) // KiB on Linux
		}
	}
	slices.Sort(firsts)
	b.ReportMetric(float64(st.Size())/1e6, "binary-MB")
	b.ReportMetric(float64(firsts[len(firsts)/2].Microseconds())/1000, "first-action-p50-ms")
	b.ReportMetric(float64(maxRSS)/1024, "peak-RSS-MiB")
}
