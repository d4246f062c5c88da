package consul

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry"
	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

// FollowIdle is how long a followed service is watched after the last Listed about it.
const FollowIdle = time.Minute

// followWait is the wait of the watches' blocking queries, shorter than Consul's 5 minutes: a
// query on a connection whose server vanished without a word (a deleted pod's address) fails
// only at its wait plus --consul-timeout, and the watch then reconnects.
const followWait = 30 * time.Second

// following is Follow's state: one blocking-query watch per service and server, shared by
// every pod Listed asks about.
type following struct {
	ctx     context.Context
	changed func(service string)
	wg      sync.WaitGroup

	mu       sync.Mutex
	services map[string]*followed
	stopped  bool // no watch starts once Follow returns
}

// followed is one service's watches.
type followed struct {
	asked  time.Time
	cancel context.CancelFunc
	// answers holds each server's last passing instances; nil while a server has not answered
	// or its last query failed.
	answers [][]*api.ServiceEntry
}

// Follow lets Listed answer from watches, until ctx ends: the first Listed about a service starts
// one blocking query chain (health/service?passing, stale) per server, which stops once no Listed
// asked about the service for FollowIdle. changed is called, from the watches, when a service's
// answer may have changed; it must not block.
func (r *Registry) Follow(ctx context.Context, changed func(service string)) error {
	f := &following{ctx: ctx, changed: changed, services: map[string]*followed{}}
	r.followMu.Lock()
	if r.follow != nil {
		r.followMu.Unlock()
		return errors.New("consul: Follow is already running")
	}
	r.follow = f
	r.followMu.Unlock()
	defer func() {
		r.followMu.Lock()
		r.follow = nil
		r.followMu.Unlock()
		f.mu.Lock()
		f.stopped = true
		f.mu.Unlock()
		f.wg.Wait()
	}()
	t := time.NewTicker(FollowIdle / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			f.expire(now)
		}
	}
}

// Listed reports, from Follow's watches, whether any server lists the instance as passing.
// known is false while Follow is not running, until every server has answered, and while a
// server's queries fail. It does no I/O.
func (r *Registry) Listed(in registry.Instance) (listed, known bool) {
	if in.Service == "" {
		in.Service = r.cfg.Service
	}
	r.followMu.Lock()
	f := r.follow
	r.followMu.Unlock()
	if f == nil || in.Service == "" {
		return false, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false, false
	}
	s := f.services[in.Service]
	if s == nil {
		s = r.watch(f, in.Service)
	}
	s.asked = time.Now()
	known = true
	for _, entries := range s.answers {
		if entries == nil {
			known = false
			continue
		}
		listed = listed || slices.ContainsFunc(entries, func(e *api.ServiceEntry) bool {
			return r.match(in, e.Service.ID, e.Service.Address, e.Service.Meta)
		})
	}
	return listed, known
}

// watch starts the watches of a service; f.mu is held.
func (r *Registry) watch(f *following, service string) *followed {
	ctx, cancel := context.WithCancel(f.ctx)
	s := &followed{cancel: cancel, answers: make([][]*api.ServiceEntry, len(r.cfg.Servers))}
	f.services[service] = s
	for i, srv := range r.cfg.Servers {
		set := func(entries []*api.ServiceEntry) {
			f.mu.Lock()
			s.answers[i] = entries
			f.mu.Unlock()
			f.changed(service)
		}
		f.wg.Go(func() {
			var last uint64
			_ = consulwatch.Watch(ctx, consulwatch.Config{
				Options:  api.QueryOptions{AllowStale: true},
				WaitTime: followWait,
				OnError: func(err error, retryIn time.Duration) error {
					r.log.WarnContext(ctx, "following a service failed; retrying", "service", service, "server", i, "retryIn", retryIn.String(), "err", err)
					last = 0
					set(nil)
					return nil
				},
			}, consulwatch.Passing(srv.Health(), service), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
				if entries == nil {
					entries = []*api.ServiceEntry{} // answered: none passing
				}
				if meta.LastIndex != last {
					last = meta.LastIndex
					set(entries)
				}
				return false
			})
		})
	}
	return s
}

// expire stops the watches of services nobody asked about for FollowIdle.
func (f *following) expire(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, s := range f.services {
		if now.Sub(s.asked) >= FollowIdle {
			s.cancel()
			delete(f.services, name)
		}
	}
}
