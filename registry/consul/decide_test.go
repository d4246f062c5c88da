package consul

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

func TestRequestBudget(t *testing.T) {
	tests := []struct {
		query string
		want  time.Duration
	}{
		{"", 2 * time.Second},
		{"stale=&passing=1", 2 * time.Second},
		{"index=42&wait=60000ms", time.Minute + time.Minute/16 + 2*time.Second},
		{"index=42", 5*time.Minute + 5*time.Minute/16 + 2*time.Second},           // Consul's default wait
		{"index=42&wait=1h", 10*time.Minute + 10*time.Minute/16 + 2*time.Second}, // Consul's cap
		{"index=42&wait=soon", 5*time.Minute + 5*time.Minute/16 + 2*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			if got := requestBudget(&url.URL{RawQuery: tt.query}, 2*time.Second); got != tt.want {
				t.Errorf("requestBudget = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestUnknownService(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"Consul's answer", api.StatusError{Code: 404, Body: `Unknown service ID "web-1". Ensure that the service ID is passed, not the service name.`}, true},
		{"404 without a body", api.StatusError{Code: 404}, false},
		{"path Consul does not serve", api.StatusError{Code: 404, Body: "Invalid URL path: not a recognized HTTP API endpoint"}, false},
		{"ACL denied", api.StatusError{Code: 403, Body: "Permission denied"}, false},
		{"connection refused", errors.New("dial tcp 10.0.0.1:8500: connect: connection refused"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unknownService(tt.err); got != tt.want {
				t.Errorf("unknownService = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRouteOf(t *testing.T) {
	agent := &api.Client{}
	agents := func(addr string) (*api.Client, error) {
		if addr == "10.0.0.9" {
			return nil, errors.New("bad address")
		}
		return agent, nil
	}
	serf := func(status string) api.HealthChecks {
		return api.HealthChecks{{CheckID: "service:web", Status: api.HealthPassing}, {CheckID: serfCheckID, Status: status}}
	}
	tests := []struct {
		name      string
		addr      string
		checks    api.HealthChecks
		agents    func(string) (*api.Client, error)
		wantAgent bool
		wantWhy   bool
	}{
		{"agent alive", "10.0.0.1", serf(api.HealthPassing), agents, true, false},
		{"no agent: registered through the catalog", "10.0.0.1", api.HealthChecks{{CheckID: "service:web"}}, agents, false, false},
		{"agent down", "10.0.0.1", serf(api.HealthCritical), agents, false, true},
		{"no agent port", "10.0.0.1", serf(api.HealthPassing), nil, false, true},
		{"no client for the address", "10.0.0.9", serf(api.HealthPassing), agents, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Registry{cfg: Config{Agents: tt.agents}}
			rt := r.routeOf(&api.Node{Node: "n1", Address: tt.addr}, tt.checks)
			if (rt.agent != nil) != tt.wantAgent || (rt.why != "") != tt.wantWhy || rt.gone {
				t.Errorf("routeOf = %+v; want agent %v, a reason %v", rt, tt.wantAgent, tt.wantWhy)
			}
		})
	}
}
