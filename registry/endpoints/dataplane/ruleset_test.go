package dataplane

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

// textDumper dumps one text per family; a missing family is an empty ruleset.
type textDumper map[Family]string

func (d textDumper) Dump(_ context.Context, family Family) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(d[family])), nil
}

// parseMarker finds kube-proxy's rules when the ruleset says "kube-proxy".
func parseMarker(r io.Reader, _ Draining) ([]Chain, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(string(b), "kube-proxy") {
		return nil, ErrRulesNotFound
	}
	return nil, nil
}

func TestRulesetProbePingReadsTheRuleset(t *testing.T) {
	p := NewRulesetProbe("test", textDumper{IPv4: "kube-proxy"}, parseMarker)
	if err := p.Ping(context.Background(), IPv4); err != nil {
		t.Errorf("IPv4: %v", err)
	}
	if err := p.Ping(context.Background(), IPv6); !errors.Is(err, ErrRulesNotFound) || !strings.HasPrefix(err.Error(), "test IPv6: ") {
		t.Errorf("IPv6: %v, want ErrRulesNotFound", err)
	}
}
