// Package consulpick is a graceful.Picker over the passing instances of a Consul service, kept
// current by a chain of blocking queries: when lastcall-prestop deregisters a pod, callers using
// it stop choosing that pod as soon as their Consul agent knows.
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

// Watch starts following service's passing instances until ctx ends. Errors are logged and
// retried after a second; the last known list stays in use meanwhile.
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
	var index uint64
	for ctx.Err() == nil {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute, AllowStale: true}).WithContext(ctx)
		entries, meta, err := client.Health().Service(service, "", true, q)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("consul watch failed, keeping the last endpoints", "service", service, "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		hosts := make([]string, 0, len(entries))
		for _, e := range entries {
			addr := e.Service.Address
			if addr == "" {
				addr = e.Node.Address
			}
			hosts = append(hosts, net.JoinHostPort(addr, strconv.Itoa(e.Service.Port)))
		}
		p.mu.Lock()
		p.hosts = hosts
		p.once.Do(func() { close(p.ready) }) // before waking Changed waiters, who may check it
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
		if meta.LastIndex < index {
			index = 0 // a reset, as Consul documents
		} else {
			index = max(meta.LastIndex, 1)
		}
	}
}

// String is for logs.
func (p *Picker) String() string { return fmt.Sprintf("consul picker %v", p.Hosts()) }
