//go:build go1.24

// The package needs Go 1.22; its tests use net/http's Protocols (h2c), slog.DiscardHandler
// and testing.B.Loop from Go 1.24.

package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

func TestBadArguments(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"deploy"}, `unknown command "deploy"`},
		{[]string{"serve", "-work", "0s"}, "-work 0s"},
		{[]string{"serve", "-admin", "0.0.0.0:9901"}, "not a loopback address"},
		{[]string{"serve", "-grace", "5s", "-signal-drain", "5s"}, "leaves no time"},
		{[]string{"call", "-endpoints", ""}, "-endpoints is empty"},
		{[]string{"call", "-c", "0"}, "want positive numbers"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// Two instances of the example service and its caller: one instance drains under load, and the
// caller places every order.
func TestExampleServesThroughADrain(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var instances []*graceful.Server
	var done []chan error
	for _, internal := range []string{"127.0.0.1:0", "-"} {
		cfg, err := parseServe([]string{"-listen", "127.0.0.1:0", "-internal", internal, "-admin", "127.0.0.1:0", "-work", "2ms"})
		if err != nil {
			t.Fatal(err)
		}
		srv, err := newService(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() { ch <- srv.Run(ctx) }()
		<-srv.Reached(graceful.Running)
		instances, done = append(instances, srv), append(done, ch)
	}
	a, b := instances[0], instances[1]

	called := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		called <- run(ctx, []string{"call", "-endpoints", a.Addrs()[0] + "," + b.Addrs()[0], "-n", "400", "-c", "20"}, &out, nil)
	}()
	resp, err := http.Post("http://"+a.AdminAddr()+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case err := <-called:
		if err != nil || !strings.HasPrefix(out.String(), "400 orders placed, 0 failed") {
			t.Errorf("call: %v; %s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("call did not finish")
	}
	if a.State() != graceful.Draining || b.State() != graceful.Running {
		t.Errorf("states %s, %s; want draining, running", a.State(), b.State())
	}
	resp, err = http.Get("http://" + a.Addrs()[1] + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("internal server: %d", resp.StatusCode)
	}
	cancel()
	for i, ch := range done {
		if err := <-ch; err != nil {
			t.Errorf("instance %d: %v", i, err)
		}
	}
}
