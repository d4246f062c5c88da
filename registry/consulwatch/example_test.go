package consulwatch_test

import (
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

// Follow a service's passing instances until ctx ends, logging failed queries.
func ExampleWatch() {
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = consulwatch.Watch(ctx, consulwatch.Config{
		Options: api.QueryOptions{AllowStale: true},
		OnError: func(err error, retryIn time.Duration) error {
			slog.Warn("consul query failed, keeping the last list", "err", err, "retryIn", retryIn)
			return nil
		},
	}, consulwatch.Passing(client.Health(), "web"), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
		slog.Info("passing instances", "count", len(entries), "index", meta.LastIndex)
		return false
	})
}

// Wait until every removed instance is gone at or after a known raft index, failing on the first
// error: the shape of registry/consul's AwaitPropagated.
func ExampleWatch_confirm() {
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	removed, atLeast := "web-7f9c", uint64(1234)
	err = consulwatch.Watch(context.Background(), consulwatch.Config{
		Options: api.QueryOptions{AllowStale: true},
		OnError: func(err error, _ time.Duration) error { return err },
	}, consulwatch.Passing(client.Health(), "web"), func(entries []*api.ServiceEntry, meta *api.QueryMeta) bool {
		for _, e := range entries {
			if e.Service.ID == removed {
				return false
			}
		}
		return meta.LastIndex >= atLeast
	})
	if err != nil {
		slog.Error("not confirmed", "err", err)
	}
}
