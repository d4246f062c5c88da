package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

type callConfig struct {
	endpoints   []string
	n, parallel int
}

func parseCall(args []string) (callConfig, error) {
	var c callConfig
	var endpoints string
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.StringVar(&endpoints, "endpoints", "127.0.0.1:8080", "comma-separated host:port of the instances")
	fs.IntVar(&c.n, "n", 1000, "orders to place")
	fs.IntVar(&c.parallel, "c", 20, "concurrent callers, each with its own keep-alive connections")
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

// summary is what a call run reports.
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

// call places n orders (POST: not idempotent) through RetryTransport.
func call(ctx context.Context, c callConfig) (summary, error) {
	picker := graceful.NewStatic(c.endpoints...)
	var sum summary
	var next atomic.Int64
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for range c.parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 2}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: &graceful.RetryTransport{Base: tr, Picker: picker}}
			for i := next.Add(1); i <= int64(c.n) && ctx.Err() == nil; i = next.Add(1) {
				err := placeOrder(ctx, client, i)
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

func placeOrder(ctx context.Context, client *http.Client, i int64) error {
	// The host is a placeholder: RetryTransport puts the endpoint its Picker chose.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://orders/orders", strings.NewReader(fmt.Sprintf("item-%d", i)))
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("order %d: HTTP %d", i, resp.StatusCode)
	}
	return nil
}
