package dumpbench

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/agent"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/iptables"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/netnstest"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/nftables"
)

// Environment of the benchmark.
const (
	// enableEnv=1 runs it.
	enableEnv = "LASTCALL_DATAPLANE_BENCH"
	// servicesEnv overrides the number of Services (10 endpoints each) for a quick run.
	servicesEnv = "LASTCALL_DATAPLANE_BENCH_SERVICES"
	// modesEnv limits the run to some modes: "nftables", "iptables" (default: both).
	modesEnv = "LASTCALL_DATAPLANE_BENCH_MODES"
	// agentEnv is the lastcall-node binary whose RSS is measured; without it that part is skipped.
	agentEnv = "LASTCALL_NODE_BIN"
	// phaseEnv names the one measurement a run of the test binary in the namespace makes.
	phaseEnv = "LASTCALL_DATAPLANE_BENCH_PHASE"
)

// Draining IPs per check, as in the in-memory benchmarks.
var drainingCounts = []int{1, 100}

// result is one measurement: checks of one read of one mode for n draining IPs.
type result struct {
	Mode     string `json:"mode"`
	Read     string `json:"read"`
	Draining int    `json:"draining"`
	// First is the first check, which for targeted reads also confirms the chain names.
	FirstWall, FirstCPU time.Duration
	// Wall and CPU of the checks after the first: median wall, mean CPU of this process and
	// its commands.
	Checks    int
	Wall, CPU time.Duration
	Reads     int    `json:"reads"`
	Why       string `json:"why,omitempty"`
	// RSS is this process's peak (VmHWM), CmdRSS the largest command's, in KiB.
	RSS, CmdRSS int64
	Verdicts    map[string]string
}

// TestDumpCommands loads a generated ruleset of 5,000 Services / 50,000 endpoints into a network
// namespace, in nftables form (nft -j -f) and then in iptables-nft form (iptables-nft-restore),
// and times one check of 1 and of 100 draining IPs, whole-table and targeted, each in a fresh
// process (its peak RSS and its commands' are the check's); then, with LASTCALL_NODE_BIN, the
// lastcall-node binary's RSS and CPU for the same checks through its API.
func TestDumpCommands(t *testing.T) {
	if os.Getenv(enableEnv) != "1" {
		t.Skipf("set %s=1 to run (root, nft and iptables-nft; about ten minutes): make bench-dataplane", enableEnv)
	}
	if ph := os.Getenv(phaseEnv); ph != "" {
		measure(t, ph)
		return
	}
	if !netnstest.InNetns(t, nil, "nft", "iptables-nft-restore", "iptables-nft-save", "iptables-nft") {
		return
	}
	services := benchServices(t)
	per := probetest.BenchEndpoints
	t.Logf("ruleset: %d Services, %d endpoints; %s", services, services*per, versions())

	var rows []result
	var agentRows []agentRow
	modes := strings.Split(cmp.Or(os.Getenv(modesEnv), "nftables,iptables"), ",")
	if slices.Contains(modes, "nftables") {
		r, a := nftablesMode(t, services, per)
		rows, agentRows = append(rows, r...), append(agentRows, a...)
	}
	if slices.Contains(modes, "iptables") {
		r, a := iptablesMode(t, services, per)
		rows, agentRows = append(rows, r...), append(agentRows, a...)
	}

	// Every read of a mode gives the same verdicts.
	for _, r := range rows {
		for _, o := range rows {
			if r.Mode == o.Mode && r.Draining == o.Draining && !mapsEqual(r.Verdicts, o.Verdicts) {
				t.Errorf("%s %d draining: %s and %s reads disagree:\n%v\n%v", r.Mode, r.Draining, r.Read, o.Read, r.Verdicts, o.Verdicts)
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| mode | read | draining IPs | first check wall / CPU | then per check: wall (median) / CPU (mean), checks | commands per check | peak RSS: process / largest command |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %d | %s / %s | %s / %s, %d | %d | %s / %s |\n", r.Mode, r.Read, r.Draining,
			ms(r.FirstWall), ms(r.FirstCPU), ms(r.Wall), ms(r.CPU), r.Checks, r.Reads, mb(r.RSS), mb(r.CmdRSS))
	}
	if len(agentRows) > 0 {
		fmt.Fprintf(&b, "\n| lastcall-node | read | draining IPs | wall per check (median), checks | CPU per check, with its commands | agent peak RSS (VmHWM) / RSS after |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, a := range agentRows {
			fmt.Fprintf(&b, "| %s | %s | %d | %s, %d | %s | %s / %s |\n", a.mode, a.read, a.draining, ms(a.wall), a.checks, ms(a.cpu), mb(a.hwm), mb(a.rss))
		}
	}
	t.Log(b.String())
}

// nftablesMode loads the nftables ruleset, measures its reads and removes it.
func nftablesMode(t *testing.T, services, per int) ([]result, []agentRow) {
	listing := probetest.NFTablesJSON(services, per)
	start := time.Now()
	netnstest.LoadNFT(t, listing, false)
	t.Logf("nftables: loaded %.1f MB of nft JSON with nft -j -f in %v", float64(len(listing))/1e6, time.Since(start).Round(time.Millisecond))
	defer netnstest.Must(t, nil, "nft", "delete", "table", "ip", "kube-proxy")
	var rows []result
	for _, read := range []string{"full", "netlink"} {
		for _, n := range drainingCounts {
			rows = append(rows, phase(t, "nftables", read, n))
		}
	}
	// nft lists one chain in about as long as the whole table: 100 IPs in 100 Services would be
	// 200 such reads per check.
	rows = append(rows, phase(t, "nftables", "nft", 1))
	return rows, agentChecks(t, "nftables", services, per)
}

// iptablesMode loads the iptables-nft ruleset and measures its reads; the namespace goes with
// the test.
func iptablesMode(t *testing.T, services, per int) ([]result, []agentRow) {
	save := probetest.IPTablesSave(services, per)
	start := time.Now()
	netnstest.Must(t, save, "iptables-nft-restore")
	t.Logf("iptables: loaded %.1f MB with iptables-nft-restore in %v", float64(len(save))/1e6, time.Since(start).Round(time.Millisecond))
	var rows []result
	for _, read := range []string{"full", "targeted"} {
		for _, n := range drainingCounts {
			rows = append(rows, phase(t, "iptables", read, n))
		}
	}
	return rows, agentChecks(t, "iptables", services, per)
}

func benchServices(t *testing.T) int {
	s := os.Getenv(servicesEnv)
	if s == "" {
		return probetest.BenchServices
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 100 {
		t.Fatalf("%s=%q: want a number of Services, at least 100", servicesEnv, s)
	}
	return n
}

// phase runs one measurement in a fresh run of the test binary, in this namespace.
func phase(t *testing.T, mode, read string, n int) result {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDumpCommands$", "-test.v", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s/%s/%d", phaseEnv, mode, read, n))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s %d: %v\n%s", mode, read, n, err, out)
	}
	for line := range bytes.Lines(out) {
		if _, js, ok := bytes.Cut(line, []byte("DUMPBENCH ")); ok {
			var r result
			if err := json.Unmarshal(js, &r); err != nil {
				t.Fatal(err)
			}
			t.Logf("%s %s, %d draining: first %v, then %v wall / %v CPU (%d checks, %d reads), RSS %d KiB, command %d KiB",
				mode, read, n, r.FirstWall, r.Wall, r.CPU, r.Checks, r.Reads, r.RSS, r.CmdRSS)
			return r
		}
	}
	t.Fatalf("%s %s %d: no result\n%s", mode, read, n, out)
	return result{}
}

// measure is one phase: mode/read/draining.
func measure(t *testing.T, ph string) {
	parts := strings.Split(ph, "/")
	n, err := strconv.Atoi(parts[len(parts)-1])
	if len(parts) != 3 || err != nil {
		t.Fatalf("%s=%q: want mode/read/draining", phaseEnv, ph)
	}
	mode, read := parts[0], parts[1]
	services := benchServices(t)
	targets := probetest.BenchTargets(services, probetest.BenchEndpoints, n)
	checks := 20
	var probe dataplane.TargetProbe
	switch mode + "/" + read {
	case "nftables/full":
		probe, checks = nftables.NewTargeted(nftables.Lister{}, nftables.Netlink{}, 0), 3
	case "nftables/netlink":
		probe = nftables.NewTargeted(nftables.Lister{}, nftables.Netlink{}, 0)
	case "nftables/nft":
		probe, checks = nftables.NewTargeted(nftables.Lister{}, nftables.Lister{}, 0), 2
	case "iptables/full":
		probe, checks = iptables.NewTargeted(iptables.NewSaver(), 0), 1
	case "iptables/targeted":
		probe = iptables.NewTargeted(iptables.NewSaver(), 0)
	default:
		t.Fatalf("unknown phase %q", ph)
	}
	if read == "full" {
		for i := range targets {
			targets[i].Ports = nil
		}
	}
	ctx := context.Background()
	check := func() (dataplane.Result, time.Duration, time.Duration) {
		cpu0, start := cpuTime(), time.Now()
		res, err := probe.CheckTargets(ctx, targets)
		wall, cpu := time.Since(start), cpuTime()-cpu0
		if err != nil {
			t.Fatal(err)
		}
		if res.Targeted != (read != "full") {
			t.Fatalf("%s: Targeted %v (%s)", ph, res.Targeted, res.FullReason)
		}
		return res, wall, cpu
	}
	r := result{Mode: mode, Read: read, Draining: n, Checks: checks}
	var res dataplane.Result
	res, r.FirstWall, r.FirstCPU = check()
	var walls []time.Duration
	for range checks {
		var wall, cpu time.Duration
		res, wall, cpu = check()
		walls = append(walls, wall)
		r.CPU += cpu
	}
	slices.Sort(walls)
	r.Wall, r.CPU = walls[len(walls)/2], r.CPU/time.Duration(checks)
	r.Reads, r.Why = res.Reads, res.FullReason
	r.Verdicts = map[string]string{}
	for ip, v := range res.Verdicts {
		r.Verdicts[ip.String()] = probetest.Summary(v)
	}
	if got := res.Verdicts[targets[0].IP].State; got != dataplane.Routed {
		t.Fatalf("%s: %s is %s, want Routed", ph, targets[0].IP, got)
	}
	r.RSS = statusKiB(t, "/proc/self/status", "VmHWM")
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err == nil {
		r.CmdRSS = ru.Maxrss
	}
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("DUMPBENCH %s\n", js)
}

// agentRow is the lastcall-node binary's cost for checks of one read.
type agentRow struct {
	mode, read       string
	draining, checks int
	wall, cpu        time.Duration
	hwm, rss         int64
}

// agentChecks runs the lastcall-node binary once per read (targeted, full) and asks it for
// checks of 1 and of 100 draining IPs through its API.
func agentChecks(t *testing.T, mode string, services, per int) []agentRow {
	t.Helper()
	bin := os.Getenv(agentEnv)
	if bin == "" {
		t.Logf("%s unset: the lastcall-node binary's RSS is not measured", agentEnv)
		return nil
	}
	var rows []agentRow
	for _, read := range []string{"targeted", "full"} {
		checks := 5
		if read == "full" {
			checks = 1
		}
		rows = append(rows, agentRun(t, bin, mode, read, checks, services, per)...)
	}
	return rows
}

func agentRun(t *testing.T, bin, mode, read string, checks, services, per int) []agentRow {
	t.Helper()
	const listen = "127.0.0.1:9902" // the namespace is this test's own
	var stderr bytes.Buffer
	// No health pings during the checks. The agent pauses between reads at least as long as the
	// last took (and --min-gap): the checks are spaced so that none waits for that pause.
	cmd := exec.Command(bin, "--mode="+mode, "--kube-proxy-metrics=", "--listen="+listen, "--read-timeout=10m",
		"--health-interval=1h", "--min-gap=1ms", "--log-level=warn")
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	url := "http://" + listen
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := http.Get(url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lastcall-node not healthy: %v\n%s", err, stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	c := &agent.Client{URL: url, HTTP: &http.Client{Timeout: 15 * time.Minute}}
	ask := func(n int) time.Duration {
		var ips []agent.TargetJSON
		for _, tg := range probetest.BenchTargets(services, per, n) {
			tj := agent.TargetJSON{IP: tg.IP.String()}
			if read != "full" {
				for _, sp := range tg.Ports {
					svc, port, _ := strings.Cut(sp.Name, ":")
					tj.Ports = append(tj.Ports, agent.PortJSON{Service: svc, Name: port, Protocol: sp.Protocol, Port: int(sp.Port)})
				}
			}
			ips = append(ips, tj)
		}
		start := time.Now()
		ans, err := c.Check(context.Background(), agent.CheckRequest{IPs: ips})
		if err != nil {
			t.Fatalf("lastcall-node check: %v\n%s", err, stderr.String())
		}
		if want := map[bool]string{true: "full", false: "targeted"}[read == "full"]; ans.Read != want {
			t.Fatalf("lastcall-node read %q (%s), want %s", ans.Read, ans.FullReason, want)
		}
		wall := time.Since(start)
		time.Sleep(wall)
		return wall
	}
	if read != "full" {
		ask(1) // confirms the chain names
	}
	var rows []agentRow
	for _, n := range drainingCounts {
		cpu0 := procCPU(t, cmd.Process.Pid)
		var walls []time.Duration
		for range checks {
			walls = append(walls, ask(n))
		}
		cpu := procCPU(t, cmd.Process.Pid) - cpu0
		slices.Sort(walls)
		rows = append(rows, agentRow{mode: mode, read: read, draining: n, checks: checks, wall: walls[len(walls)/2], cpu: cpu / time.Duration(checks)})
	}
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	hwm, rss := statusKiB(t, status, "VmHWM"), statusKiB(t, status, "VmRSS")
	for i := range rows {
		rows[i].hwm, rows[i].rss = hwm, rss
		t.Logf("lastcall-node %s %s, %d draining: %d checks, %v wall, %v CPU each; VmHWM %d KiB, VmRSS %d KiB", mode, read, rows[i].draining, checks, rows[i].wall, rows[i].cpu, hwm, rss)
	}
	return rows
}

// procCPU is a process's CPU time with its waited-for children's (/proc/PID/stat utime, stime,
// cutime, cstime).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := bytes.Cut(b, []byte(") ")) // after the command name, which may hold spaces
	f := strings.Fields(string(rest))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // fields 14-17, counted from field 3
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func statusKiB(t *testing.T, file, field string) int64 {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s: no %s", file, field)
	return 0
}

func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	return time.Duration(self.Utime.Nano() + self.Stime.Nano() + children.Utime.Nano() + children.Stime.Nano())
}

func versions() string {
	var out []string
	for _, c := range [][]string{{"uname", "-r"}, {"nft", "--version"}, {"iptables-nft", "--version"}} {
		b, err := exec.Command(c[0], c[1:]...).Output()
		if err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return "Linux " + strings.Join(out, ", ")
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.0f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.1f ms", float64(d)/1e6)
}

func mb(kib int64) string {
	if kib == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MB", float64(kib)*1024/1e6)
}
