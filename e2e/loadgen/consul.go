package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/e2e/report"
	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

// consulTargets balances on the client, as Consul-aware callers do: it follows the service's
// passing instances with blocking queries and sends each request to the next one, round robin,
// straight to the pod IP.
type consulTargets struct {
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	list    []target
	lastErr error // of the last query, until one succeeds

	n     atomic.Uint64
	ready chan struct{} // closed after the first answer
	once  sync.Once

	// notify orders the calls of onChange: each gets the list current when it runs
	notify   sync.Mutex
	onChange []func([]target)
}

// watchConsul starts following cfg.Service's passing instances until ctx ends.
func watchConsul(ctx context.Context, cfg Config, log *slog.Logger) (*consulTargets, error) {
	ac := api.DefaultConfig()
	ac.Address = cfg.ConsulAddr
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.ConsulAddr, err)
	}
	t := &consulTargets{cfg: cfg, log: log, ready: make(chan struct{})}
	go t.follow(ctx, client.Health())
	return t, nil
}

// consulWait caps one blocking query.
const consulWait = 30 * time.Second

// follow keeps the instance list current; on errors the last list stays in use.
func (t *consulTargets) follow(ctx context.Context, health *api.Health) {
	_ = consulwatch.Watch(ctx, consulwatch.Config{
		WaitTime: consulWait,
		OnError: func(err error, retryIn time.Duration) error {
			t.mu.Lock()
			t.lastErr = err
			t.mu.Unlock()
			t.log.Warn("consul query failed; keeping the last instance list", "service", t.cfg.Service, "err", err, "retryIn", retryIn)
			return nil
		},
	}, consulwatch.Passing(health, t.cfg.Service), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
		t.set(entries, meta.LastIndex)
		return false
	})
}

// set replaces the instance list with entries.
func (t *consulTargets) set(entries []*api.ServiceEntry, index uint64) {
	list := make([]target, 0, len(entries))
	for _, e := range entries {
		addr := e.Service.Address
		if addr == "" {
			addr = e.Node.Address
		}
		port := e.Service.Port
		if t.cfg.Port != 0 {
			port = t.cfg.Port
		}
		hp := net.JoinHostPort(addr, strconv.Itoa(port))
		u := "http://" + hp + t.cfg.URLPath
		if t.cfg.Protocol == report.ProtoGRPC {
			u = hp
		}
		list = append(list, target{url: u, hostPort: hp})
	}
	slices.SortFunc(list, func(a, b target) int { return cmp.Compare(a.hostPort, b.hostPort) })
	t.notify.Lock()
	t.mu.Lock()
	changed := !slices.Equal(list, t.list)
	t.list, t.lastErr = list, nil
	subs := t.onChange
	t.mu.Unlock()
	if changed {
		for _, fn := range subs {
			fn(list)
		}
	}
	t.notify.Unlock()
	if changed {
		hosts := make([]string, len(list))
		for i, tg := range list {
			hosts[i] = tg.hostPort
		}
		t.log.Info("consul instances", "service", t.cfg.Service, "passing", len(list), "instances", hosts, "index", index)
	}
	t.once.Do(func() { close(t.ready) })
}

// waitReady waits for Consul's first answer.
func (t *consulTargets) waitReady(ctx context.Context) error {
	select {
	case <-t.ready:
		return nil
	case <-ctx.Done():
		t.mu.RLock()
		defer t.mu.RUnlock()
		if t.lastErr != nil {
			return fmt.Errorf("no answer from Consul at %s: %w", t.cfg.ConsulAddr, t.lastErr)
		}
		return fmt.Errorf("no answer from Consul at %s: %w", t.cfg.ConsulAddr, ctx.Err())
	}
}

// subscribe calls fn with the instance list now and on every change, until the watch ends.
func (t *consulTargets) subscribe(fn func([]target)) {
	t.notify.Lock()
	defer t.notify.Unlock()
	t.mu.Lock()
	t.onChange = append(t.onChange, fn)
	list := t.list
	t.mu.Unlock()
	fn(list)
}

// Pick implements graceful.Picker over the passing instances, round robin, for a
// RetryTransport's tries.
func (t *consulTargets) Pick(tried []string) (string, error) {
	t.mu.RLock()
	hosts := make([]string, len(t.list))
	for i, tg := range t.list {
		hosts[i] = tg.hostPort
	}
	t.mu.RUnlock()
	return graceful.RoundRobin(hosts, tried, &t.n)
}

func (t *consulTargets) next() (target, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.list) == 0 {
		return target{}, false
	}
	return t.list[t.n.Add(1)%uint64(len(t.list))], true
}
