// Command smokeapp is the workload of the kind smoke suite (e2e/smoke), one static binary in an
// image FROM scratch, so it brings its own client and hook:
//
//	smokeapp serve [-listen :8080]   HTTP server: "/" answers "hello from $POD_NAME", one log line per request
//	smokeapp prestop                 preStop exec hook: writes a line to /proc/1/fd/1 (the server's stdout)
//	smokeapp get [-n N] URL          N requests, each on a new connection; prints each answer
//	smokeapp resolve NAME            prints NAME's addresses (Go's resolver, the pod's resolv.conf)
//	smokeapp sleep                   idles until SIGTERM (a client pod to exec into)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		log.Fatal("usage: smokeapp serve|prestop|get|resolve|sleep ...")
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "prestop":
		err = prestop()
	case "get":
		err = get(args)
	case "resolve":
		err = resolve(args)
	case "sleep":
		waitForSignal()
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		log.Fatalf("smokeapp: %v", err)
	}
}

func waitForSignal() os.Signal {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	return <-sig
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":8080", "listen address")
	_ = fs.Parse(args)
	pod := os.Getenv("POD_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("request %s %s from %s\n", r.Method, r.URL.Path, r.RemoteAddr)
		fmt.Fprintf(w, "hello from %s\n", pod)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Printf("serving on %s as %s\n", *listen, pod)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case s := <-sig:
		fmt.Printf("received %v, shutting down\n", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	fmt.Println("stopped")
	return nil
}

// prestop runs as the container's preStop exec hook. The kubelet discards a hook's output, so it
// writes to the stdout of the container's PID 1 (the server), which `kubectl logs` shows.
func prestop() error {
	out, err := os.OpenFile("/proc/1/fd/1", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		out = os.Stderr
	} else {
		defer out.Close()
	}
	_, err = fmt.Fprintf(out, "prestop hook ran in %s at %s\n", os.Getenv("POD_NAME"), time.Now().UTC().Format(time.RFC3339Nano))
	return err
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	n := fs.Int("n", 1, "number of requests")
	timeout := fs.Duration("timeout", 3*time.Second, "per request")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("usage: smokeapp get [-n N] URL")
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{DisableKeepAlives: true}}
	failed := 0
	for i := 0; i < *n; i++ {
		resp, err := client.Get(fs.Arg(0))
		if err != nil {
			fmt.Printf("error: %v\n", err)
			failed++
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			fmt.Printf("error: status %d, %v\n", resp.StatusCode, err)
			failed++
			continue
		}
		fmt.Print(strings.TrimSpace(string(body)) + "\n")
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, *n)
	}
	return nil
}

func resolve(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: smokeapp resolve NAME")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, args[0])
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}
