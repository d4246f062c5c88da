package graceful_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// instance is one app replica on loopback.
type instance struct {
	name string
	srv  *graceful.Server
	addr string
	done chan error
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func protocols(h2 bool) *http.Protocols {
	p := new(http.Protocols)
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return p
}

func startInstance(t *testing.T, name string, h2 bool, h http.Handler, cfg graceful.Config) *instance {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := protocols(h2)
	p.SetHTTP1(true) // the server speaks both; the client picks
	httpSrv := &http.Server{Handler: h, Protocols: p, ReadHeaderTimeout: 5 * time.Second}
	cfg.Servers, cfg.Listeners = []*http.Server{httpSrv}, []net.Listener{ln}
	if cfg.AdminAddr == "" {
		cfg.AdminAddr = "127.0.0.1:0"
	}
	cfg.Signals = []os.Signal{} // the test process's own signals are not the instance's
	cfg.Logger = quietLogger()
	s, err := graceful.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &instance{name: name, srv: s, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { in.done <- s.Run(context.Background()) }()
	t.Cleanup(func() {
		s.Shutdown()
		if err := <-in.done; err != nil {
			t.Errorf("instance %s: %v", name, err)
		}
	})
	awaitState(t, s, graceful.Running)
	return in
}

func awaitState(t *testing.T, s *graceful.Server, want graceful.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %s, want %s", s.State(), want)
		}
		time.Sleep(time.Millisecond) // Run starts asynchronously; there is no event to wait on
	}
}

// TestZeroFailedRequestsThroughDrainAndStop: two instances behind RetryTransport, 50 keep-alive
// clients; one instance drains (as lastcall-prestop would make it), callers then stop picking it
// (registry propagation), then it stops (SIGTERM). No request may fail, and none may be
// processed twice.
func TestZeroFailedRequestsThroughDrainAndStop(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			var processed sync.Map // request id → *atomic.Int32
			var byInstance [2]atomic.Int64
			handler := func(i int) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					id := r.Header.Get("X-Request-Id")
					_, _ = io.Copy(io.Discard, r.Body)
					time.Sleep(time.Duration(2+len(id)%8) * time.Millisecond) // in flight for a while
					n, _ := processed.LoadOrStore(id, new(atomic.Int32))
					n.(*atomic.Int32).Add(1)
					byInstance[i].Add(1)
					fmt.Fprintf(w, "%d", i)
				})
			}
			a := startInstance(t, "a", h2, handler(0), graceful.Config{StopTimeout: 5 * time.Second})
			b := startInstance(t, "b", h2, handler(1), graceful.Config{StopTimeout: 5 * time.Second})
			picker := graceful.NewStatic(a.addr, b.addr)

			const clients, perClient = 50, 60
			var completed atomic.Int64
			var failures []string
			var mu sync.Mutex
			milestones := map[int64]chan struct{}{500: make(chan struct{}), 1000: make(chan struct{}), 1500: make(chan struct{})}
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					tr := &http.Transport{Protocols: protocols(h2), MaxIdleConnsPerHost: 4}
					defer tr.CloseIdleConnections()
					client := &http.Client{Transport: &graceful.RetryTransport{Base: tr, Picker: picker, MaxTries: 4}}
					for i := range perClient {
						id := strconv.Itoa(c) + "-" + strconv.Itoa(i)
						method, body := http.MethodGet, io.Reader(nil)
						if i%3 == 0 {
							method, body = http.MethodPost, strings.NewReader("order "+id)
						}
						req, _ := http.NewRequest(method, "http://app/work", body)
						req.Header.Set("X-Request-Id", id)
						resp, err := client.Do(req)
						if err == nil {
							_, _ = io.Copy(io.Discard, resp.Body)
							_ = resp.Body.Close()
							if resp.StatusCode != http.StatusOK {
								err = fmt.Errorf("HTTP %d", resp.StatusCode)
							}
						}
						if err != nil {
							mu.Lock()
							failures = append(failures, id+": "+err.Error())
							mu.Unlock()
						}
						if ch, ok := milestones[completed.Add(1)]; ok {
							close(ch)
						}
					}
				})
			}
			<-milestones[500]
			drainResp, err := http.Post("http://"+a.srv.AdminAddr()+"/drain", "", nil)
			if err != nil {
				t.Fatal(err)
			}
			drainResp.Body.Close()
			<-milestones[1000]
			picker.Set(b.addr) // the registries have caught up: callers stop choosing a
			<-milestones[1500]
			a.srv.Shutdown()
			runErr := <-a.done
			a.done <- runErr // for the cleanup
			wg.Wait()

			if len(failures) > 0 {
				t.Errorf("%d failed requests, want 0; first: %v", len(failures), failures[:min(5, len(failures))])
			}
			if runErr != nil {
				t.Errorf("instance a did not stop cleanly (in-flight requests cut): %v", runErr)
			}
			total := 0
			processed.Range(func(k, v any) bool {
				total++
				if n := v.(*atomic.Int32).Load(); n != 1 {
					t.Errorf("request %s processed %d times", k, n)
				}
				return true
			})
			if total != clients*perClient {
				t.Errorf("%d requests processed, want %d", total, clients*perClient)
			}
			if byInstance[0].Load() == 0 || byInstance[1].Load() == 0 {
				t.Errorf("load not shared: a=%d b=%d", byInstance[0].Load(), byInstance[1].Load())
			}
			t.Logf("a served %d, b served %d", byInstance[0].Load(), byInstance[1].Load())
		})
	}
}
