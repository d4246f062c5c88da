package main

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
)

// consulTargets balances on the client, as Consul-aware callers do: it follows the service's
// passing instances with blocking queries and sends each request to the next one, round robin,
// straight to the pod IP.
type consulTargets struct {
	urlPath string
	mu      sync.RWMutex
	urls    []string
	n       atomic.Uint64
	ready   chan struct{} // closed after the first answer
	once    sync.Once
}

// watchConsul starts following cfg.Service's passing instances until ctx ends.
func watchConsul(ctx context.Context, cfg Config, log *slog.Logger) (*consulTargets, error) {
	ac := api.DefaultConfig()
	ac.Address = cfg.ConsulAddr
	client, err := api.NewClient(ac)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", cfg.ConsulAddr, err)
	}
	t := &consulTargets{urlPath: cfg.URLPath, ready: make(chan struct{})}
	go t.follow(ctx, client, cfg, log)
	return t, nil
}

func (t *consulTargets) follow(ctx context.Context, client *api.Client, cfg Config, log *slog.Logger) {
	var index uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		opts := (&api.QueryOptions{WaitIndex: index, WaitTime: 30 * time.Second}).WithContext(ctx)
		entries, meta, err := client.Health().Service(cfg.Service, "", true, opts)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("consul query failed; keeping the last instance list", "service", cfg.Service, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		// an index that goes backwards (server restart) restarts the watch
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
		var urls []string
		for _, e := range entries {
			addr := e.Service.Address
			if addr == "" {
				addr = e.Node.Address
			}
			port := e.Service.Port
			if cfg.Port != 0 {
				port = cfg.Port
			}
			urls = append(urls, "http://"+net.JoinHostPort(addr, strconv.Itoa(port))+t.urlPath)
		}
		t.mu.Lock()
		changed := len(urls) != len(t.urls)
		t.urls = urls
		t.mu.Unlock()
		if changed {
			log.Info("consul instances", "service", cfg.Service, "passing", len(urls), "index", index)
		}
		t.once.Do(func() { close(t.ready) })
	}
}

func (t *consulTargets) next() (string, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.urls) == 0 {
		return "", false
	}
	return t.urls[int(t.n.Add(1)%uint64(len(t.urls)))], true
}
