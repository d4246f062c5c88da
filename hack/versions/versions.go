// Package versions reads hack/versions.env, the one file that pins every version lastcall's
// scripts, Dockerfiles, Makefile and tests use. Its tests fail when anything repeats a pinned
// value instead of reading it.
package versions

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// File is the pins file, relative to the repository root.
const File = "hack/versions.env"

// line is the only shape of a setting: what bash `source`, make `include` and this parser all
// read the same way (no quoting, no expansion, no spaces, no trailing comment).
var line = regexp.MustCompile(`^([A-Z][A-Z0-9_]*)=([^\s'"$#\\` + "`" + `]+)$`)

// Parse reads KEY=value lines; blank lines and lines starting with # are skipped.
func Parse(r io.Reader) (map[string]string, error) {
	pins := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		m := line.FindStringSubmatch(text)
		if m == nil {
			return nil, fmt.Errorf("line %d %q: want KEY=value (upper-case key; value without spaces, quotes, $, # or backslash)", n, text)
		}
		if _, dup := pins[m[1]]; dup {
			return nil, fmt.Errorf("line %d: %s is set twice", n, m[1])
		}
		pins[m[1]] = m[2]
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read pins: %w", err)
	}
	return pins, nil
}

// Load finds the repository root at or above dir (the first folder holding hack/versions.env)
// and returns it with the parsed pins.
func Load(dir string) (root string, pins map[string]string, err error) {
	root, err = filepath.Abs(dir)
	if err != nil {
		return "", nil, fmt.Errorf("find %s: %w", File, err)
	}
	for {
		f, err := os.Open(filepath.Join(root, File))
		if err == nil {
			defer f.Close()
			pins, err := Parse(f)
			if err != nil {
				return "", nil, fmt.Errorf("%s: %w", File, err)
			}
			return root, pins, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", nil, fmt.Errorf("open %s: %w", File, err)
		}
		parent := filepath.Dir(root)
		if parent == root {
			return "", nil, fmt.Errorf("no %s in %s or any folder above it", File, dir)
		}
		root = parent
	}
}
