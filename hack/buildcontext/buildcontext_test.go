package buildcontext

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// contexts says, for every Dockerfile in git, which folder its build context is made from and
// which of its COPY sources the build script writes into that context (not in git).
// A Dockerfile missing here fails the test: add it with its script's context.
var contexts = map[string]struct {
	dir       string   // the folder the context is a copy of ("" = repository root)
	generated []string // COPY sources the build script adds; a trailing "/" covers a folder
}{
	"cmd/lastcall-prestop/Dockerfile":        {},
	"cmd/lastcall-controller/Dockerfile":     {},
	"cmd/lastcall-node/Dockerfile":           {},
	"e2e/app/Dockerfile":                     {},
	"e2e/loadgen/Dockerfile":                 {},
	"e2e/smoke/testdata/smokeapp/Dockerfile": {},
	// hack/consul-image.sh: the consul binary beside the Dockerfile
	"e2e/consul/Dockerfile": {dir: "e2e/consul", generated: []string{"consul"}},
	// hack/node-image/build.sh: the Kubernetes binaries and runc wrapper it built, kind's
	// manifests from hack/kind, the version file
	"hack/node-image/Dockerfile":         {dir: "hack/node-image", generated: []string{"bin/", "manifests/", "version"}},
	"hack/node-image/Dockerfile.netbase": {dir: "hack/node-image"},
}

// gitFiles lists the repository's committed files (what a clone has), relative to its root.
func gitFiles(t *testing.T) (root string, files map[string]bool) {
	t.Helper()
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse: %v (this test needs a git checkout)", err)
	}
	root = strings.TrimSpace(string(out))
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	files = map[string]bool{}
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" {
			files[f] = true
		}
	}
	return root, files
}

// provides reports whether the committed files include p, or a file under p/ when p names a
// folder, or a match when p is a glob.
func provides(files map[string]bool, p string) bool {
	p = strings.TrimSuffix(p, "/")
	for f := range files {
		if f == p || strings.HasPrefix(f, p+"/") {
			return true
		}
		if ok, _ := path.Match(p, f); ok {
			return true
		}
	}
	return false
}

// copyInstr is one COPY or ADD of a Dockerfile (not a --from copy between stages).
type copyInstr struct {
	line int
	srcs []string
	dest string
}

func copies(t *testing.T, file string) []copyInstr {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []copyInstr
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (!strings.EqualFold(fields[0], "COPY") && !strings.EqualFold(fields[0], "ADD")) {
			continue
		}
		args := fields[1:]
		stage := false
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			stage = stage || strings.HasPrefix(args[0], "--from=")
			args = args[1:]
		}
		if stage || len(args) < 2 {
			continue
		}
		out = append(out, copyInstr{line: n, srcs: args[:len(args)-1], dest: args[len(args)-1]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func generated(list []string, src string) bool {
	src = path.Clean(src)
	for _, g := range list {
		if src == path.Clean(g) || (strings.HasSuffix(g, "/") && strings.HasPrefix(src+"/", g)) {
			return true
		}
	}
	return false
}

func TestEveryDockerfileContextIsCommitted(t *testing.T) {
	root, files := gitFiles(t)
	var dockerfiles []string
	for f := range files {
		if strings.HasPrefix(path.Base(f), "Dockerfile") {
			dockerfiles = append(dockerfiles, f)
		}
	}
	sort.Strings(dockerfiles)
	if len(dockerfiles) == 0 {
		t.Fatal("no Dockerfile in git")
	}
	for _, df := range dockerfiles {
		ctx, ok := contexts[df]
		if !ok {
			t.Errorf("%s: not in this test's contexts table: add it with the folder its build script uses as context", df)
			continue
		}
		for _, c := range copies(t, root+"/"+df) {
			for _, src := range c.srcs {
				if generated(ctx.generated, src) {
					continue
				}
				p := path.Join(ctx.dir, src)
				if p == "." || p == ctx.dir {
					continue // COPY . . takes whatever the context holds
				}
				if !provides(files, p) {
					t.Errorf("%s:%d: COPY source %s is not in git (%s): a fresh clone cannot build this image", df, c.line, src, p)
				}
			}
		}
	}
}

// ownPath matches the node image's own files: kind's folder and /usr/local (the Debian rootfs
// installs nothing there), as units, scripts and configs name them.
var ownPath = regexp.MustCompile(`(?:^|[\s"'=(])((?:/kind|/usr/local)/[A-Za-z0-9._/*-]*[A-Za-z0-9*])`)

// TestNodeImageRefersOnlyToCommittedFiles fails when the node image's Dockerfile, setup script,
// systemd units, kubelet drop-ins or containerd config name a file of the image's own that
// neither git (hack/node-image/files/...) nor the Dockerfile's COPY of a generated file provides.
func TestNodeImageRefersOnlyToCommittedFiles(t *testing.T) {
	root, files := gitFiles(t)
	const dir = "hack/node-image"
	// what the image has: committed files/ mapped to /, and COPY destinations
	have := map[string]bool{}
	dirs := map[string]bool{} // folders copied whole: anything under them is there
	for f := range files {
		if rest, ok := strings.CutPrefix(f, dir+"/files/"); ok {
			have["/"+rest] = true
		}
	}
	df := dir + "/Dockerfile"
	for _, c := range copies(t, root+"/"+df) {
		for _, src := range c.srcs {
			dest := c.dest
			if strings.HasSuffix(dest, "/") && !strings.HasSuffix(src, "/") {
				dest += path.Base(src)
			}
			have[strings.TrimSuffix(dest, "/")] = true
			if strings.HasSuffix(src, "/") && generated(contexts[df].generated, src) {
				dirs[strings.TrimSuffix(dest, "/")] = true
			}
			if strings.HasSuffix(src, "/") && provides(files, path.Join(dir, src)) {
				for f := range files {
					if rest, ok := strings.CutPrefix(f, path.Join(dir, src)+"/"); ok {
						have[path.Join(dest, rest)] = true
					}
				}
			}
		}
	}
	imageHas := func(p string) bool {
		for d := range dirs {
			if strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		for h := range have {
			if h == p || strings.HasPrefix(h, p+"/") {
				return true
			}
			if ok, _ := path.Match(p, h); ok {
				return true
			}
		}
		return false
	}

	var referrers []string
	for f := range files {
		switch {
		case f == df, f == dir+"/setup-node.sh", f == dir+"/files/etc/containerd/config.toml":
		case strings.HasPrefix(f, dir+"/files/etc/systemd/system/"):
		default:
			continue
		}
		referrers = append(referrers, f)
	}
	sort.Strings(referrers)
	checked := 0
	for _, f := range referrers {
		data, err := os.ReadFile(root + "/" + f)
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			for _, m := range ownPath.FindAllStringSubmatch(line, -1) {
				checked++
				if !imageHas(m[1]) {
					t.Errorf("%s:%d refers to %s, which the node image does not contain: commit it under %s/files%s", f, n+1, m[1], dir, m[1])
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no reference to /kind or /usr/local in the node image's files: the pattern no longer matches them")
	}
}
