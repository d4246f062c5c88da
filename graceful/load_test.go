package graceful_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/graceful"
)

// TestZeroFailedRequestsThroughDrainAndStop: two instances behind RetryTransport, 50 keep-alive
// clients (each its own connection pool). Instance a drains (as lastcall-prestop makes it), the
// registry change reaches the well-behaved callers (they stop choosing a), then a stops (SIGTERM)
// while ten requests are still in flight on it. Callers with a stale view keep choosing a through
// its stop, with idempotent requests only. No request may fail, every in-flight one must
// complete, and none may be processed twice.
func TestZeroFailedRequestsThroughDrainAndStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		h2   bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		t.Run(tc.name, func(t *testing.T) { loadThroughDrainAndStop(t, tc.h2) })
	}
}

// ledger counts, per request id, how many times a handler processed it.
type ledger struct {
	mu         sync.Mutex
	processed  map[string]int
	byInstance [2]int
}

func (l *ledger) record(id string, instance int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.processed[id]++
	l.byInstance[instance]++
}

// tryCounts counts, under the RetryTransport, the tries it had to retry.
type tryCounts struct{ marked, errored atomic.Int64 }

// countingTransport is a RetryTransport's base that counts marked answers and failed tries.
type countingTransport struct {
	base   http.RoundTripper
	counts *tryCounts
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		c.counts.errored.Add(1)
	} else if resp.Header.Get(graceful.MarkerHeader) != "" {
		c.counts.marked.Add(1)
	}
	return resp, err
}

func loadThroughDrainAndStop(t *testing.T, h2 bool) {
	const (
		clients, perClient = 50, 40
		held               = 10 // requests in flight on a when it stops
	)
	led := &ledger{processed: map[string]int{}}
	heldIn := make(chan struct{}, held)
	release := make(chan struct{}) // closed once a is stopping
	handler := func(instance int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-Id")
			body, _ := io.ReadAll(r.Body)
			if r.Method == http.MethodPost && string(body) != "order "+id {
				http.Error(w, "body lost on a retry: "+string(body), http.StatusBadRequest)
				return
			}
			if r.Header.Get("X-Hold") != "" {
				heldIn <- struct{}{}
				<-release
			} else {
				time.Sleep(time.Duration(1+len(id)%4) * time.Millisecond) // the work
			}
			led.record(id, instance)
			fmt.Fprint(w, instance)
		})
	}
	a := startInstance(t, handler(0), graceful.Config{StopTimeout: 10 * time.Second})
	b := startInstance(t, handler(1), graceful.Config{StopTimeout: 10 * time.Second})
	go func() {
		<-a.srv.Reached(graceful.Stopping)
		close(release)
	}()
	t.Cleanup(func() { a.srv.Shutdown() }) // releases held requests if the test fails early

	fresh := graceful.NewStatic(a.addr, b.addr) // what callers following the registry see
	stale := graceful.NewStatic(a.addr, b.addr) // what callers with a stale view see
	var retries tryCounts
	newClient := func(p graceful.Picker) *http.Client {
		tr := &http.Transport{Protocols: protocols(h2), MaxIdleConnsPerHost: 4}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: &graceful.RetryTransport{
			Base: countingTransport{base: tr, counts: &retries}, Picker: p, MaxTries: 4, Timeout: 15 * time.Second}}
	}
	var mu sync.Mutex
	var failures []string
	do := func(client *http.Client, method, id string, hold bool) string {
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("order " + id)
		}
		req, _ := http.NewRequest(method, "http://app/work", body)
		req.Header.Set("X-Request-Id", id)
		if hold {
			req.Header.Set("X-Hold", "1")
		}
		resp, err := client.Do(req)
		var got string
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			got = string(b)
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
			}
		}
		if err != nil {
			mu.Lock()
			failures = append(failures, id+": "+err.Error())
			mu.Unlock()
		}
		return got
	}

	// Requests held in flight on a from before the drain until its stop.
	onlyA := newClient(graceful.NewStatic(a.addr))
	heldBy := make([]string, held)
	var heldWG sync.WaitGroup
	for i := range held {
		method := []string{http.MethodGet, http.MethodPost}[i%2]
		heldWG.Go(func() { heldBy[i] = do(onlyA, method, "held-"+strconv.Itoa(i), true) })
	}
	for range held {
		<-heldIn
	}

	var completed atomic.Int64
	milestones := map[int64]chan struct{}{400: make(chan struct{}), 800: make(chan struct{}), 1200: make(chan struct{})}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			// Odd clients follow a stale registry view through a's stop, so they only send
			// what may be retried after a connection failure.
			staleView := c%2 == 1
			client := newClient(map[bool]graceful.Picker{false: fresh, true: stale}[staleView])
			for i := range perClient {
				method := http.MethodGet
				if !staleView && i%3 == 0 {
					method = http.MethodPost
				}
				do(client, method, strconv.Itoa(c)+"-"+strconv.Itoa(i), false)
				if ch, ok := milestones[completed.Add(1)]; ok {
					close(ch)
				}
			}
		})
	}

	<-milestones[400]
	if code, body := post(t, "http://"+a.srv.AdminAddr()+"/drain"); code != http.StatusOK || !strings.Contains(body, `"state":"draining"`) {
		t.Fatalf("POST /drain = %d %s", code, body)
	}
	if code, _, _ := get(t, "http://"+a.addr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("a's /readyz while draining = %d, want 503", code)
	}
	<-milestones[800]
	fresh.Set(b.addr) // the registries caught up: well-behaved callers stop choosing a
	<-milestones[1200]
	if n := a.srv.Status().InFlight; n < held {
		t.Errorf("a has %d requests in flight before its stop, want at least %d", n, held)
	}
	a.srv.Shutdown() // SIGTERM
	runErr := a.wait(t)
	wg.Wait()
	heldWG.Wait()

	if len(failures) > 0 {
		t.Errorf("%d failed requests, want 0; first: %v", len(failures), failures[:min(5, len(failures))])
	}
	if runErr != nil {
		t.Errorf("a did not stop cleanly: %v", runErr)
	}
	for i, got := range heldBy {
		if got != "0" {
			t.Errorf("held request %d answered %q, want a's 200", i, got)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	for id, n := range led.processed {
		if n != 1 {
			t.Errorf("request %s processed %d times", id, n)
		}
	}
	if want := clients*perClient + held; len(led.processed) != want {
		t.Errorf("%d requests processed, want %d", len(led.processed), want)
	}
	// Every request a accepted was processed to the end: none was cut by the stop.
	if st := a.srv.Status(); st.State != "stopped" || st.InFlight != 0 || st.RequestsTotal != uint64(led.byInstance[0]) {
		t.Errorf("a's final status %+v; its handlers processed %d", st, led.byInstance[0])
	}
	if led.byInstance[0] <= held || led.byInstance[1] == 0 {
		t.Errorf("load not shared: a=%d b=%d", led.byInstance[0], led.byInstance[1])
	}
	t.Logf("a processed %d, b %d; retried: %d marked answers, %d failed tries",
		led.byInstance[0], led.byInstance[1], retries.marked.Load(), retries.errored.Load())
}
