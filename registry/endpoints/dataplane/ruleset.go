package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// ParseFunc reads one IP family's ruleset, as a Dumper yields it, and returns the service chains
// that new connections reach and that select an IP of draining. A ruleset without kube-proxy's
// rules is an error wrapping ErrRulesNotFound.
type ParseFunc func(r io.Reader, draining Draining) ([]Chain, error)

// RulesetProbe is a Probe for dataplanes whose state is one text dump per IP family
// (kube-proxy's iptables and nftables modes): it dumps, parses while the dump streams, and
// decides.
type RulesetProbe struct {
	name  string
	dump  Dumper
	parse ParseFunc
}

var _ Probe = (*RulesetProbe)(nil)

// NewRulesetProbe returns a probe named name (for errors) that reads rulesets from dump with parse.
func NewRulesetProbe(name string, dump Dumper, parse ParseFunc) *RulesetProbe {
	return &RulesetProbe{name: name, dump: dump, parse: parse}
}

// forgetter is implemented by a Dumper that caches where the rules are and should look again
// once they are not there.
type forgetter interface{ Forget(Family) }

// Check implements Probe. It reads one ruleset per IP family present in draining.
func (p *RulesetProbe) Check(ctx context.Context, draining []netip.Addr) (map[netip.Addr]Verdict, error) {
	d, err := NewDraining(draining)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.name, err)
	}
	var chains []Chain
	for _, family := range d.Families() {
		c, err := p.read(ctx, family, d)
		if err != nil {
			if f, ok := p.dump.(forgetter); ok && errors.Is(err, ErrRulesNotFound) {
				f.Forget(family)
			}
			return nil, fmt.Errorf("%s %s: %w", p.name, family, err)
		}
		chains = append(chains, c...)
	}
	return Decide(d, chains), nil
}

// Pinger is implemented by a Dumper or Probe that can tell cheaply whether kube-proxy's rules
// for a family can be read: an error wrapping ErrRulesNotFound when there are none, another
// error when they cannot be read (permissions, missing commands).
type Pinger interface {
	Ping(ctx context.Context, family Family) error
}

var _ Pinger = (*RulesetProbe)(nil)

// Ping implements Pinger: through the Dumper when it can, else by reading the ruleset whole.
func (p *RulesetProbe) Ping(ctx context.Context, family Family) error {
	if d, ok := p.dump.(Pinger); ok {
		err := d.Ping(ctx, family)
		if err != nil {
			return fmt.Errorf("%s %s: %w", p.name, family, err)
		}
		return nil
	}
	if _, err := p.read(ctx, family, Draining{}); err != nil {
		return fmt.Errorf("%s %s: %w", p.name, family, err)
	}
	return nil
}

func (p *RulesetProbe) read(ctx context.Context, family Family, d Draining) ([]Chain, error) {
	out, err := p.dump.Dump(ctx, family)
	if err != nil {
		return nil, err
	}
	chains, parseErr := p.parse(out, d)
	// A failed dump explains a parse error better than the parse error does.
	if err := out.Close(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return chains, parseErr
}
