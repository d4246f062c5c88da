package iptables

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/probetest"
)

// catPath and awkPath are found before the tests replace PATH.
var (
	catPath, _ = exec.LookPath("cat")
	awkPath, _ = exec.LookPath("awk")
)

// fakeCommands puts scripts named like the iptables commands on PATH, as fakeCommandsIn does,
// and returns their folder.
func fakeCommands(t *testing.T, fixtures map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	fakeCommandsIn(t, dir, fixtures)
	t.Setenv("PATH", dir)
	return dir
}

// fakeCommandsIn writes, for each command name → fixture, a script into dir: a -save command
// prints the fixture; a list command (iptables-nft, …) prints one chain of it as `-t nat -S
// CHAIN` would, fails as iptables-nft 1.8.9 does for a chain that does not exist, and answers
// -V with the backend its name says.
func fakeCommandsIn(t *testing.T, dir string, fixtures map[string]string) {
	t.Helper()
	for name, fixture := range fixtures {
		abs, err := filepath.Abs(filepath.Join("testdata", fixture))
		if err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\n[ \"$1 $2\" = \"-t nat\" ] || exit 2\nexec " + catPath + " '" + abs + "'\n"
		if !strings.HasSuffix(name, "-save") {
			backend := "nf_tables"
			if strings.Contains(name, "legacy") {
				backend = "legacy"
			}
			script = "#!/bin/sh\n" +
				"[ \"$1\" = -V ] && { echo '" + name + " v1.8.9 (" + backend + ")'; exit 0; }\n" +
				"[ \"$1 $2 $3\" = \"-t nat -S\" ] || exit 2\n" +
				"exec " + awkPath + " -v c=\"$4\" '" + listChainAwk + "' '" + abs + "'\n"
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// listChainAwk prints one chain of iptables-save output as `iptables -S CHAIN` does.
const listChainAwk = `$0 ~ "^:" c " " { found = 1; print "-N " c }
$1 == "-A" && $2 == c { print }
END { if (!found) { print "iptables v1.8.9 (nf_tables): chain ` + "`" + `" c "\x27 in table ` + "`" + `nat\x27 is incompatible, use \x27nft\x27 tool." > "/dev/stderr"; exit 1 } }`

// backendFakes are the four commands of both backends, legacy's and nft's rules from fixtures.
func backendFakes(prefix, nft, legacy string) map[string]string {
	m := map[string]string{}
	if nft != "" {
		m[prefix+"-nft-save"], m[prefix+"-nft"] = nft, nft
	}
	if legacy != "" {
		m[prefix+"-legacy-save"], m[prefix+"-legacy"] = legacy, legacy
	}
	return m
}

// procNet writes a /proc/net with the given legacy IPv4 and IPv6 table names.
func procNet(t *testing.T, v4, v6 string) string {
	t.Helper()
	dir := t.TempDir()
	for name, tables := range map[string]string{"ip_tables_names": v4, "ip6_tables_names": v6} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tables), 0o444); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestSaverPicksBackendWithKubeProxyRules(t *testing.T) {
	tests := []struct {
		name     string
		commands map[string]string
		legacy   string // legacy tables the kernel lists
		want     backend
		wantErr  string
	}{
		{"legacy holds the rules", backendFakes("iptables", "none.txt", "ready.txt"), "nat\nfilter\n",
			backend{"iptables-legacy-save", "iptables-legacy", false}, ""},
		{"nft holds the rules", backendFakes("iptables", "ready.txt", "none.txt"), "nat\n",
			backend{"iptables-nft-save", "iptables-nft", true}, ""},
		{"both: the one with more KUBE-SERVICES rules", backendFakes("iptables", "ipv6.txt", "ready.txt"), "nat\n",
			backend{"iptables-legacy-save", "iptables-legacy", false}, ""},
		{"both, as many rules: nft", backendFakes("iptables", "terminating.txt", "ready.txt"), "nat\n",
			backend{"iptables-nft-save", "iptables-nft", true}, ""},
		{"no legacy nat table in the kernel: legacy not read", backendFakes("iptables", "ipv6.txt", "ready.txt"), "filter\n",
			backend{"iptables-nft-save", "iptables-nft", true}, ""},
		{"iptables-save without iptables", map[string]string{"iptables-save": "ready.txt", "iptables-nft": "ready.txt"}, "",
			backend{}, "find iptables-save and iptables in PATH"},
		{"neither", backendFakes("iptables", "none.txt", "none.txt"), "nat\n",
			backend{}, "kube-proxy rules not found: no KUBE-SERVICES chain in the nat table of iptables-nft-save or iptables-legacy-save"},
		{"no iptables at all", map[string]string{}, "", backend{}, "find iptables-save and iptables in PATH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeCommands(t, tt.commands)
			s := NewSaver()
			s.procNet = procNet(t, tt.legacy, "")
			got, err := s.backend(context.Background(), dataplane.IPv4)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %+v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestSaverPlainCommands(t *testing.T) {
	dir := t.TempDir()
	fakeCommandsIn(t, dir, map[string]string{"iptables-save": "ready.txt"})
	// A plain iptables that says which backend it is.
	script := "#!/bin/sh\necho 'iptables v1.8.9 (nf_tables)'\n"
	if err := os.WriteFile(filepath.Join(dir, "iptables"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir)
	s := NewSaver()
	one, err := s.ReadsOneChain(context.Background(), dataplane.IPv4)
	if err != nil || !one {
		t.Errorf("ReadsOneChain: %v, %v; want true", one, err)
	}
	if name, _ := s.Backend(context.Background(), dataplane.IPv4); name != "iptables-save" {
		t.Errorf("Backend %s", name)
	}
}

func TestSaverListChain(t *testing.T) {
	fakeCommands(t, backendFakes("iptables", "ready.txt", ""))
	s := NewSaver()
	out, found, err := s.ListChain(context.Background(), dataplane.IPv4, "KUBE-SVC-Y4SXDMNBYDXBXCMC")
	if err != nil || !found {
		t.Fatalf("got %v, %v", found, err)
	}
	want := "-N KUBE-SVC-Y4SXDMNBYDXBXCMC\n" +
		`-A KUBE-SVC-Y4SXDMNBYDXBXCMC ! -s 10.244.0.0/16 -d 10.96.20.1/32 -p tcp -m comment --comment "demo/solo:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ` + "\n" +
		`-A KUBE-SVC-Y4SXDMNBYDXBXCMC -m comment --comment "demo/solo:http -> 10.244.1.5:8080" -j KUBE-SEP-WFEC3JTZ532M6WVF` + "\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	if _, found, err := s.ListChain(context.Background(), dataplane.IPv4, "KUBE-SVC-NOSUCHCHAIN0000"); found || err != nil {
		t.Errorf("missing chain: found %v, %v", found, err)
	}
}

func TestSaverDumpAndForget(t *testing.T) {
	dir := fakeCommands(t, backendFakes("ip6tables", "ipv6.txt", "none.txt"))
	s := NewSaver()
	s.procNet = procNet(t, "", "nat\n")
	probe := New(s)
	got, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"}))
	if err != nil {
		t.Fatal(err)
	}
	if v := got[probetest.Addrs(t, []string{"fd00:10:244:1::3"})[0]]; v.State != dataplane.Routed {
		t.Fatalf("got %v, want Routed", v)
	}

	// kube-proxy's rules move to the other backend: the first check fails, and forgets the choice.
	fakeCommandsIn(t, dir, backendFakes("ip6tables", "none.txt", "ipv6.txt"))
	if _, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"})); !errors.Is(err, dataplane.ErrRulesNotFound) {
		t.Fatalf("got %v, want ErrRulesNotFound", err)
	}
	if _, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"})); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
	if name, _ := s.Backend(context.Background(), dataplane.IPv6); name != "ip6tables-legacy-save" {
		t.Errorf("chose %s, want ip6tables-legacy-save", name)
	}
}

func TestSaverCommandFails(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)' >&2\nexit 1\n"
	for _, name := range []string{"iptables-save", "iptables"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	out, err := NewSaver().Dump(context.Background(), dataplane.IPv4)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, out)
	err = out.Close()
	if err == nil || !strings.Contains(err.Error(), "iptables-save -t nat: exit status 1: iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied") {
		t.Errorf("got %v", err)
	}
}

func TestSaverPing(t *testing.T) {
	for _, tt := range []struct {
		name     string
		commands map[string]string
		wantErr  string
	}{
		{"nft: KUBE-SERVICES alone", backendFakes("iptables", "ready.txt", ""), ""},
		{"legacy: the whole table", backendFakes("iptables", "", "ready.txt"), ""},
		{"no kube-proxy rules", backendFakes("iptables", "none.txt", ""), "kube-proxy rules not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fakeCommands(t, tt.commands)
			s := NewSaver()
			s.procNet = procNet(t, "nat\n", "")
			err := s.Ping(context.Background(), dataplane.IPv4)
			if (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr))) {
				t.Errorf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}
