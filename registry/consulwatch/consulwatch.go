// Package consulwatch follows a Consul blocking query the way Consul documents that clients
// should: each query waits on the index of the previous answer, an index that goes backwards
// resets the watch, an index of 0 is treated as 1, answers that come back without blocking are
// spaced by a minimum interval so that a fast-changing index cannot spin, and failed queries are
// retried with exponential backoff. It depends on github.com/hashicorp/consul/api only, so
// callers outside the controller (graceful/consulpick, the e2e load generator) can use it.
//
// A watch that must confirm a state rather than follow it, as registry/consul's AwaitPropagated
// does, returns true from its handler once the state is reached and stops on the first error
// through OnError:
//
//	err := consulwatch.Watch(ctx, consulwatch.Config{
//		Options: api.QueryOptions{AllowStale: true},
//		OnError: func(err error, _ time.Duration) error { return err },
//	}, consulwatch.Passing(srv.Health(), name), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
//		return meta.LastIndex >= index && !listsAny(entries, removed)
//	})
package consulwatch

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/consul/api"
)

// Defaults for Config's zero fields.
const (
	// DefaultWaitTime is how long one query blocks (Consul caps it at 10 minutes).
	DefaultWaitTime = 5 * time.Minute
	// DefaultMinInterval spaces the starts of consecutive queries.
	DefaultMinInterval = 20 * time.Millisecond
	// DefaultMinBackoff is the first delay after a failed query; it doubles up to DefaultMaxBackoff.
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 2 * time.Second
)

// Query runs one blocking query with opts, which carries the wait index, the wait time and the
// watch's context.
type Query[T any] func(opts *api.QueryOptions) (T, *api.QueryMeta, error)

// Passing queries the passing instances of a service (health/service?passing).
func Passing(health *api.Health, service string) Query[[]*api.ServiceEntry] {
	return func(opts *api.QueryOptions) ([]*api.ServiceEntry, *api.QueryMeta, error) {
		return health.Service(service, "", true, opts)
	}
}

// Config tunes a watch. The zero value follows forever with the defaults.
type Config struct {
	// Options is copied into every query (AllowStale, Datacenter, Token, Filter, ...). Watch
	// sets WaitIndex, WaitTime and the context itself.
	Options api.QueryOptions
	// WaitTime caps how long one query blocks; DefaultWaitTime when zero.
	WaitTime time.Duration
	// MinInterval is the least time between the starts of two queries; DefaultMinInterval when
	// zero.
	MinInterval time.Duration
	// MinBackoff and MaxBackoff bound the delay after a failed query, which doubles with each
	// consecutive failure; DefaultMinBackoff and DefaultMaxBackoff when zero.
	MinBackoff, MaxBackoff time.Duration
	// OnError, when set, sees every failed query (not the end of the watch's context) and the
	// delay before the next one. A non-nil return ends the watch with that error; nil retries.
	OnError func(err error, retryIn time.Duration) error
}

// errNoMeta stands for a query that returned neither metadata nor an error.
var errNoMeta = errors.New("consulwatch: query returned no metadata")

// Watch runs query as a chain of blocking queries and calls handle with every answer, including
// one whose wait expired without a change (its meta.LastIndex is then unchanged). It returns
// nil once handle returns true, ctx.Err() once ctx ends, or the error OnError returned.
func Watch[T any](ctx context.Context, cfg Config, query Query[T], handle func(result T, meta *api.QueryMeta) (done bool)) error {
	cfg = cfg.withDefaults()
	var index uint64
	backoff := cfg.MinBackoff
	for {
		started := time.Now()
		opts := cfg.Options
		opts.WaitIndex, opts.WaitTime = index, cfg.WaitTime
		result, meta, err := query(opts.WithContext(ctx))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && meta == nil {
			err = errNoMeta
		}
		pause := cfg.MinInterval - time.Since(started)
		if err != nil {
			if cfg.OnError != nil {
				if stop := cfg.OnError(err, backoff); stop != nil {
					return stop
				}
			}
			pause, backoff = backoff, min(2*backoff, cfg.MaxBackoff)
		} else {
			backoff = cfg.MinBackoff
			if handle(result, meta) {
				return nil
			}
			index = NextIndex(index, meta.LastIndex)
		}
		if err := sleep(ctx, pause); err != nil {
			return err
		}
	}
}

// NextIndex is the wait index for the query after an answer at index got, given the query
// waited on prev: an index that went backwards (a restarted agent, a restored snapshot) resets
// the watch to 0, and an index of 0, which would make the next query return at once, becomes 1.
func NextIndex(prev, got uint64) uint64 {
	if got < prev {
		return 0
	}
	return max(got, 1)
}

func (c Config) withDefaults() Config {
	if c.WaitTime <= 0 {
		c.WaitTime = DefaultWaitTime
	}
	if c.MinInterval <= 0 {
		c.MinInterval = DefaultMinInterval
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	c.MaxBackoff = max(c.MaxBackoff, c.MinBackoff)
	return c
}

// sleep waits d, or returns ctx.Err() when ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
