package graceful

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
)

// ErrNoEndpoint is returned by a Picker that has no endpoint to offer.
var ErrNoEndpoint = errors.New("graceful: no endpoint available")

// Picker chooses the endpoint (host:port) for one try of a request, avoiding those already tried
// for it when it can. Implementations must be safe for concurrent use.
type Picker interface {
	Pick(tried []string) (string, error)
}

// Static is a Picker over a list of endpoints, round robin; Set replaces the list (say, from a
// registry watch of your own).
type Static struct {
	mu    sync.RWMutex
	hosts []string
	next  atomic.Uint64
}

var _ Picker = (*Static)(nil)

// NewStatic returns a Picker over hosts.
func NewStatic(hosts ...string) *Static {
	s := &Static{}
	s.Set(hosts...)
	return s
}

// Set replaces the endpoints.
func (s *Static) Set(hosts ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts = slices.Clone(hosts)
}

// Pick implements Picker.
func (s *Static) Pick(tried []string) (string, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return RoundRobin(s.hosts, tried, &s.next)
}

// RoundRobin picks from hosts in turn (next is the shared turn counter), skipping tried ones
// while any other is left; for Picker implementations.
func RoundRobin(hosts, tried []string, next *atomic.Uint64) (string, error) {
	if len(hosts) == 0 {
		return "", ErrNoEndpoint
	}
	start := next.Add(1)
	for i := range uint64(len(hosts)) {
		h := hosts[(start+i)%uint64(len(hosts))]
		if !slices.Contains(tried, h) {
			return h, nil
		}
	}
	return hosts[start%uint64(len(hosts))], nil
}
