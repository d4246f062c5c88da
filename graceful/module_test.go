package graceful_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// serviceGo is the go line a service needs to import graceful (README: "Go 1.22 or later").
const serviceGo = "1.22"

// allowedModules are the only modules a service's graph may gain by importing graceful, besides
// graceful itself: no Consul, no k8s.io, no Helm, no controller-runtime. golang.org/x/net is a
// test-only requirement of graceful (HTTP/2 frame tests) and x/text comes with it.
var allowedModules = map[string]bool{"golang.org/x/net": true, "golang.org/x/text": true}

// A fresh module that imports only graceful, as a service does, keeps its go line and lists no
// module beyond allowedModules. It resolves graceful through a replace to this folder and
// reads the other modules through the module cache or proxy.
func TestServiceModuleGraph(t *testing.T) {
	graceful, err := os.Getwd() // go test runs in the package's folder
	if err != nil {
		t.Fatal(err)
	}
	const path = "github.com/lastcall-dev/lastcall/graceful"
	svc := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(svc, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/svc\n\ngo "+serviceGo+"\n\nrequire "+path+" v0.0.0-00010101000000-000000000000\n\nreplace "+path+" => "+graceful+"\n")
	write("main.go", "package main\n\nimport \""+path+"\"\n\nfunc main() { _ = graceful.Config{} }\n")
	sums, err := os.ReadFile(filepath.Join(graceful, "go.sum")) // no checksum lookups
	if err != nil {
		t.Fatal(err)
	}
	write("go.sum", string(sums))

	goCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = svc
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s in a module importing graceful: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	list := goCmd("list", "-m", "all")
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		mod := strings.Fields(line)[0]
		if mod != "example.com/svc" && mod != path && !allowedModules[mod] {
			t.Errorf("importing graceful adds module %s to a service's graph; graceful must stay free of heavy dependencies (go list -m all:\n%s)", mod, list)
		}
	}
	goCmd("build", "-o", os.DevNull, ".")
	// -mod=mod raises the go line when a requirement needs a newer Go.
	gomod, err := os.ReadFile(filepath.Join(svc, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(gomod), "\ngo "+serviceGo+"\n") {
		t.Errorf("a service at go %s cannot import graceful without raising its go line:\n%s", serviceGo, gomod)
	}
}
