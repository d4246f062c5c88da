package prestop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// AppStatus is what the app's admin endpoint (graceful library) reports at GET /status.
type AppStatus struct {
	State         string `json:"state"`
	InFlight      int64  `json:"inFlight"`
	RequestsTotal uint64 `json:"requestsTotal"`
	LastRequest   string `json:"lastRequest"`
}

// AppAdmin talks to the app's admin endpoint.
type AppAdmin struct {
	Base   string // e.g. http://127.0.0.1:9901
	Client *http.Client
}

// NewAppAdmin returns a client whose every call is short: the admin endpoint is on loopback,
// and a slow one must not eat the drain budget.
func NewAppAdmin(base string) *AppAdmin {
	return &AppAdmin{Base: base, Client: &http.Client{Timeout: 2 * time.Second}}
}

// Port is the admin endpoint's port, so traffic accounting can ignore it.
func (a *AppAdmin) Port() int {
	u, err := url.Parse(a.Base)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

// Drain asks the app to enter drain mode: keep serving, fail readiness, close keep-alives.
func (a *AppAdmin) Drain(ctx context.Context) (AppStatus, error) {
	return a.call(ctx, http.MethodPost, "/drain")
}

// Status reads the app's state and request counters.
func (a *AppAdmin) Status(ctx context.Context) (AppStatus, error) {
	return a.call(ctx, http.MethodGet, "/status")
}

func (a *AppAdmin) call(ctx context.Context, method, path string) (AppStatus, error) {
	var st AppStatus
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, nil)
	if err != nil {
		return st, fmt.Errorf("app admin %s %s: %w", method, path, err)
	}
	resp, err := a.Client.Do(req)
	if err != nil {
		return st, fmt.Errorf("app admin %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return st, fmt.Errorf("app admin %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("app admin %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("app admin %s %s: decode answer: %w", method, path, err)
	}
	return st, nil
}
