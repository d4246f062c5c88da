//go:build go1.25

// The package needs Go 1.22; this test also uses sync.WaitGroup.Go from Go 1.25.

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
// clients, each with its own connection pool, sending GETs and POSTs. Instance a drains (as
// lastcall-prestop makes it); half of the callers move off a (its drain hint, then the registry
// change); then a stops (SIGTERM) while ten requests are still in flight on it. The other half
// ignores the hint and keeps choosing a during its stop, served there while a's in-flight requests
// keep it waiting (late requests that can finish before its deadline), until it learns too; then
// a's in-flight requests end and it closes. No request may fail, every in-flight one must
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

// tryCounts counts, under the RetryTransports, the tries they had to retry.
type tryCounts struct {
	marked, errored atomic.Int64
}

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
		clients   = 50
		maxPerRun = 400 // bound on each client's loop
		held      = 10  // requests in flight on a when it stops
	)
	led := &ledger{processed: map[string]int{}}
	heldIn := make(chan struct{}, held)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseHeld := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(releaseHeld) // if the test fails early
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

	fresh := graceful.NewStatic(a.addr, b.addr) // callers following the registry
	stale := graceful.NewStatic(a.addr, b.addr) // callers that learn late
	retries := &tryCounts{}
	newClient := func(p graceful.Picker, avoidFor time.Duration) *http.Client {
		tr := &http.Transport{Protocols: protocols(h2), MaxIdleConnsPerHost: 4}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: &graceful.RetryTransport{
			Base: countingTransport{base: tr, counts: retries}, Picker: p, MaxTries: 4, Timeout: 15 * time.Second, AvoidFor: avoidFor}}
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

	// Requests held in flight on a from before the drain until after its stop began.
	onlyA := newClient(graceful.NewStatic(a.addr), 0)
	heldBy := make([]string, held)
	var heldWG sync.WaitGroup
	for i := range held {
		method := []string{http.MethodGet, http.MethodPost}[i%2]
		heldWG.Go(func() { heldBy[i] = do(onlyA, method, "held-"+strconv.Itoa(i), true) })
	}
	for range held {
		<-heldIn
	}

	var sent, completed atomic.Int64
	milestones := map[int64]chan struct{}{300: make(chan struct{}), 600: make(chan struct{}), 900: make(chan struct{})}
	stopLoad := make(chan struct{})
	// learned is set once the late callers' picker dropped a; caughtUp then counts the clients
	// that started a request since, so none is still on its way to a with an older choice.
	var learned atomic.Bool
	var caughtUp sync.WaitGroup
	caughtUp.Add(clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			// Late callers also ignore the drain hint (AvoidFor < 0), like a caller that is
			// not a RetryTransport would: they keep coming until a's stop turns them away.
			late := c%2 == 1
			client := newClient(map[bool]graceful.Picker{false: fresh, true: stale}[late], map[bool]time.Duration{false: 0, true: -1}[late])
			var once sync.Once
			defer once.Do(caughtUp.Done)
			for i := range maxPerRun {
				select {
				case <-stopLoad:
					return
				default:
				}
				if learned.Load() {
					once.Do(caughtUp.Done)
				}
				method := http.MethodGet
				if i%3 == 0 {
					method = http.MethodPost
				}
				sent.Add(1)
				do(client, method, strconv.Itoa(c)+"-"+strconv.Itoa(i), false)
				if ch, ok := milestones[completed.Add(1)]; ok {
					close(ch)
				}
			}
		})
	}
	awaitCh := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(20 * time.Second):
			t.Fatalf("timed out waiting for %s; failures so far: %d", what, len(failures))
		}
	}

	awaitCh(milestones[300], "300 requests")
	if code, body := post(t, "http://"+a.srv.AdminAddr()+"/drain"); code != http.StatusOK || !strings.Contains(body, `"state":"draining"`) {
		t.Fatalf("POST /drain = %d %s", code, body)
	}
	if code, _, _ := get(t, "http://"+a.addr+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("a's /readyz while draining = %d, want 503", code)
	}
	awaitCh(milestones[600], "600 requests")
	fresh.Set(b.addr) // the registries caught up for half of the callers
	awaitCh(milestones[900], "900 requests")
	if n := a.srv.Status().InFlight; n < held {
		t.Errorf("a has %d requests in flight before its stop, want at least %d", n, held)
	}
	a.srv.Shutdown() // SIGTERM
	eventually(t, "late requests served by the stopping a", func() bool { return a.srv.Status().LateServed >= 20 })
	stale.Set(b.addr) // the late callers learn too; a's in-flight requests then end
	learned.Store(true)
	caughtUp.Wait()
	releaseHeld()
	runErr := a.wait(t)
	close(stopLoad)
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
	if want := int(sent.Load()) + held; len(led.processed) != want {
		t.Errorf("%d requests processed, want the %d sent", len(led.processed), want)
	}
	// Every request a accepted was processed to the end: none was cut by the stop.
	if st := a.srv.Status(); st.State != "stopped" || st.InFlight != 0 || st.RequestsTotal != uint64(led.byInstance[0]) {
		t.Errorf("a's final status %+v; its handlers processed %d", st, led.byInstance[0])
	}
	if led.byInstance[0] <= held || led.byInstance[1] == 0 {
		t.Errorf("load not shared: a=%d b=%d", led.byInstance[0], led.byInstance[1])
	}
	st := a.srv.Status()
	t.Logf("%d requests: a processed %d (%d late, while stopping), b %d; retried %d marked answers and %d failed tries",
		sent.Load()+held, led.byInstance[0], st.LateServed, led.byInstance[1], retries.marked.Load(), retries.errored.Load())
}
