//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package graceful_test

import (
	"context"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// A service with one HTTP server and a database pool that must close after it. lastcall-prestop
// leaves the app 10 s after its hook (--reserve 10s); the in-flight wait gets what the rollback
// grace and the pool's budget leave of them.
func ExampleNew() {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		// r.Context() ends at the stop deadline: roll back, then say nothing happened.
		_ = r.Context()
	})
	srv, err := graceful.New(graceful.Config{
		Servers:     []*http.Server{{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 5 * time.Second}},
		GracePeriod: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	err = srv.Add(graceful.Component{
		Name:   "db",
		Stop:   func(ctx context.Context) error { return nil /* db.Close() */ },
		Budget: 2 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	// Run returns after SIGTERM, once everything stopped: exit 0 on nil.
	if err := srv.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
}

// A client that spreads requests over two instances and retries, elsewhere, what a stopping
// instance did not process, POSTs included.
func ExampleRetryTransport() {
	client := &http.Client{Transport: &graceful.RetryTransport{
		Picker:  graceful.NewStatic("10.0.0.1:8080", "10.0.0.2:8080"),
		Timeout: 5 * time.Second,
	}}
	resp, err := client.Post("http://orders/orders", "text/plain", strings.NewReader("item-1"))
	if err != nil {
		log.Print(err)
		return
	}
	defer resp.Body.Close()
}
