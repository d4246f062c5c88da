package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/lastcall-dev/lastcall/graceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful"
	"github.com/lastcall-dev/lastcall/graceful/grpcgraceful/internal/orders"
)

type serveConfig struct {
	listen, admin      string
	work               time.Duration
	grace, signalDrain time.Duration
}

func parseServe(args []string) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:50051", "gRPC address")
	fs.StringVar(&c.admin, "admin", graceful.DefaultAdminAddr, "loopback address of the lastcall admin endpoint (- for none)")
	fs.DurationVar(&c.work, "work", 20*time.Millisecond, "how long an order takes")
	fs.DurationVar(&c.grace, "grace", 10*time.Second, "time from SIGTERM to SIGKILL: lastcall-prestop's --reserve, or terminationGracePeriodSeconds without it")
	fs.DurationVar(&c.signalDrain, "signal-drain", 5*time.Second, "without a preStop hook: how long to drain after the first SIGTERM")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.work <= 0 {
		return c, fmt.Errorf("-work %s: want a positive duration", c.work)
	}
	return c, nil
}

// newService wires the example service: a graceful.Server without HTTP servers, gRPC on it.
func newService(c serveConfig, log *slog.Logger) (*graceful.Server, *grpcgraceful.Server, error) {
	srv, err := graceful.New(graceful.Config{
		AdminAddr:   c.admin,
		GracePeriod: c.grace,
		SignalDrain: c.signalDrain,
		Logger:      log,
	})
	if err != nil {
		return nil, nil, err
	}
	g, err := grpcgraceful.New(srv, grpcgraceful.Config{Addr: c.listen, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	orders.Register(g, &service{g: g, work: c.work})
	return srv, g, nil
}

// service books orders. An order takes -work; when the stop deadline cancels it, it rolls back
// and says so with NotProcessed, so the caller's Retry places it elsewhere.
type service struct {
	g      *grpcgraceful.Server
	work   time.Duration
	booked atomic.Int64
}

func (s *service) Place(ctx context.Context, item *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	t := time.NewTimer(s.work)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, s.g.NotProcessed(ctx) // nothing was booked yet: safe to place elsewhere
	}
	return wrapperspb.String(fmt.Sprintf("order %d: %s", s.booked.Add(1), item.GetValue())), nil
}

// Follow sends an order's three updates.
func (s *service) Follow(item *wrapperspb.StringValue, stream grpc.ServerStreamingServer[wrapperspb.StringValue]) error {
	for _, st := range []string{"placed", "packed", "shipped"} {
		if err := stream.Send(wrapperspb.String(item.GetValue() + ": " + st)); err != nil {
			return err
		}
	}
	return nil
}
