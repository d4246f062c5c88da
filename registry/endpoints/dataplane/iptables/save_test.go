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

// catPath is found before the tests replace PATH.
var catPath, _ = exec.LookPath("cat")

// fakeCommands puts scripts named like the iptables commands on PATH; each prints a fixture.
func fakeCommands(t *testing.T, fixtures map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	fakeCommandsIn(t, dir, fixtures)
	t.Setenv("PATH", dir)
	return dir
}

func fakeCommandsIn(t *testing.T, dir string, fixtures map[string]string) {
	t.Helper()
	for name, fixture := range fixtures {
		abs, err := filepath.Abs(filepath.Join("testdata", fixture))
		if err != nil {
			t.Fatal(err)
		}
		script := "#!/bin/sh\n[ \"$1 $2\" = \"-t nat\" ] || exit 2\nexec " + catPath + " '" + abs + "'\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSaverPicksBackendWithKubeProxyRules(t *testing.T) {
	tests := []struct {
		name     string
		commands map[string]string
		want     string // command chosen
		wantErr  string
	}{
		{"legacy holds the rules", map[string]string{"iptables-nft-save": "none.txt", "iptables-legacy-save": "ready.txt"}, "iptables-legacy-save", ""},
		{"nft holds the rules", map[string]string{"iptables-nft-save": "ready.txt", "iptables-legacy-save": "none.txt"}, "iptables-nft-save", ""},
		{"both: the one with more rules", map[string]string{"iptables-nft-save": "terminating.txt", "iptables-legacy-save": "ready.txt"}, "iptables-legacy-save", ""},
		{"only iptables-save", map[string]string{"iptables-save": "ready.txt"}, "iptables-save", ""},
		{"neither", map[string]string{"iptables-nft-save": "none.txt", "iptables-legacy-save": "none.txt"}, "", "kube-proxy rules not found: no KUBE-SERVICES chain in the nat table of iptables-nft-save or iptables-legacy-save"},
		{"no iptables at all", map[string]string{}, "", "find iptables-save"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeCommands(t, tt.commands)
			got, err := NewSaver().command(context.Background(), dataplane.IPv4)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("got %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSaverDumpAndForget(t *testing.T) {
	dir := fakeCommands(t, map[string]string{"ip6tables-nft-save": "ipv6.txt", "ip6tables-legacy-save": "none.txt"})
	s := NewSaver()
	probe := New(s)
	got, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"}))
	if err != nil {
		t.Fatal(err)
	}
	if v := got[probetest.Addrs(t, []string{"fd00:10:244:1::3"})[0]]; v.State != dataplane.Routed {
		t.Fatalf("got %v, want Routed", v)
	}

	// kube-proxy's rules move to the other backend: the first check fails, and forgets the choice.
	fakeCommandsIn(t, dir, map[string]string{"ip6tables-nft-save": "none.txt", "ip6tables-legacy-save": "ipv6.txt"})
	if _, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"})); !errors.Is(err, dataplane.ErrRulesNotFound) {
		t.Fatalf("got %v, want ErrRulesNotFound", err)
	}
	if _, err := probe.Check(context.Background(), probetest.Addrs(t, []string{"fd00:10:244:1::3"})); err != nil {
		t.Fatalf("after Forget: %v", err)
	}
	if name, _ := s.command(context.Background(), dataplane.IPv6); name != "ip6tables-legacy-save" {
		t.Errorf("chose %s, want ip6tables-legacy-save", name)
	}
}

func TestSaverCommandFails(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho 'iptables-save v1.8.9 (legacy): Cannot initialize: Permission denied (you must be root)' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "iptables-save"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
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
