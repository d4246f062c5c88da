package kubeproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Modes lastcall-node reads; "auto" asks kube-proxy.
const (
	ModeAuto     = "auto"
	ModeIPTables = "iptables"
	ModeNFTables = "nftables"
)

// ModeProbe is what each mode's probe provides.
type ModeProbe interface {
	dataplane.Probe
	dataplane.Pinger
}

// Probe reads the dataplane of kube-proxy's mode: a fixed one, or in auto mode the one
// /proxyMode names. When kube-proxy's metrics address cannot be reached, auto mode looks for
// each mode's rules and takes the only one it finds. A check that finds no kube-proxy rules
// makes auto mode look again on the next check (kube-proxy restarted in another mode).
type Probe struct {
	mode   string
	client *Client
	probes map[string]ModeProbe

	mu      sync.Mutex
	current string
	how     string
}

var (
	_ dataplane.TargetProbe = (*Probe)(nil)
	_ dataplane.Pinger      = (*Probe)(nil)
)

// NewProbe returns the probe for mode (ModeAuto or a key of probes); client is kube-proxy's
// metrics address, needed in auto mode only.
func NewProbe(mode string, client *Client, probes map[string]ModeProbe) (*Probe, error) {
	if mode != ModeAuto {
		if _, ok := probes[mode]; !ok {
			return nil, fmt.Errorf("mode %q: want auto or one of %s", mode, strings.Join(modeNames(probes), ", "))
		}
	}
	p := &Probe{mode: mode, client: client, probes: probes}
	if mode != ModeAuto {
		p.current, p.how = mode, "configured"
	}
	return p, nil
}

func modeNames(probes map[string]ModeProbe) []string {
	names := make([]string, 0, len(probes))
	for m := range probes {
		names = append(names, m)
	}
	sort.Strings(names)
	return names
}

// Mode returns the mode read now, finding it if needed, and how it was found.
func (p *Probe) Mode(ctx context.Context) (mode, how string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current != "" {
		return p.current, p.how, nil
	}
	mode, how, err = p.detect(ctx)
	if err != nil {
		return "", "", err
	}
	p.current, p.how = mode, how
	return mode, how, nil
}

func (p *Probe) detect(ctx context.Context) (mode, how string, err error) {
	askErr := errors.New("no kube-proxy metrics address")
	if p.client != nil {
		m, err := p.client.Mode(ctx)
		if err == nil {
			if _, ok := p.probes[m]; !ok {
				return "", "", fmt.Errorf("%w: kube-proxy runs in %q mode; lastcall-node reads %s", ErrUnsupportedMode, m, strings.Join(modeNames(p.probes), " and "))
			}
			return m, "kube-proxy /proxyMode", nil
		}
		askErr = err
	}
	// No answer: the mode whose rules are there.
	var found []string
	var errs []error
	for _, m := range modeNames(p.probes) {
		var err error
		for _, fam := range []dataplane.Family{dataplane.IPv4, dataplane.IPv6} {
			if err = p.probes[m].Ping(ctx, fam); err == nil || !errors.Is(err, dataplane.ErrRulesNotFound) {
				break
			}
		}
		switch {
		case err == nil:
			found = append(found, m)
		case !errors.Is(err, dataplane.ErrRulesNotFound):
			errs = append(errs, err)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], fmt.Sprintf("its rules (%v)", askErr), nil
	case len(found) > 1:
		return "", "", fmt.Errorf("kube-proxy rules of %s modes are present and /proxyMode cannot be read (%w): set the mode", strings.Join(found, " and "), askErr)
	case len(errs) > 0:
		return "", "", fmt.Errorf("find kube-proxy's mode: /proxyMode: %w; rules: %w", askErr, errors.Join(errs...))
	}
	return "", "", fmt.Errorf("%w: none of %s, and /proxyMode cannot be read (%w)", dataplane.ErrRulesNotFound, strings.Join(modeNames(p.probes), ", "), askErr)
}

// probe returns the current mode's probe.
func (p *Probe) probe(ctx context.Context) (ModeProbe, error) {
	mode, _, err := p.Mode(ctx)
	if err != nil {
		return nil, err
	}
	return p.probes[mode], nil
}

// after drops an auto mode choice that found no rules.
func (p *Probe) after(err error) error {
	if p.mode == ModeAuto && (errors.Is(err, dataplane.ErrRulesNotFound) || errors.Is(err, ErrUnsupportedMode)) {
		p.mu.Lock()
		p.current, p.how = "", ""
		p.mu.Unlock()
	}
	return err
}

// Check implements dataplane.Probe.
func (p *Probe) Check(ctx context.Context, draining []netip.Addr) (map[netip.Addr]dataplane.Verdict, error) {
	probe, err := p.probe(ctx)
	if err != nil {
		return nil, p.after(err)
	}
	v, err := probe.Check(ctx, draining)
	return v, p.after(err)
}

// CheckTargets implements dataplane.TargetProbe.
func (p *Probe) CheckTargets(ctx context.Context, targets []dataplane.Target) (dataplane.Result, error) {
	probe, err := p.probe(ctx)
	if err != nil {
		return dataplane.Result{}, p.after(err)
	}
	r, err := dataplane.CheckTargets(ctx, probe, targets)
	return r, p.after(err)
}

// Ping implements dataplane.Pinger. Rules missing for one family do not make auto mode look
// again: a single-stack node has none for the other.
func (p *Probe) Ping(ctx context.Context, family dataplane.Family) error {
	probe, err := p.probe(ctx)
	if err != nil {
		return p.after(err)
	}
	return probe.Ping(ctx, family)
}

// Modes lists the modes a Probe can be given, auto first.
func Modes(probes map[string]ModeProbe) []string {
	return slices.Concat([]string{ModeAuto}, modeNames(probes))
}
