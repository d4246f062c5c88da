package consulwatch_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/lastcall-dev/lastcall/registry/consulwatch"
)

func TestNextIndex(t *testing.T) {
	tests := []struct {
		name      string
		prev, got uint64
		want      uint64
	}{
		{"first answer", 0, 42, 42},
		{"change", 42, 50, 50},
		{"wait expired", 50, 50, 50},
		{"backwards resets", 50, 7, 0},
		{"zero becomes one", 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := consulwatch.NextIndex(tt.prev, tt.got); got != tt.want {
				t.Errorf("NextIndex(%d, %d) = %d, want %d", tt.prev, tt.got, got, tt.want)
			}
		})
	}
}

// answer is what the fake query returns for one call.
type answer struct {
	index uint64
	err   error
}

// call is one query the watch made.
type call struct {
	at   time.Duration // since the watch started, on the bubble's clock
	opts *api.QueryOptions
}

// script answers the queries in order, then blocks until the query's context ends, as a
// blocking query on an unchanged index does. It runs inside a synctest bubble, so time is fake
// and the calls' times are exact.
type script struct {
	start   time.Time
	answers []answer
	calls   []call
	spent   chan struct{} // closed when the query after the last answer starts
}

func (s *script) query(opts *api.QueryOptions) (uint64, *api.QueryMeta, error) {
	s.calls = append(s.calls, call{at: time.Since(s.start), opts: opts})
	if len(s.calls) > len(s.answers) {
		if s.spent != nil {
			close(s.spent)
		}
		<-opts.Context().Done()
		return 0, nil, opts.Context().Err()
	}
	a := s.answers[len(s.calls)-1]
	if a.err != nil {
		return 0, nil, a.err
	}
	return a.index, &api.QueryMeta{LastIndex: a.index}, nil
}

// run watches s until its answers are spent and returns what the watch saw.
func (s *script) run(t *testing.T, cfg consulwatch.Config) (handled []uint64, errs []time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	s.start, s.spent = time.Now(), make(chan struct{})
	cfg.OnError = func(_ error, retryIn time.Duration) error {
		errs = append(errs, retryIn)
		return nil
	}
	done := make(chan error, 1)
	go func() {
		done <- consulwatch.Watch(ctx, cfg, s.query, func(index uint64, _ *api.QueryMeta) bool {
			handled = append(handled, index)
			return false
		})
	}()
	<-s.spent // time passes while this goroutine is blocked
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Watch = %v, want context.Canceled", err)
	}
	return handled, errs
}

func (s *script) waitIndexes() []uint64 {
	var out []uint64
	for _, c := range s.calls {
		out = append(out, c.opts.WaitIndex)
	}
	return out
}

func (s *script) times() []time.Duration {
	var out []time.Duration
	for _, c := range s.calls {
		out = append(out, c.at)
	}
	return out
}

var errUnavailable = errors.New("unexpected response code: 500 (No cluster leader)")

func TestWatchFollowsTheIndex(t *testing.T) {
	tests := []struct {
		name    string
		answers []answer
		want    []uint64 // WaitIndex of each query
	}{
		{"each query waits on the last index", []answer{{index: 5}, {index: 7}, {index: 7}, {index: 9}}, []uint64{0, 5, 7, 7, 9}},
		{"an index going backwards resets", []answer{{index: 10}, {index: 3}, {index: 4}}, []uint64{0, 10, 0, 4}},
		{"index zero becomes one", []answer{{index: 0}}, []uint64{0, 1}},
		{"an error keeps the index", []answer{{index: 8}, {err: errUnavailable}, {index: 9}}, []uint64{0, 8, 8, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{answers: tt.answers}
				s.run(t, consulwatch.Config{})
				if got := s.waitIndexes(); !equal(got, tt.want) {
					t.Errorf("wait indexes %v, want %v", got, tt.want)
				}
			})
		})
	}
}

func TestWatchHandlesEveryAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answers: []answer{{index: 5}, {err: errUnavailable}, {index: 5}, {index: 6}}}
		handled, _ := s.run(t, consulwatch.Config{})
		if want := []uint64{5, 5, 6}; !equal(handled, want) {
			t.Errorf("handled %v, want %v (an expired wait too, no error)", handled, want)
		}
	})
}

func TestWatchPacesQueries(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		cfg     consulwatch.Config
		answers []answer
		want    []time.Duration // start of each query
		retries []time.Duration // retryIn passed to OnError
	}{
		{
			name:    "answers without blocking are spaced by the minimum interval",
			answers: []answer{{index: 1}, {index: 2}, {index: 3}},
			want:    []time.Duration{0, 20 * ms, 40 * ms, 60 * ms},
		},
		{
			name:    "custom minimum interval",
			cfg:     consulwatch.Config{MinInterval: 100 * ms},
			answers: []answer{{index: 1}, {index: 2}},
			want:    []time.Duration{0, 100 * ms, 200 * ms},
		},
		{
			name:    "errors back off, doubling up to the maximum, and an answer resets the backoff",
			answers: []answer{{err: errUnavailable}, {err: errUnavailable}, {err: errUnavailable}, {err: errUnavailable}, {err: errUnavailable}, {err: errUnavailable}, {index: 1}, {err: errUnavailable}},
			want: []time.Duration{0, 100 * ms, 300 * ms, 700 * ms, 1500 * ms, 3100 * ms, 5100 * ms,
				5120 * ms, 5220 * ms},
			retries: []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 2000 * ms, 100 * ms},
		},
		{
			name:    "custom backoff",
			cfg:     consulwatch.Config{MinBackoff: time.Second, MaxBackoff: 3 * time.Second},
			answers: []answer{{err: errUnavailable}, {err: errUnavailable}, {err: errUnavailable}},
			want:    []time.Duration{0, time.Second, 3 * time.Second, 6 * time.Second},
			retries: []time.Duration{time.Second, 2 * time.Second, 3 * time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{answers: tt.answers}
				_, retries := s.run(t, tt.cfg)
				if got := s.times(); !equal(got, tt.want) {
					t.Errorf("queries at %v, want %v", got, tt.want)
				}
				if !equal(retries, tt.retries) {
					t.Errorf("retries in %v, want %v", retries, tt.retries)
				}
			})
		})
	}
}

// A query that blocked longer than the minimum interval is followed at once.
func TestWatchFollowsBlockedQueriesAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var starts []time.Duration
		start := time.Now()
		err := consulwatch.Watch(t.Context(), consulwatch.Config{}, func(opts *api.QueryOptions) (int, *api.QueryMeta, error) {
			starts = append(starts, time.Since(start))
			time.Sleep(time.Second) // blocked until a change
			return 0, &api.QueryMeta{LastIndex: opts.WaitIndex + 1}, nil
		}, func(_ int, meta *api.QueryMeta) bool { return meta.LastIndex == 3 })
		if err != nil {
			t.Fatal(err)
		}
		if want := []time.Duration{0, time.Second, 2 * time.Second}; !equal(starts, want) {
			t.Errorf("queries at %v, want %v", starts, want)
		}
	})
}

func TestWatchQueryOptions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &script{answers: []answer{{index: 3}}}
		s.run(t, consulwatch.Config{Options: api.QueryOptions{AllowStale: true, Datacenter: "dc2", WaitIndex: 99}, WaitTime: time.Minute})
		for i, c := range s.calls {
			if !c.opts.AllowStale || c.opts.Datacenter != "dc2" {
				t.Errorf("query %d lost the template's options: %+v", i, c.opts)
			}
			if c.opts.WaitTime != time.Minute {
				t.Errorf("query %d WaitTime %v, want 1m", i, c.opts.WaitTime)
			}
		}
		if got := s.waitIndexes(); !equal(got, []uint64{0, 3}) {
			t.Errorf("wait indexes %v, want [0 3]: the watch owns WaitIndex", got)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		s := &script{}
		s.run(t, consulwatch.Config{})
		if got := s.calls[0].opts.WaitTime; got != consulwatch.DefaultWaitTime {
			t.Errorf("default WaitTime %v, want %v", got, consulwatch.DefaultWaitTime)
		}
	})
}

func TestWatchEnds(t *testing.T) {
	stopErr := errors.New("stop")
	tests := []struct {
		name    string
		answers []answer
		onError func(error, time.Duration) error
		done    func(index uint64) bool
		want    error
	}{
		{"handler done", []answer{{index: 1}, {index: 2}}, nil, func(i uint64) bool { return i == 2 }, nil},
		{"OnError stops", []answer{{index: 1}, {err: errUnavailable}}, func(err error, _ time.Duration) error {
			return errors.Join(stopErr, err)
		}, func(uint64) bool { return false }, stopErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &script{start: time.Now(), answers: tt.answers}
				err := consulwatch.Watch(t.Context(), consulwatch.Config{OnError: tt.onError}, s.query,
					func(index uint64, _ *api.QueryMeta) bool { return tt.done(index) })
				if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Errorf("Watch = %v, want %v", err, tt.want)
				}
				if tt.want != nil && !errors.Is(err, errUnavailable) {
					t.Errorf("Watch = %v, want the query's error", err)
				}
				if len(s.calls) != len(tt.answers) {
					t.Errorf("%d queries, want %d", len(s.calls), len(tt.answers))
				}
			})
		})
	}
}

// The context ends the watch wherever it waits: in a query, in the backoff, in the pacing.
func TestWatchCancel(t *testing.T) {
	tests := []struct {
		name    string
		answers []answer
	}{
		{"in a blocking query", []answer{{index: 1}}},
		{"in the backoff", []answer{{err: errUnavailable}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				s := &script{start: time.Now(), answers: tt.answers}
				done := make(chan error, 1)
				go func() {
					done <- consulwatch.Watch(ctx, consulwatch.Config{MinBackoff: time.Hour}, s.query, func(uint64, *api.QueryMeta) bool { return false })
				}()
				synctest.Wait()
				cancel()
				synctest.Wait()
				select {
				case err := <-done:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Watch = %v, want context.Canceled", err)
					}
				default:
					t.Fatal("Watch still running after its context ended")
				}
			})
		})
	}
}

func TestWatchNoMetadataIsAnError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var got error
		err := consulwatch.Watch(t.Context(), consulwatch.Config{OnError: func(err error, _ time.Duration) error { got = err; return err }},
			func(*api.QueryOptions) (int, *api.QueryMeta, error) { return 0, nil, nil },
			func(int, *api.QueryMeta) bool { t.Error("handled an answer without metadata"); return true })
		if err == nil || !errors.Is(err, got) {
			t.Errorf("Watch = %v, OnError saw %v; want the same error", err, got)
		}
	})
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
