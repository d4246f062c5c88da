package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// noSysResource is the bounding set seen on the VMs this wrapper exists for: 0..40 but 24.
var noSysResource = host{
	bounding:  0x000001fffeffffff,
	hardLimit: func(int) (uint64, bool) { return 1048576, true },
}

var everything = host{bounding: 0x000001ffffffffff, hardLimit: noSysResource.hardLimit}

const config = `{"ociVersion":"1.0.2","process":{"args":["/pause"],"oomScoreAdj":-998,
"capabilities":{"bounding":["CAP_CHOWN","CAP_SYS_RESOURCE","CAP_NET_ADMIN"],
"effective":["CAP_SYS_RESOURCE"],"permitted":["CAP_CHOWN","CAP_SYS_RESOURCE"]},
"rlimits":[{"type":"RLIMIT_NOFILE","hard":4294967296,"soft":1024},{"type":"RLIMIT_NPROC","hard":100,"soft":100}]},
"root":{"path":"rootfs"}}`

func TestRewriteDropsWhatTheHostWithholds(t *testing.T) {
	out, changed, err := rewrite([]byte(config), false, noSysResource)
	if err != nil || !changed {
		t.Fatalf("rewrite: changed=%v err=%v", changed, err)
	}
	var spec struct {
		Process struct {
			OOMScoreAdj  *int                `json:"oomScoreAdj"`
			Capabilities map[string][]string `json:"capabilities"`
			Rlimits      []struct {
				Type       string
				Hard, Soft uint64
			} `json:"rlimits"`
		} `json:"process"`
		Root map[string]string `json:"root"`
	}
	if err := json.Unmarshal(out, &spec); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"bounding":  {"CAP_CHOWN", "CAP_NET_ADMIN"},
		"effective": {},
		"permitted": {"CAP_CHOWN"},
	}
	if !reflect.DeepEqual(spec.Process.Capabilities, want) {
		t.Errorf("capabilities = %v, want %v", spec.Process.Capabilities, want)
	}
	if spec.Process.OOMScoreAdj != nil {
		t.Errorf("oomScoreAdj kept: %d", *spec.Process.OOMScoreAdj)
	}
	if l := spec.Process.Rlimits[0]; l.Hard != 1048576 || l.Soft != 1024 {
		t.Errorf("NOFILE = %+v, want hard lowered to 1048576, soft kept", l)
	}
	if l := spec.Process.Rlimits[1]; l.Hard != 100 {
		t.Errorf("NPROC changed: %+v", l)
	}
	if spec.Root["path"] != "rootfs" {
		t.Errorf("unrelated field lost: %v", spec.Root)
	}
}

func TestRewriteLeavesAGrantableSpecAlone(t *testing.T) {
	out, changed, err := rewrite([]byte(config), false, everything)
	if err != nil || changed || string(out) != config {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
}

func TestRewriteProcessFile(t *testing.T) {
	proc := `{"args":["sh"],"capabilities":{"bounding":["CAP_SYS_RESOURCE","CAP_KILL"]}}`
	out, changed, err := rewrite([]byte(proc), true, noSysResource)
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	if want := `{"args":["sh"],"capabilities":{"bounding":["CAP_KILL"]}}`; string(out) != want {
		t.Errorf("got %s, want %s", out, want)
	}
}

func TestSpecFiles(t *testing.T) {
	cases := []struct {
		args []string
		want []specFile
	}{
		{[]string{"--root", "/run/r", "--log", "l.json", "--systemd-cgroup", "create", "--bundle", "/b", "--pid-file", "p", "id"},
			[]specFile{{path: "/b/config.json"}}},
		{[]string{"run", "-b=/x", "id"}, []specFile{{path: "/x/config.json"}}},
		{[]string{"--root", "/r", "exec", "--process", "/tmp/p.json", "--detach", "id"},
			[]specFile{{path: "/tmp/p.json", process: true}}},
		{[]string{"--root", "/r", "delete", "-b", "id"}, nil},
		{[]string{"state", "id"}, nil},
	}
	for _, c := range cases {
		if got := specFiles(c.args); !reflect.DeepEqual(got, c.want) {
			t.Errorf("specFiles(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}

func TestRewriteFileKeepsMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rewriteFile(p, false, noSysResource); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v", st.Mode())
	}
}
