package iptables

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane/internal/command"
)

// Saver runs the iptables commands of the backend kube-proxy writes to: iptables-save -t nat
// for the whole table (Dump) and iptables -t nat -S CHAIN for one chain (ListChain);
// ip6tables… for IPv6. It only reads.
//
// A node has two iptables backends, nf_tables and legacy, and kube-proxy writes to the one its
// image's iptables wrapper picked (this repository's hack/node-image/netbase/iptables-wrapper:
// the backend holding more rules). Saver picks among the backends whose nat table holds
// kube-proxy's KUBE-SERVICES chain the one where it has more rules, and remembers the choice
// until a check finds no kube-proxy rules (Forget). It compares KUBE-SERVICES alone, not every
// rule as the wrapper does, because that is cheap on nf_tables (-S of one chain) while
// iptables-nft-save 1.8.9 takes time quadratic in the number of chains (30 s of CPU at 50,000
// endpoints). A legacy nat table is only read when the kernel lists one (/proc/net/ip_tables_names).
//
// Each dump is one consistent snapshot: iptables-legacy-save reads the table in one call,
// iptables-nft-save retries when the ruleset changes while it reads. So is each ListChain.
type Saver struct {
	lookPath func(string) (string, error)
	// procNet is where the kernel lists the legacy tables of this network namespace.
	procNet string

	mu     sync.Mutex
	chosen map[dataplane.Family]backend
}

// backend is one iptables backend's commands for one family.
type backend struct {
	save string // iptables-nft-save
	list string // iptables-nft
	// oneChain is set for nf_tables: -S CHAIN fetches that chain alone. Legacy iptables gets
	// the whole table from the kernel for every command and takes the xtables lock for -S.
	oneChain bool
}

var _ dataplane.Dumper = (*Saver)(nil)

// NewSaver returns a Saver that finds the commands in PATH.
func NewSaver() *Saver {
	return &Saver{lookPath: exec.LookPath, procNet: "/proc/net", chosen: map[dataplane.Family]backend{}}
}

// Dump implements dataplane.Dumper.
func (s *Saver) Dump(ctx context.Context, family dataplane.Family) (io.ReadCloser, error) {
	b, err := s.backend(ctx, family)
	if err != nil {
		return nil, err
	}
	return command.Start(ctx, b.save, "-t", "nat")
}

// ListChain returns `iptables -t nat -S chain` of family's backend; found is false when the
// nat table has no such chain.
func (s *Saver) ListChain(ctx context.Context, family dataplane.Family, chain string) (rules []byte, found bool, err error) {
	b, err := s.backend(ctx, family)
	if err != nil {
		return nil, false, err
	}
	return listChain(ctx, b.list, chain)
}

// ReadsOneChain reports whether ListChain reads one chain of family's backend, not the whole
// nat table (nf_tables: yes; legacy: no).
func (s *Saver) ReadsOneChain(ctx context.Context, family dataplane.Family) (bool, error) {
	b, err := s.backend(ctx, family)
	return b.oneChain, err
}

// Ping implements dataplane.Pinger: it reads KUBE-SERVICES alone on nf_tables, the nat table
// on legacy.
func (s *Saver) Ping(ctx context.Context, family dataplane.Family) error {
	b, err := s.backend(ctx, family)
	if err != nil {
		return err
	}
	var found bool
	if b.oneChain {
		_, found, err = listChain(ctx, b.list, servicesChain)
	} else {
		_, found, err = countServicesRules(ctx, b.save)
	}
	if err == nil && !found {
		s.Forget(family)
		err = fmt.Errorf("%w: no %s chain in the nat table of %s", dataplane.ErrRulesNotFound, servicesChain, b.save)
	}
	return err
}

// Forget drops the backend chosen for family, so the next read looks again.
func (s *Saver) Forget(family dataplane.Family) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chosen, family)
}

// Backend names the command family's rules are read with (iptables-nft-save, …), choosing it
// if needed: for logs.
func (s *Saver) Backend(ctx context.Context, family dataplane.Family) (string, error) {
	b, err := s.backend(ctx, family)
	return b.save, err
}

func (s *Saver) backend(ctx context.Context, family dataplane.Family) (backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.chosen[family]; ok {
		return b, nil
	}
	prefix, legacyTables := "iptables", "ip_tables_names"
	if family == dataplane.IPv6 {
		prefix, legacyTables = "ip6tables", "ip6_tables_names"
	}
	have := func(names ...string) bool {
		for _, n := range names {
			if _, err := s.lookPath(n); err != nil {
				return false
			}
		}
		return true
	}
	nft := backend{save: prefix + "-nft-save", list: prefix + "-nft", oneChain: true}
	legacy := backend{save: prefix + "-legacy-save", list: prefix + "-legacy"}
	hasNFT, hasLegacy := have(nft.save, nft.list), have(legacy.save, legacy.list)
	if !hasNFT && !hasLegacy {
		// No backend-specific commands: whatever iptables-save is, it is the only one.
		only := backend{save: prefix + "-save", list: prefix}
		if !have(only.save, only.list) {
			return backend{}, fmt.Errorf("find %s and %s in PATH: install iptables in the agent's image", only.save, only.list)
		}
		version, _ := command.Output(ctx, only.list, "-V")
		only.oneChain = bytes.Contains(version, []byte("nf_tables"))
		s.chosen[family] = only
		return only, nil
	}

	best, bestRules := backend{}, -1
	var errs []error
	consider := func(b backend, rules int, found bool, err error) {
		switch {
		case err != nil:
			errs = append(errs, err)
		case found && rules > bestRules:
			best, bestRules = b, rules
		}
	}
	// nf_tables first: it wins a tie, as in the wrapper.
	if hasNFT {
		rules, found, err := listChain(ctx, nft.list, servicesChain)
		consider(nft, bytes.Count(rules, []byte("\n-A ")), found, err)
	}
	if hasLegacy && s.legacyNAT(legacyTables) {
		rules, found, err := countServicesRules(ctx, legacy.save)
		consider(legacy, rules, found, err)
	}
	if bestRules < 0 {
		if len(errs) > 0 {
			return backend{}, errors.Join(errs...)
		}
		var names []string
		if hasNFT {
			names = append(names, nft.save)
		}
		if hasLegacy {
			names = append(names, legacy.save)
		}
		return backend{}, fmt.Errorf("%w: no %s chain in the nat table of %s", dataplane.ErrRulesNotFound, servicesChain, strings.Join(names, " or "))
	}
	s.chosen[family] = best
	return best, nil
}

// legacyNAT reports whether the kernel has a legacy nat table in this network namespace; reading
// the list neither creates the table nor takes the xtables lock, as iptables-legacy would.
func (s *Saver) legacyNAT(tables string) bool {
	b, err := os.ReadFile(filepath.Join(s.procNet, tables))
	if err != nil {
		return true // cannot tell: read the table
	}
	for _, t := range strings.Fields(string(b)) {
		if t == "nat" {
			return true
		}
	}
	return false
}

// listChain runs `list -t nat -S chain`. iptables exits 1 for a chain that does not exist;
// iptables-nft 1.8.9 then says the chain "is incompatible", later versions and legacy "No
// chain/target/match by that name". A chain it cannot print exits 3.
func listChain(ctx context.Context, list, chain string) ([]byte, bool, error) {
	out, err := command.Output(ctx, list, "-t", "nat", "-S", chain)
	var cmdErr *command.Error
	if errors.As(err, &cmdErr) && cmdErr.ExitCode() == 1 &&
		(strings.Contains(cmdErr.Stderr, "is incompatible") || strings.Contains(cmdErr.Stderr, "No chain/target/match")) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// countServicesRules counts the rules of KUBE-SERVICES in a full dump and tells whether the chain
// exists.
func countServicesRules(ctx context.Context, save string) (rules int, found bool, err error) {
	out, err := command.Start(ctx, save, "-t", "nat")
	if err != nil {
		return 0, false, err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("-A "+servicesChain+" ")):
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
		return 0, false, fmt.Errorf("read %s output: %w", save, scanErr)
	}
	return rules, found, nil
}
