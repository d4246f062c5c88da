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

// Two instances of the example service and its caller: one instance drains, then stops, under
// load, and the caller places every order.
func TestExampleServesThroughADrainAndStop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var instances []*graceful.Server
	var addrs []string
	var done []chan error
	for range 2 {
		cfg, err := parseServe([]string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-work", "2ms"})
		if err != nil {
			t.Fatal(err)
		}
		srv, g, err := newService(cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		go func() { ch <- srv.Run(ctx) }()
		<-srv.Reached(graceful.Running)
		instances, addrs, done = append(instances, srv), append(addrs, g.Addr()), append(done, ch)
	}
	a := instances[0]

	called := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		called <- run(ctx, []string{"call", "-endpoints", strings.Join(addrs, ","), "-n", "2000", "-c", "20"}, &out, nil)
	}()
	resp, err := http.Post("http://"+a.AdminAddr()+"/drain", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	a.Shutdown()
	if err := <-done[0]; err != nil {
		t.Errorf("instance a: %v", err)
	}
	select {
	case err := <-called:
		if err != nil || !strings.HasPrefix(out.String(), "2000 orders placed, 0 failed") {
			t.Errorf("call: %v; %s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("call did not finish")
	}
	cancel()
	if err := <-done[1]; err != nil {
		t.Errorf("instance b: %v", err)
	}
}
