package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

type serveConfig struct {
	listen, internal, admin string
	work                    time.Duration
	grace, signalDrain      time.Duration
}

func parseServe(args []string) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&c.listen, "listen", "127.0.0.1:8080", "public API address")
	fs.StringVar(&c.internal, "internal", "127.0.0.1:8090", "internal server address (- for none)")
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

// newService wires the example service: the handlers, the servers and a component.
func newService(c serveConfig, log *slog.Logger) (*graceful.Server, error) {
	servers := []*http.Server{{Addr: c.listen, ReadHeaderTimeout: 5 * time.Second}}
	if c.internal != "-" {
		internal := http.NewServeMux()
		internal.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello\n") })
		servers = append(servers, &http.Server{Addr: c.internal, Handler: internal, ReadHeaderTimeout: 5 * time.Second})
	}
	srv, err := graceful.New(graceful.Config{
		Servers:     servers,
		AdminAddr:   c.admin,
		GracePeriod: c.grace,
		SignalDrain: c.signalDrain,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	ledger := &ledger{}
	servers[0].Handler = api(srv, ledger, c.work)
	if err := srv.Add(ledger.component(log)); err != nil {
		return nil, err
	}
	return srv, nil
}

// api serves the public endpoints. An order takes -work; when the stop deadline cancels it, it
// rolls back and says so with NotProcessed, so the caller's RetryTransport places it elsewhere.
func api(srv *graceful.Server, l *ledger, work time.Duration) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(work):
		case <-r.Context().Done():
			srv.NotProcessed(w) // nothing was booked yet: safe to place elsewhere
			return
		}
		n := l.book()
		fmt.Fprintf(w, "order %d: %s\n", n, body)
	})
	mux.HandleFunc("GET /orders/count", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d\n", l.booked.Load())
	})
	return mux
}

// ledger stands for the state a real service would flush on its way out.
type ledger struct {
	booked  atomic.Int64
	flushed atomic.Int64
}

func (l *ledger) book() int64 { return l.booked.Add(1) }

// component flushes the ledger in the background, and once more when stopping: it stops after the
// HTTP servers, so no order is booked after its last flush.
func (l *ledger) component(log *slog.Logger) graceful.Component {
	stop, done := make(chan struct{}), make(chan struct{})
	flush := func() { l.flushed.Store(l.booked.Load()) }
	return graceful.Component{
		Name:   "ledger",
		Budget: 2 * time.Second,
		Start: func(context.Context) error {
			go func() {
				defer close(done)
				tick := time.NewTicker(time.Second)
				defer tick.Stop()
				for {
					select {
					case <-tick.C:
						flush()
					case <-stop:
						return
					}
				}
			}()
			return nil
		},
		Stop: func(ctx context.Context) error {
			close(stop)
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
			flush()
			log.Info("ledger flushed", "orders", l.flushed.Load())
			return nil
		},
	}
}
