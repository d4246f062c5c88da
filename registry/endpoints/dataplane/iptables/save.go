package iptables

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/command"
)

// Saver is the dataplane.Dumper that runs iptables-save -t nat (ip6tables-save for IPv6). It only
// reads. A node has two iptables backends, nft and legacy, and kube-proxy writes to the one its
// image's iptables wrapper picked (this repository's hack/node-image/netbase/iptables-wrapper:
// the backend holding more rules). Saver picks the same way, among the backends whose nat table
// holds kube-proxy's KUBE-SERVICES chain, and remembers the choice until a check finds no
// kube-proxy rules (Forget). Each dump is one consistent snapshot: iptables-legacy-save reads the
// table in one call, iptables-nft-save retries when the ruleset changes while it reads.
type Saver struct {
	lookPath func(string) (string, error)

	mu     sync.Mutex
	chosen map[dataplane.Family]string
}

var _ dataplane.Dumper = (*Saver)(nil)

// NewSaver returns a Saver that finds the commands in PATH.
func NewSaver() *Saver {
	return &Saver{lookPath: exec.LookPath, chosen: map[dataplane.Family]string{}}
}

// Dump implements dataplane.Dumper.
func (s *Saver) Dump(ctx context.Context, family dataplane.Family) (io.ReadCloser, error) {
	name, err := s.command(ctx, family)
	if err != nil {
		return nil, err
	}
	return command.Start(ctx, name, "-t", "nat")
}

// Forget drops the backend chosen for family, so the next Dump looks again.
func (s *Saver) Forget(family dataplane.Family) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chosen, family)
}

func (s *Saver) command(ctx context.Context, family dataplane.Family) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name, ok := s.chosen[family]; ok {
		return name, nil
	}
	prefix := "iptables"
	if family == dataplane.IPv6 {
		prefix = "ip6tables"
	}
	var candidates []string
	for _, name := range []string{prefix + "-nft-save", prefix + "-legacy-save"} {
		if _, err := s.lookPath(name); err == nil {
			candidates = append(candidates, name)
		}
	}
	if len(candidates) == 0 {
		// No backend-specific commands: whatever iptables-save is, it is the only one.
		name := prefix + "-save"
		if _, err := s.lookPath(name); err != nil {
			return "", fmt.Errorf("find %s: %w; install iptables in the agent's image", name, err)
		}
		s.chosen[family] = name
		return name, nil
	}
	best, bestRules := "", -1
	var errs []error
	for _, name := range candidates {
		rules, found, err := countKubeRules(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if found && rules > bestRules {
			best, bestRules = name, rules
		}
	}
	if best == "" {
		if len(errs) == len(candidates) {
			return "", errors.Join(errs...)
		}
		return "", fmt.Errorf("%w: no %s chain in the nat table of %s", dataplane.ErrRulesNotFound, servicesChain, strings.Join(candidates, " or "))
	}
	s.chosen[family] = best
	return best, nil
}

// countKubeRules counts the nat rules in kube-proxy's chains and tells whether KUBE-SERVICES exists.
func countKubeRules(ctx context.Context, name string) (rules int, found bool, err error) {
	out, err := command.Start(ctx, name, "-t", "nat")
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("-A KUBE-")):
			rules++
		case bytes.HasPrefix(line, []byte(":"+servicesChain+" ")):
			found = true
		}
	}
	scanErr := sc.Err()
	if err := out.Close(); err != nil {
		return 0, false, err
	}
	if scanErr != nil {
		return 0, false, fmt.Errorf("read %s output: %w", name, scanErr)
	}
	return rules, found, nil
}
