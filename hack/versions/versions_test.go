package versions_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/lastcall-dev/lastcall/hack/versions"
)

func load(t *testing.T) (string, map[string]string) {
	t.Helper()
	root, pins, err := versions.Load(".")
	if err != nil {
		t.Fatal(err)
	}
	return root, pins
}

// repoFiles lists what a commit of the working tree would hold (tracked, and untracked but not
// ignored), relative to root.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v (this test needs a git checkout)", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, f)); err == nil { // deleted but not yet staged
			files = append(files, f)
		}
	}
	sort.Strings(files)
	return files
}

func isDockerfile(f string) bool { return strings.HasPrefix(path.Base(f), "Dockerfile") }

func TestParse(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]string
		wantErr  string
	}{
		{name: "settings, comments, blank lines", in: "# c\n\nA_1=v1.2.3\nIMG=golang:1.99\nREF=k/n:v1@sha256:ab\n",
			want: map[string]string{"A_1": "v1.2.3", "IMG": "golang:1.99", "REF": "k/n:v1@sha256:ab"}},
		{name: "space around =", in: "A = v1\n", wantErr: "line 1"},
		{name: "quoted", in: "A=\"v1\"\n", wantErr: "line 1"},
		{name: "expansion", in: "# x\nA=$B\n", wantErr: "line 2"},
		{name: "trailing comment", in: "A=v1 # pinned\n", wantErr: "line 1"},
		{name: "lower-case key", in: "a=v1\n", wantErr: "KEY=value"},
		{name: "export", in: "export A=v1\n", wantErr: "line 1"},
		{name: "empty value", in: "A=\n", wantErr: "line 1"},
		{name: "set twice", in: "A=v1\nA=v2\n", wantErr: "A is set twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := versions.Parse(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// The file must mean the same to bash `source`, make `include` and Parse.
func TestShellAndMakeReadTheSame(t *testing.T) {
	root, pins := load(t)
	file := filepath.Join(root, versions.File)
	keys := make([]string, 0, len(pins))
	for k := range pins {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var want strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&want, "%s=%s\n", k, pins[k])
	}

	out, err := exec.Command("bash", append([]string{"-c",
		`set -eu; source "$1"; shift; for k; do printf '%s=%s\n' "$k" "${!k}"; done`, "_", file}, keys...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("bash source %s: %v\n%s", versions.File, err, out)
	}
	if string(out) != want.String() {
		t.Errorf("bash reads\n%s\nGo reads\n%s", out, want.String())
	}

	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make on PATH")
	}
	mk := filepath.Join(t.TempDir(), "Makefile")
	src := "include " + file + "\n$(foreach k," + strings.Join(keys, " ") + ",$(info $(k)=$($(k))))\nall: ;@:\n"
	if err := os.WriteFile(mk, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "-s", "-f", mk)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no environment value may shadow the file's
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make include %s: %v\n%s", versions.File, err, out)
	}
	if string(out) != want.String() {
		t.Errorf("make reads\n%s\nGo reads\n%s", out, want.String())
	}
}

// A pin nothing reads is a stale pin.
func TestEveryPinIsRead(t *testing.T) {
	root, pins := load(t)
	var corpus bytes.Buffer
	for _, f := range repoFiles(t, root) {
		if f == versions.File || strings.HasPrefix(f, "hack/versions/") || strings.HasSuffix(f, ".md") {
			continue
		}
		if strings.HasSuffix(f, ".sh") || f == "Makefile" || strings.HasSuffix(f, ".go") || isDockerfile(f) {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			corpus.Write(b)
		}
	}
	for k := range pins {
		if !regexp.MustCompile(`\b` + k + `\b`).Match(corpus.Bytes()) {
			t.Errorf("%s in %s: no script, Makefile, Dockerfile or Go file reads it; use it or remove it", k, versions.File)
		}
	}
}

// notScanned are files allowed to name a pinned version: prose (READMEs, docs/ with measurements
// of named versions), Go's own module requirements, and files derived from other projects
// whose headers say which version they follow. Go comments may cite the upstream version code
// follows for the same reason; Go code may not.
func notScanned(f string) bool {
	return f == versions.File || strings.HasSuffix(f, ".md") || strings.HasPrefix(f, "docs/") ||
		path.Base(f) == "go.mod" || path.Base(f) == "go.sum" ||
		strings.HasPrefix(f, "hack/node-image/files/")
}

// Every script, Dockerfile, Makefile, manifest and Go file reads a version from
// hack/versions.env instead of repeating it, so a bump is one line.
func TestNoPinIsRepeated(t *testing.T) {
	root, pins := load(t)
	for _, f := range repoFiles(t, root) {
		if notScanned(f) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.IndexByte(b, 0) >= 0 {
			continue // binary
		}
		for n, text := range strings.Split(string(b), "\n") {
			if isDockerfile(f) && strings.HasPrefix(strings.TrimSpace(text), "ARG ") {
				continue // ARG defaults cannot read a file: TestDockerfileDefaults checks them
			}
			if strings.HasSuffix(f, ".go") && strings.HasPrefix(strings.TrimSpace(text), "//") {
				continue
			}
			for k, v := range pins {
				if strings.Contains(text, v) {
					t.Errorf("%s:%d repeats %s=%s: read it from %s instead (scripts: source hack/lib.sh and use $%s; Makefile: hack/tool.sh; Go: package hack/versions)",
						f, n+1, k, v, versions.File, k)
				}
			}
		}
	}
}

// Dockerfile ARG defaults cannot read a file, so they must equal the pins: a plain
// `docker build` builds from what hack/images.sh would pass.
func TestDockerfileDefaults(t *testing.T) {
	root, pins := load(t)
	values := map[string]string{}
	for k, v := range pins {
		values[v] = k
	}
	arg := regexp.MustCompile(`^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)`)
	from := regexp.MustCompile(`^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?`)
	goImages := 0
	for _, f := range repoFiles(t, root) {
		if !isDockerfile(f) {
			continue
		}
		file, err := os.Open(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		stages := map[string]bool{}
		sc := bufio.NewScanner(file)
		for n := 1; sc.Scan(); n++ {
			text := strings.TrimSpace(sc.Text())
			if m := arg.FindStringSubmatch(text); m != nil {
				name, def := m[1], m[2]
				switch {
				case name == "GO_IMAGE":
					goImages++
					if def != pins["GOLANG_IMAGE"] {
						t.Errorf("%s:%d: ARG GO_IMAGE=%s, but %s has GOLANG_IMAGE=%s: make the default that", f, n, def, versions.File, pins["GOLANG_IMAGE"])
					}
				case name == "BASE_IMAGE":
					if def != pins["DISTROLESS_IMAGE"] && def != "scratch" {
						t.Errorf("%s:%d: ARG BASE_IMAGE=%s, want scratch or DISTROLESS_IMAGE=%s (%s)", f, n, def, pins["DISTROLESS_IMAGE"], versions.File)
					}
				case strings.ContainsAny(def, ":@") && values[def] == "":
					t.Errorf("%s:%d: ARG %s=%s names an image that %s does not pin: add it there", f, n, name, def, versions.File)
				}
			}
			if m := from.FindStringSubmatch(text); m != nil {
				img := m[1]
				if !strings.HasPrefix(img, "$") && img != "scratch" && !stages[img] && values[img] == "" {
					t.Errorf("%s:%d: FROM %s: a literal image %s does not pin; use an ARG whose default is a pin", f, n, img, versions.File)
				}
				if m[2] != "" {
					stages[m[2]] = true
				}
			}
		}
		file.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	if goImages == 0 {
		t.Fatal("no Dockerfile declares ARG GO_IMAGE: has the parsing broken?")
	}
}

// minor returns the minor version of a Go version such as 1.26, 1.26.7 or 1.26rc1.
func minor(v string) (int, error) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 || parts[0] != "1" {
		return 0, fmt.Errorf("not a Go 1.x version: %q", v)
	}
	digits := strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	return strconv.Atoi(digits)
}

// GOLANG_IMAGE builds the images, so its Go must meet every module's go directive.
func TestGoImageMeetsEveryModule(t *testing.T) {
	root, pins := load(t)
	tag := pins["GOLANG_IMAGE"][strings.LastIndex(pins["GOLANG_IMAGE"], ":")+1:]
	tag, _, _ = strings.Cut(tag, "-") // a tag such as 1.25-trixie
	have, err := minor(tag)
	if err != nil {
		t.Fatalf("GOLANG_IMAGE=%s: %v", pins["GOLANG_IMAGE"], err)
	}
	directive := regexp.MustCompile(`(?m)^go\s+(\S+)`)
	for _, f := range repoFiles(t, root) {
		if path.Base(f) != "go.mod" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		m := directive.FindSubmatch(b)
		if m == nil {
			continue
		}
		need, err := minor(string(m[1]))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if need > have {
			t.Errorf("%s needs go %s, but GOLANG_IMAGE=%s in %s is Go 1.%d: bump the image", f, m[1], pins["GOLANG_IMAGE"], versions.File, have)
		}
	}
}

// make chart-lint (the helm CLI) and the chart tests (Helm's Go SDK) should judge the chart alike.
func TestHelmCLIMatchesSDK(t *testing.T) {
	root, pins := load(t)
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?helm\.sh/helm/v3\s+(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Skip("go.mod does not require helm.sh/helm/v3")
	}
	if got := string(m[1]); got != pins["HELM_VERSION"] {
		t.Errorf("go.mod requires helm.sh/helm/v3 %s but %s has HELM_VERSION=%s: set both to the same version", got, versions.File, pins["HELM_VERSION"])
	}
}

func TestLoadFindsTheFileFromBelow(t *testing.T) {
	root, _ := load(t)
	for _, dir := range []string{root, filepath.Join(root, "hack", "versions")} {
		got, pins, err := versions.Load(dir)
		if err != nil || got != root || !slices.Contains(keys(pins), "KUBE_VERSION") {
			t.Errorf("Load(%s) = %s, %d pins, %v; want %s", dir, got, len(pins), err, root)
		}
	}
	if _, _, err := versions.Load(t.TempDir()); err == nil || !strings.Contains(err.Error(), versions.File) {
		t.Errorf("Load outside the repository: err = %v, want one naming %s", err, versions.File)
	}
}

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
