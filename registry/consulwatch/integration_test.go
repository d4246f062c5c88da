package consulwatch_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry/consulwatch"
	"github.com/lastcall-dev/lastcall/registry/consulwatch/consultest"
)

// These tests run against a real `consul agent -dev`; they skip without LASTCALL_CONSUL_BIN.

func registerPassing(t *testing.T, c *api.Client, id string) {
	t.Helper()
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "web", Address: "10.7.0.1", Port: 8080,
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing}})
	if err != nil {
		t.Fatal(err)
	}
}

func ids(entries []*api.ServiceEntry) string {
	var out []string
	for _, e := range entries {
		out = append(out, e.Service.ID)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

// awaitSeen waits until the watch reports want; the watch's answers arrive on seen.
func awaitSeen(t *testing.T, seen <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	var last string
	for last != want {
		select {
		case last = <-seen:
		case <-timeout:
			t.Fatalf("watch saw %q last, want %q", last, want)
		}
	}
}

func TestWatchFollowsARealAgent(t *testing.T) {
	c := consultest.Start(t).Client(t, nil)
	registerPassing(t, c, "a")
	seen := make(chan string, 100)
	var answers int
	done := make(chan error, 1)
	go func() {
		done <- consulwatch.Watch(t.Context(), consulwatch.Config{Options: api.QueryOptions{AllowStale: true}},
			consulwatch.Passing(c.Health(), "web"), func(entries []*api.ServiceEntry, _ *api.QueryMeta) bool {
				answers++
				seen <- ids(entries)
				return ids(entries) == "b"
			})
	}()
	awaitSeen(t, seen, "a")
	registerPassing(t, c, "b")
	awaitSeen(t, seen, "a,b")
	// A failing check takes an instance out of the passing list, and the answer comes from the
	// blocking query, not a poll.
	if err := c.Agent().UpdateTTL("ttl-a", "", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	awaitSeen(t, seen, "b")
	if err := <-done; err != nil {
		t.Fatalf("Watch = %v, want nil once the handler is done", err)
	}
	// each query blocks until a change: a handful of answers for three states, not a poll
	if answers > 10 {
		t.Errorf("%d answers for 3 changes: the queries did not block", answers)
	}
}

func TestWatchEndsWithItsContextDuringARealBlockingQuery(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client(t, nil)
	ctx, cancel := context.WithCancel(t.Context())
	answered := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- consulwatch.Watch(ctx, consulwatch.Config{}, consulwatch.Passing(c.Health(), "web"),
			func([]*api.ServiceEntry, *api.QueryMeta) bool {
				select {
				case answered <- struct{}{}:
				default:
				}
				return false
			})
	}()
	<-answered // the next query blocks: nothing changes
	agent.Freeze()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Watch = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch kept blocking after its context ended")
	}
}

func TestWatchReportsAnAgentThatWentAway(t *testing.T) {
	agent := consultest.Start(t)
	c := agent.Client(t, nil)
	answered := make(chan struct{}, 1)
	var retries []time.Duration
	done := make(chan error, 1)
	go func() {
		done <- consulwatch.Watch(t.Context(), consulwatch.Config{
			OnError: func(err error, retryIn time.Duration) error {
				retries = append(retries, retryIn)
				if len(retries) == 3 {
					return err
				}
				return nil
			},
		}, consulwatch.Passing(c.Health(), "web"), func([]*api.ServiceEntry, *api.QueryMeta) bool {
			select {
			case answered <- struct{}{}:
			default:
			}
			return false
		})
	}()
	<-answered
	agent.Kill()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("Watch = %v, want the refused connection", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Watch did not give up after three failed queries")
	}
	if want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}; !equal(retries, want) {
		t.Errorf("retries in %v, want %v", retries, want)
	}
}
