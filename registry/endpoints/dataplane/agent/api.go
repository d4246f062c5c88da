package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// The agent's HTTP API, version 1: JSON in and out.
//
//	POST /v1/wait   WaitRequest  → Answer, once every IP (or, with until "any", one IP) is
//	                NotRouted or LastBackend, or at the timeout (long poll)
//	POST /v1/check  CheckRequest → Answer from one read that started after the request
//	GET  /v1/check?ip=A&ip=B     → the same, reading the whole ruleset
//
// Status: 200 with an Answer; 400 {"error"} naming the field; 401 without the bearer token
// when one is configured; 405; 429 when the agent holds too many waits or IPs (Retry-After);
// 503 with an Answer whose error says why the ruleset could not be read (Retry-After).
const (
	PathWait  = "/v1/wait"
	PathCheck = "/v1/check"
)

// WaitRequest asks to be answered when this node stops routing new connections to IPs.
type WaitRequest struct {
	// IPs are the draining pod IPs to answer for.
	IPs []TargetJSON `json:"ips"`
	// AlsoDraining are other IPs that are leaving, not answered for. They tell a Service's
	// serving-terminating fallback (LastBackend) apart: a chain whose endpoints are all
	// draining. Without them such a chain counts as routing beside a ready endpoint.
	AlsoDraining []TargetJSON `json:"alsoDraining,omitempty"`
	// Until is "all" (the default): answer once every IP is NotRouted or LastBackend; or
	// "any": once one is, so that one long poll can follow many pods.
	Until string `json:"until,omitempty"`
	// Timeout is a Go duration, at most the agent's --max-timeout; default 30s. At the timeout
	// the answer carries the latest verdicts and timedOut.
	Timeout string `json:"timeout,omitempty"`
}

// CheckRequest asks for one fresh verdict per IP.
type CheckRequest struct {
	IPs          []TargetJSON `json:"ips"`
	AlsoDraining []TargetJSON `json:"alsoDraining,omitempty"`
}

// TargetJSON is one pod IP and, optionally, the Service ports whose EndpointSlices list it.
// With ports for every IP, nftables mode and iptables mode (nf_tables backend) read only those
// Services' chains (milliseconds at any scale); without, the whole table. Ports must then be complete: a Service
// left out is not read.
type TargetJSON struct {
	IP    string     `json:"ip"`
	Ports []PortJSON `json:"ports,omitempty"`
}

// PortJSON is one EndpointSlice port of one Service: the slice's namespace and its
// kubernetes.io/service-name label, and the port's name, protocol and number as the slice
// lists them.
type PortJSON struct {
	// Service is "namespace/name".
	Service string `json:"service"`
	// Name is the port's name; empty for an unnamed port.
	Name string `json:"name,omitempty"`
	// Protocol is TCP (the default), UDP or SCTP.
	Protocol string `json:"protocol,omitempty"`
	// Port is the endpoint's port number as the EndpointSlice lists it.
	Port int `json:"port"`
}

// Answer is the agent's reply: a verdict per IP asked for.
type Answer struct {
	Node string `json:"node,omitempty"`
	// Mode is the dataplane read: iptables or nftables.
	Mode string `json:"mode,omitempty"`
	// Done is set when every IP is NotRouted or LastBackend.
	Done bool `json:"done"`
	// TimedOut is set when a wait ended at its timeout.
	TimedOut bool `json:"timedOut,omitempty"`
	// CheckedAt is when the newest read the answer draws on ended.
	CheckedAt *time.Time `json:"checkedAt,omitempty"`
	// Read is "targeted" (only the given Service ports' rules) or "full".
	Read string `json:"read,omitempty"`
	// FullReason says why the whole ruleset was read although ports were given.
	FullReason string          `json:"fullReason,omitempty"`
	KubeProxy  KubeProxyStatus `json:"kubeProxy"`
	IPs        []IPAnswer      `json:"ips"`
	// Error says why the ruleset could not be read (status 503).
	Error string `json:"error,omitempty"`
}

// KubeProxyStatus is what kube-proxy's metrics said last.
type KubeProxyStatus struct {
	// LastSync is the end of kube-proxy's newest rule sync, as its metrics say.
	LastSync *time.Time `json:"lastSync,omitempty"`
	// Metrics is "ok", or why they could not be read (then the agent re-reads the ruleset at
	// a fixed interval while waits are open).
	Metrics string `json:"metrics"`
}

// IPAnswer is the verdict for one IP.
type IPAnswer struct {
	IP string `json:"ip"`
	// Verdict is NotRouted, Routed, LastBackend, or Unknown before the first read of the IP.
	Verdict string `json:"verdict"`
	// CheckedAt is when the read this verdict comes from ended.
	CheckedAt *time.Time `json:"checkedAt,omitempty"`
	// NotRoutedAt is when a read first saw the node not routing the IP since a read last saw
	// it routed: the change reached this node's dataplane at or before it, and after the
	// start of the last read that saw it routed (RoutedSeenAt).
	NotRoutedAt *time.Time `json:"notRoutedAt,omitempty"`
	// RoutedSeenAt is when the last read that saw the IP routed started.
	RoutedSeenAt *time.Time `json:"routedSeenAt,omitempty"`
	// Routes are the service chains that still select the IP (Routed, LastBackend).
	Routes []RouteJSON `json:"routes,omitempty"`
}

// RouteJSON is one service chain that selects an IP for new connections.
type RouteJSON struct {
	Service  string `json:"service,omitempty"`
	Chain    string `json:"chain"`
	Endpoint string `json:"endpoint"`
	Local    bool   `json:"local,omitempty"`
	Fallback bool   `json:"fallback,omitempty"`
}

// ErrorJSON is the body of a 4xx answer.
type ErrorJSON struct {
	Error string `json:"error"`
}

// Verdict names of IPAnswer.Verdict besides dataplane.State's.
const VerdictUnknown = "Unknown"

// Until values.
const (
	UntilAll = "all"
	UntilAny = "any"
)

// fieldError is a bad request naming the field.
type fieldError struct{ field, msg string }

func (e *fieldError) Error() string { return e.field + ": " + e.msg }

func badField(field, format string, args ...any) error {
	return &fieldError{field: field, msg: fmt.Sprintf(format, args...)}
}

// IsBadRequest reports whether err is a problem with the request.
func IsBadRequest(err error) bool {
	var fe *fieldError
	return errors.As(err, &fe)
}

// targets validates a request's IPs; field names the list ("ips", "alsoDraining").
func targets(field string, in []TargetJSON) ([]dataplane.Target, error) {
	out := make([]dataplane.Target, 0, len(in))
	for i, t := range in {
		f := fmt.Sprintf("%s[%d]", field, i)
		ip, err := netip.ParseAddr(t.IP)
		if err != nil {
			return nil, badField(f+".ip", "%q is not an IP address; pass the pod IP from status.podIPs", t.IP)
		}
		tg := dataplane.Target{IP: ip.Unmap().WithZone("")}
		for j, p := range t.Ports {
			sp, err := p.servicePort()
			if err != nil {
				var fe *fieldError
				if errors.As(err, &fe) {
					fe.field = fmt.Sprintf("%s.ports[%d].%s", f, j, fe.field)
				}
				return nil, err
			}
			tg.Ports = append(tg.Ports, sp)
		}
		out = append(out, tg)
	}
	return out, nil
}

// servicePort turns an EndpointSlice port into kube-proxy's service port name.
func (p PortJSON) servicePort() (dataplane.ServicePort, error) {
	ns, name, ok := strings.Cut(p.Service, "/")
	if !ok || ns == "" || name == "" || strings.ContainsAny(name, "/:") {
		return dataplane.ServicePort{}, badField("service", "%q: want namespace/name of the Service (the EndpointSlice's namespace and kubernetes.io/service-name label)", p.Service)
	}
	if strings.ContainsAny(p.Name, "/: ") {
		return dataplane.ServicePort{}, badField("name", "%q: want the EndpointSlice port's name", p.Name)
	}
	proto := p.Protocol
	if proto == "" {
		proto = "TCP"
	}
	if proto != "TCP" && proto != "UDP" && proto != "SCTP" {
		return dataplane.ServicePort{}, badField("protocol", "%q: want TCP, UDP or SCTP", p.Protocol)
	}
	if p.Port < 1 || p.Port > 65535 {
		return dataplane.ServicePort{}, badField("port", "%d: want the EndpointSlice port's number, 1 to 65535", p.Port)
	}
	spn := p.Service
	if p.Name != "" {
		spn += ":" + p.Name
	}
	return dataplane.ServicePort{Name: spn, Protocol: proto, Port: uint16(p.Port)}, nil
}
