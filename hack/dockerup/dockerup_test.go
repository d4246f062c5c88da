package dockerup

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// machine is what docker-up.sh's fact functions report.
type machine struct {
	engineUp, dockerd, jq, lacksCap, wrapperCurrent, runtimeConfigured, systemd, skipCheck bool
	defaultRuntime                                                                         string
	containers                                                                             int
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return ""
}

// decide sources docker-up.sh, replaces its facts by m's, and returns plan's steps and the block
// announce prints for them. Only the decisions run: a step that ran would fail the test.
func decide(t *testing.T, m machine) (steps []string, announcement string) {
	t.Helper()
	script, err := filepath.Abs("../docker-up.sh")
	if err != nil {
		t.Fatal(err)
	}
	const prog = `
source "$1"
engine_up() { [[ -n $M_ENGINE_UP ]]; }
have_dockerd() { [[ -n $M_DOCKERD ]]; }
have_jq() { [[ -n $M_JQ ]]; }
lacks_sys_resource() { [[ -n $M_LACKS_CAP ]]; }
wrapper_current() { [[ -n $M_WRAPPER_CURRENT ]]; }
runtime_configured() { [[ -n $M_RUNTIME_CONFIGURED ]]; }
systemd_runs_machine() { [[ -n $M_SYSTEMD ]]; }
docker_unit_exists() { [[ -n $M_SYSTEMD && -n $M_DOCKERD ]]; }
default_runtime() { echo "$M_DEFAULT_RUNTIME"; }
running_containers() { echo "$M_CONTAINERS"; }
run_step() { echo "run_step $1 ran" >&2; exit 9; }
mapfile -t steps < <(plan)
printf 'step %s\n' "${steps[@]}"
announce "will change" "${steps[@]}" 2>&1 | sed 's/^[0-9:]* \[hack\] /| /'
`
	cmd := exec.Command("bash", "-c", prog, "_", script)
	cmd.Env = append(os.Environ(),
		"M_ENGINE_UP="+flag(m.engineUp), "M_DOCKERD="+flag(m.dockerd), "M_JQ="+flag(m.jq),
		"M_LACKS_CAP="+flag(m.lacksCap), "M_WRAPPER_CURRENT="+flag(m.wrapperCurrent),
		"M_RUNTIME_CONFIGURED="+flag(m.runtimeConfigured), "M_SYSTEMD="+flag(m.systemd),
		"M_DEFAULT_RUNTIME="+m.defaultRuntime, "M_CONTAINERS="+strconv.Itoa(m.containers),
		"LASTCALL_DOCKER_SKIP_CHECK="+flag(m.skipCheck))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-up.sh decisions: %v\n%s", err, out)
	}
	for _, l := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		if s, ok := strings.CutPrefix(l, "step "); ok && s != "" {
			steps = append(steps, s)
		} else if a, ok := strings.CutPrefix(l, "| "); ok {
			announcement += a + "\n"
		}
	}
	return steps, announcement
}

func TestPlanAndAnnouncement(t *testing.T) {
	tests := []struct {
		name      string
		m         machine
		steps     []string
		says      []string // in the announcement
		doesntSay []string
	}{
		{
			name:  "fresh VM without CAP_SYS_RESOURCE or systemd",
			m:     machine{lacksCap: true},
			steps: []string{"install-jq", "build-wrapper", "configure-runtime", "install-docker", "start-dockerd", "check"},
			says: []string{
				"1. install jq with apt-get", "2. build the runc wrapper",
				`3. register that wrapper as Docker's default runtime "lastcall-runc" in /etc/docker/daemon.json`,
				"lacks CAP_SYS_RESOURCE", "unable to apply caps",
				"4. install Debian's docker.io with apt-get", "5. start dockerd in the background",
				"then check that a --privileged container starts",
			},
			doesntSay: []string{"restart"},
		},
		{
			name:      "fresh machine with every capability and systemd",
			m:         machine{systemd: true},
			steps:     []string{"install-docker", "start-dockerd"},
			says:      []string{"1. install Debian's docker.io with apt-get", "2. start dockerd with systemd"},
			doesntSay: []string{"daemon.json", "CAP_SYS_RESOURCE", "jq", "wrapper", "check"},
		},
		{
			name:  "engine running, every capability",
			m:     machine{engineUp: true, dockerd: true, defaultRuntime: "runc", containers: 4},
			steps: nil,
		},
		{
			name:      "engine running without the wrapper it needs",
			m:         machine{engineUp: true, dockerd: true, jq: true, lacksCap: true, defaultRuntime: "runc", containers: 3},
			steps:     []string{"build-wrapper", "configure-runtime", "restart-dockerd", "check"},
			says:      []string{"CAP_SYS_RESOURCE", `3. restart dockerd so that it uses "lastcall-runc" (it runs with "runc"); the 3 containers it runs now stop`},
			doesntSay: []string{"apt-get"},
		},
		{
			name:      "daemon.json has the runtime, the engine was not restarted",
			m:         machine{engineUp: true, dockerd: true, lacksCap: true, wrapperCurrent: true, runtimeConfigured: true, defaultRuntime: "runc"},
			steps:     []string{"restart-dockerd", "check"},
			says:      []string{`1. restart dockerd so that it uses "lastcall-runc"`},
			doesntSay: []string{"containers it runs now stop", "apt-get", "build"},
		},
		{
			name:  "set up already: only the check",
			m:     machine{engineUp: true, dockerd: true, lacksCap: true, wrapperCurrent: true, runtimeConfigured: true, defaultRuntime: "lastcall-runc"},
			steps: []string{"check"},
		},
		{
			name:  "set up already, check skipped",
			m:     machine{engineUp: true, dockerd: true, lacksCap: true, wrapperCurrent: true, runtimeConfigured: true, defaultRuntime: "lastcall-runc", skipCheck: true},
			steps: nil,
		},
		{
			name:      "wrapper source changed",
			m:         machine{engineUp: true, dockerd: true, lacksCap: true, runtimeConfigured: true, defaultRuntime: "lastcall-runc"},
			steps:     []string{"build-wrapper", "check"},
			doesntSay: []string{"restart", "daemon.json"},
		},
		{
			name:      "dockerd installed, stopped, no systemd",
			m:         machine{dockerd: true},
			steps:     []string{"start-dockerd"},
			says:      []string{"1. start dockerd in the background (setsid dockerd; log: /var/log/lastcall-dockerd.log)"},
			doesntSay: []string{"apt-get"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			steps, said := decide(t, tt.m)
			if !slices.Equal(steps, tt.steps) {
				t.Errorf("steps %q, want %q", steps, tt.steps)
			}
			if !strings.HasPrefix(said, "hack/docker-up.sh will change this machine") {
				t.Errorf("announcement does not open with what it is:\n%s", said)
			}
			for _, s := range tt.says {
				if !strings.Contains(said, s) {
					t.Errorf("announcement lacks %q:\n%s", s, said)
				}
			}
			for _, s := range tt.doesntSay {
				if strings.Contains(said, s) {
					t.Errorf("announcement mentions %q, a step that will not happen:\n%s", s, said)
				}
			}
		})
	}
}

// --dry-run on this machine: decides from the real facts, changes nothing, exits 0.
func TestDryRun(t *testing.T) {
	out, err := exec.Command("../docker-up.sh", "--dry-run").CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "join the docker group") {
			t.Skipf("this user may not use Docker: %s", out)
		}
		t.Fatalf("docker-up.sh --dry-run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "would change this machine") && !strings.Contains(string(out), "nothing to change") {
		t.Errorf("--dry-run printed neither a plan nor 'nothing to change':\n%s", out)
	}
	if strings.Contains(string(out), "will change") || strings.Contains(string(out), "building the runc wrapper") {
		t.Errorf("--dry-run acted:\n%s", out)
	}
}
