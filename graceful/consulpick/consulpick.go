// Package consulpick is a graceful.Picker over the passing instances of a Consul service, kept
// current by a chain of blocking queries: when lastcall-prestop deregisters a pod, callers using
// it stop choosing that pod as soon as their Consul agent knows.
//
// consulpick is a module of its own (github.com/lastcall-dev/lastcall/graceful/consulpick), so
// that services importing graceful without it pull no Consul code. Its go line is consul/api's.
package consulpick

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

// Picker implements graceful.Picker.
type Picker struct {
	mu      sync.RWMutex
	hosts   []string
	changed chan struct{} // closed and replaced at each update
	next    atomic.Uint64
	ready   chan struct{}
	once    sync.Once
}

var _ graceful.Picker = (*Picker)(nil)

// Watch starts following service's passing instances until ctx ends, with stale reads from any
// Consul server. Failed queries are logged and retried with backoff (registry/consulwatch); the
// last known list stays in use meanwhile.
// A nil client or an empty service is a programming error and panics.
func Watch(ctx context.Context, client *api.Client, service string, log *slog.Logger) *Picker {
	if client == nil || service == "" {
		panic(fmt.Sprintf("consulpick: Watch(client %v, service %q): both are required", client, service))
	}
	if log == nil {
		log = slog.Default()
	}
	p := &Picker{ready: make(chan struct{}), changed: make(chan struct{})}
	go p.follow(ctx, client, service, log)
	return p
}

// Ready is closed once the first answer arrived.
func (p *Picker) Ready() <-chan struct{} { return p.ready }

// Changed returns a channel that is closed when the list is next updated (each answer from
// Consul, even an unchanged one), for callers that react to it instead of polling Hosts.
func (p *Picker) Changed() <-chan struct{} {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.changed
}

// Hosts is the current list.
func (p *Picker) Hosts() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return append([]string(nil), p.hosts...)
}

// Pick implements graceful.Picker: round robin, avoiding endpoints already tried.
func (p *Picker) Pick(tried []string) (string, error) {
	return graceful.RoundRobin(p.Hosts(), tried, &p.next)
}

func (p *Picker) follow(ctx context.Context, client *api.Client, service string, log *slog.Logger) {
	_ = consulwatch.Watch(ctx, consulwatch.Config{
		Options: api.QueryOptions{AllowStale: true},
		OnError: func(err error, retryIn time.Duration) error {
			log.Warn("consul watch failed, keeping the last endpoints", "service", service, "err", err, "retryIn", retryIn)
			return nil
		},
	}, consulwatch.Passing(client.Health(), service), func(entries []*api.ServiceEntry, _ *api.QueryMeta) bool {
		p.set(entries)
		return false
	})
}

// set replaces the list with entries' addresses and wakes the Changed waiters.
func (p *Picker) set(entries []*api.ServiceEntry) {
	hosts := make([]string, 0, len(entries))
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		hosts = append(hosts, net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hosts = hosts
	p.once.Do(func() { close(p.ready) }) // before waking Changed waiters, who may check it
	close(p.changed)
	p.changed = make(chan struct{})
}

// String is for logs.
func (p *Picker) String() string { return fmt.Sprintf("consul picker %v", p.Hosts()) }
