// Package netnstest runs a test again in a network namespace of its own, where it may load
// iptables or nftables rules without touching the host's, and loads them there.
package netnstest

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// netnsChild names, in the environment of a test run again in a network namespace, the test.
const netnsChild = "LASTCALL_NETNS_CHILD"

// InNetns reports whether the test runs in a network namespace of its own, where it may load
// rules. Outside one it runs the test again in a new namespace (CLONE_NEWNET, gone when the test
// process exits), reports how it went and returns false. It needs root and commands; without
// them the test is skipped, or fails when LASTCALL_REQUIRE_INTEGRATION=1. env is added to the
// environment of the run in the namespace.
func InNetns(t *testing.T, env []string, commands ...string) bool {
	t.Helper()
	if os.Getenv(netnsChild) == t.Name() {
		Must(t, nil, "ip", "link", "set", "lo", "up")
		return true
	}
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	for _, c := range append([]string{"ip"}, commands...) {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		if os.Getenv("LASTCALL_REQUIRE_INTEGRATION") == "1" {
			t.Fatalf("LASTCALL_REQUIRE_INTEGRATION=1 but this test needs %s", strings.Join(missing, ", "))
		}
		t.Skipf("needs %s (set LASTCALL_REQUIRE_INTEGRATION=1 to fail instead)", strings.Join(missing, ", "))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(append(os.Environ(), env...), netnsChild+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	// Streamed as it comes (go test shows it with -v or on failure): a long run shows progress.
	var out bytes.Buffer
	cmd.Stdout = io.MultiWriter(&out, os.Stdout)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil || !bytes.Contains(out.Bytes(), []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in a new network namespace: %v (its output is above)", err)
	}
	return false
}

// Must runs a command that must succeed, with stdin when it is not nil.
func Must(t testing.TB, stdin []byte, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// LoadNFT loads an `nft --json list` listing into the kernel with `nft -j -f`, replacing its
// table when replace is set. A listing names maps before the chains their verdicts go to, so
// the objects are added table, chains, sets and maps, then rules.
func LoadNFT(t testing.TB, listing []byte, replace bool) {
	t.Helper()
	batch, err := NFTBatch(listing, replace)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "load.json")
	if err := os.WriteFile(file, batch, 0o600); err != nil {
		t.Fatal(err)
	}
	Must(t, nil, "nft", "-j", "-f", file)
}

// NFTBatch turns an `nft --json list` listing into an `nft -j -f` batch that adds it, first
// deleting its tables when replace is set.
func NFTBatch(listing []byte, replace bool) ([]byte, error) {
	var l struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(listing, &l); err != nil {
		return nil, fmt.Errorf("nft listing: %w", err)
	}
	kind := func(o map[string]json.RawMessage) string {
		for k := range o {
			return k
		}
		return ""
	}
	rank := map[string]int{"table": 0, "chain": 1, "set": 2, "map": 2, "rule": 3}
	objects := slices.DeleteFunc(l.Nftables, func(o map[string]json.RawMessage) bool { return kind(o) == "metainfo" })
	slices.SortStableFunc(objects, func(x, y map[string]json.RawMessage) int { return cmp.Compare(rank[kind(x)], rank[kind(y)]) })
	var cmds []any
	for _, o := range objects {
		if replace && kind(o) == "table" {
			var tbl struct {
				Family string `json:"family"`
				Name   string `json:"name"`
			}
			if err := json.Unmarshal(o["table"], &tbl); err != nil {
				return nil, fmt.Errorf("nft listing table: %w", err)
			}
			cmds = append(cmds, map[string]any{"add": map[string]any{"table": tbl}}, map[string]any{"delete": map[string]any{"table": tbl}})
		}
	}
	for _, o := range objects {
		cmds = append(cmds, o)
	}
	return json.Marshal(map[string]any{"nftables": cmds})
}
