package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

type callConfig struct {
	endpoints   []string
	n, parallel int
}

func parseCall(args []string) (callConfig, error) {
	var c callConfig
	var endpoints string
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.StringVar(&endpoints, "endpoints", "127.0.0.1:50051", "comma-separated host:port of the instances")
	fs.IntVar(&c.n, "n", 1000, "orders to place")
	fs.IntVar(&c.parallel, "c", 20, "concurrent callers, sharing one ClientConn")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, e := range strings.Split(endpoints, ",") {
		if e = strings.TrimSpace(e); e != "" {
			c.endpoints = append(c.endpoints, e)
		}
	}
	switch {
	case len(c.endpoints) == 0:
		return c, errors.New("-endpoints is empty")
	case c.n <= 0 || c.parallel <= 0:
		return c, fmt.Errorf("-n %d -c %d: want positive numbers", c.n, c.parallel)
	}
	return c, nil
}

type summary struct {
	ok, failed int64
	firstErr   error
	took       time.Duration
}

func (s summary) String() string {
	if s.firstErr != nil {
		return fmt.Sprintf("%d orders placed, %d failed in %s; first failure: %v", s.ok, s.failed, s.took.Round(time.Millisecond), s.firstErr)
	}
	return fmt.Sprintf("%d orders placed, 0 failed in %s", s.ok, s.took.Round(time.Millisecond))
}

// call places n orders over the endpoints: round_robin, Retry.
func call(ctx context.Context, c callConfig) (summary, error) {
	r := manual.NewBuilderWithScheme("orders")
	var state resolver.State
	for _, e := range c.endpoints {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: e})
	}
	r.InitialState(state)
	retry := grpcgraceful.Retry{}
	cc, err := grpc.NewClient(r.Scheme()+":///orders",
		grpc.WithResolvers(r),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor()),
		grpc.WithChainStreamInterceptor(retry.StreamClientInterceptor()))
	if err != nil {
		return summary{}, err
	}
	defer cc.Close()

	var sum summary
	var next atomic.Int64
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range c.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(c.n) && ctx.Err() == nil; i = next.Add(1) {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := orders.Place(cctx, cc, fmt.Sprintf("item-%d", i))
				cancel()
				mu.Lock()
				if err != nil {
					sum.failed++
					if sum.firstErr == nil {
						sum.firstErr = err
					}
				} else {
					sum.ok++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sum.took = time.Since(start)
	if sum.failed > 0 {
		return sum, fmt.Errorf("%d of %d orders failed", sum.failed, sum.failed+sum.ok)
	}
	return sum, ctx.Err()
}
