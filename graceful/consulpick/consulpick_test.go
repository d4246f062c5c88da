package consulpick_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/graceful/consulpick"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
)

func TestPickerFollowsPassingInstances(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client(t, nil)
	for _, id := range []string{"a", "b"} {
		if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "web", Address: "10.6.0." + map[string]string{"a": "1", "b": "2"}[id], Port: 8080,
			Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := consulpick.Watch(ctx, c, "web", nil)
	awaitHosts(t, p, []string{"10.6.0.1:8080", "10.6.0.2:8080"})

	if h, err := p.Pick([]string{"10.6.0.1:8080"}); err != nil || h != "10.6.0.2:8080" {
		t.Errorf("Pick avoiding a = %q, %v", h, err)
	}
	// Deregistration (what lastcall-prestop does) reaches the picker through the blocking query.
	if err := c.Agent().ServiceDeregister("a"); err != nil {
		t.Fatal(err)
	}
	awaitHosts(t, p, []string{"10.6.0.2:8080"})
	// A failing check takes an instance out too.
	if err := c.Agent().UpdateTTL("ttl-b", "", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	awaitHosts(t, p, []string{})
}

func awaitHosts(t *testing.T, p *consulpick.Picker, want []string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		changed := p.Changed() // before reading, so that no update is missed
		got := p.Hosts()
		slices.Sort(got)
		if slices.Equal(got, want) && isReady(p) {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("hosts = %v, want %v", got, want)
		}
	}
}

func isReady(p *consulpick.Picker) bool {
	select {
	case <-p.Ready():
		return true
	default:
		return false
	}
}

func TestWatchNeedsClientAndService(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "both are required") {
			t.Errorf("recovered %v, want a clear panic", r)
		}
	}()
	consulpick.Watch(context.Background(), nil, "web", nil)
}
