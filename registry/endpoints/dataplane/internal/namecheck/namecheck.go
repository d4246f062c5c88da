// Package namecheck keeps what a targeted probe knows about kube-proxy's chain names: per IP
// family, when the ruleset last confirmed the formulas for service chains and for endpoint
// chains, and whether a mismatch turned targeted reads off for good.
package namecheck

import (
	"sync"
	"time"

	"github.com/lastcall-dev/lastcall/registry/endpoints/dataplane"
)

// Recheck is how long a confirmation holds: kube-proxy restarted with another version is the
// only thing that changes the names.
const Recheck = 10 * time.Minute

// Checks is safe for concurrent use.
type Checks struct {
	// Now is the clock; tests replace it before first use.
	Now func() time.Time

	mu        sync.Mutex
	confirmed map[dataplane.Family]confirmedAt
	broken    string
}

type confirmedAt struct{ services, endpoints time.Time }

// Fresh says which formulas the ruleset confirmed within Recheck.
type Fresh struct{ Services, Endpoints bool }

// New returns Checks with nothing confirmed.
func New() *Checks {
	return &Checks{Now: time.Now, confirmed: map[dataplane.Family]confirmedAt{}}
}

// Fresh returns which formulas were confirmed for family within Recheck.
func (c *Checks) Fresh(family dataplane.Family) Fresh {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.confirmed[family]
	now := c.Now()
	fresh := func(ts time.Time) bool { return !ts.IsZero() && now.Sub(ts) < Recheck }
	return Fresh{Services: fresh(at.services), Endpoints: fresh(at.endpoints)}
}

// Confirm notes that the ruleset of family confirmed the service chain formula, the endpoint
// chain formula, or both, now.
func (c *Checks) Confirm(family dataplane.Family, services, endpoints bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.confirmed[family]
	if services {
		at.services = c.Now()
	}
	if endpoints {
		at.endpoints = c.Now()
	}
	c.confirmed[family] = at
}

// Disable turns targeted reads off for good because of mismatch, and returns why, as Broken
// will.
func (c *Checks) Disable(mismatch string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.broken = "kube-proxy names its chains unlike v1.37 (" + mismatch + "): targeted reads are off"
	return c.broken
}

// Broken says why targeted reads are off; "" while they are on.
func (c *Checks) Broken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.broken
}
