package dataplane

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Target is one draining IP and, when the caller knows them, the Service ports whose
// EndpointSlices list it. The ports let a probe read only those Services' rules instead of the
// whole ruleset, which at 50,000 endpoints costs seconds of CPU per read.
type Target struct {
	IP netip.Addr
	// Ports must list every Service port whose EndpointSlices list IP: a probe that reads
	// only these rules does not see a Service left out here. Empty means unknown.
	Ports []ServicePort
}

// ServicePort is one Service port an endpoint is listed under, named as kube-proxy names it.
// Chain names are hashes of these values, so they must be the EndpointSlice's own.
type ServicePort struct {
	// Name is kube-proxy's service port name, "namespace/name:port" ("namespace/name" when
	// the port has no name): the Service's namespace and name, and the EndpointSlice port's
	// name.
	Name string
	// Protocol is the EndpointSlice port's protocol: TCP, UDP or SCTP.
	Protocol string
	// Port is the EndpointSlice port's number, the endpoint's own port (the Service's
	// targetPort resolved).
	Port uint16
}

// Validate reports the first problem of p, naming the field.
func (p ServicePort) Validate() error {
	ns, rest, ok := strings.Cut(p.Name, "/")
	name, _, _ := strings.Cut(rest, ":")
	switch {
	case !ok || ns == "" || name == "":
		return fmt.Errorf("name %q: want namespace/name:port as kube-proxy writes it (namespace/name for an unnamed port)", p.Name)
	case p.Protocol != "TCP" && p.Protocol != "UDP" && p.Protocol != "SCTP":
		return fmt.Errorf("protocol %q: want TCP, UDP or SCTP", p.Protocol)
	case p.Port == 0:
		return fmt.Errorf("port 0: want the EndpointSlice port's number, 1 to 65535")
	}
	return nil
}

// Result is what a check found, and how it read.
type Result struct {
	Verdicts map[netip.Addr]Verdict
	// Targeted is set when only the targets' Service ports were read.
	Targeted bool
	// FullReason says why the whole ruleset was read although ports were given ("" when
	// Targeted or when some target had no ports).
	FullReason string
	// Reads counts the commands run.
	Reads int
}

// TargetProbe is a Probe that can read only the rules of given Service ports.
type TargetProbe interface {
	Probe
	// CheckTargets returns a verdict for every target's IP; every target is draining, as in
	// Check. It reads the whole ruleset when a target has no ports or when that is cheaper.
	CheckTargets(ctx context.Context, targets []Target) (Result, error)
}

// CheckTargets checks targets with p, reading only their Service ports when p can.
func CheckTargets(ctx context.Context, p Probe, targets []Target) (Result, error) {
	if tp, ok := p.(TargetProbe); ok {
		return tp.CheckTargets(ctx, targets)
	}
	ips := TargetIPs(targets)
	v, err := p.Check(ctx, ips)
	if err != nil {
		return Result{}, err
	}
	d, _ := NewDraining(ips)
	return Result{Verdicts: v, FullReason: fullReason(targets, "this dataplane is read whole"), Reads: len(d.Families())}, nil
}

// TargetIPs lists the targets' IPs.
func TargetIPs(targets []Target) []netip.Addr {
	ips := make([]netip.Addr, len(targets))
	for i, t := range targets {
		ips[i] = t.IP
	}
	return ips
}

// HavePorts reports whether every target lists its Service ports.
func HavePorts(targets []Target) bool {
	for _, t := range targets {
		if len(t.Ports) == 0 {
			return false
		}
	}
	return true
}

// fullReason is why given when ports were given, "" otherwise.
func fullReason(targets []Target, why string) string {
	if len(targets) == 0 || !HavePorts(targets) {
		return ""
	}
	return why
}
