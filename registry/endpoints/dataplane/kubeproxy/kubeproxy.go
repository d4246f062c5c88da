// Package kubeproxy reads what kube-proxy serves on its node-local metrics address
// (127.0.0.1:10249 by default, k8s.io/kubernetes v1.37.0 cmd/kube-proxy/app/server.go
// serveMetrics): when it last finished programming rules (/metrics) and which mode it runs
// (/proxyMode); and picks the dataplane probe for that mode.
//
// The sync timestamp says when to look at the ruleset, never what it holds: a sync that began
// before kube-proxy received a change finishes after the change (pkg/proxy/iptables/proxier.go
// syncProxyRules takes the pending changes when it starts), so the ruleset read after it is the
// proof.
package kubeproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metric names as k8s.io/kubernetes v1.37.0 pkg/proxy/metrics/metrics.go registers them
// (subsystem "kubeproxy"). The timestamp has an ip_family label since v1.28; older
// kube-proxies write it without labels, which reads the same.
const (
	lastSyncMetric = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
	pendingMetric  = "kubeproxy_sync_proxy_rules_endpoint_changes_pending"
)

// maxBody bounds what is read of a kube-proxy answer; its /metrics is some tens of kilobytes.
const maxBody = 16 << 20

// Client reads kube-proxy's metrics address.
type Client struct {
	// URL is the base URL, such as http://127.0.0.1:10249.
	URL  string
	HTTP *http.Client
}

// Sync is kube-proxy's progress as its metrics tell.
type Sync struct {
	// Last maps each IP family ("IPv4", "IPv6"; "" for a kube-proxy without the label) to the
	// end of its last successful sync. Empty until kube-proxy first synced.
	Last map[string]time.Time
	// Pending is the number of endpoint changes not yet synced; -1 when not reported.
	Pending float64
}

// Newest is the latest sync of any family; zero when there was none.
func (s Sync) Newest() time.Time {
	var newest time.Time
	for _, t := range s.Last {
		if t.After(newest) {
			newest = t
		}
	}
	return newest
}

// Advanced reports whether some family synced since prev.
func (s Sync) Advanced(prev Sync) bool {
	for fam, t := range s.Last {
		if !t.Equal(prev.Last[fam]) {
			return true
		}
	}
	return false
}

// Sync reads /metrics.
func (c *Client) Sync(ctx context.Context) (Sync, error) {
	body, err := c.get(ctx, "/metrics", "text/plain;version=0.0.4")
	if err != nil {
		return Sync{}, err
	}
	defer body.Close()
	s, err := ParseMetrics(body)
	if err != nil {
		return Sync{}, fmt.Errorf("kube-proxy %s/metrics: %w", c.URL, err)
	}
	return s, nil
}

// Mode reads /proxyMode: "iptables", "nftables", "ipvs", ….
func (c *Client) Mode(ctx context.Context) (string, error) {
	body, err := c.get(ctx, "/proxyMode", "text/plain")
	if err != nil {
		return "", err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, 256))
	if err != nil {
		return "", fmt.Errorf("kube-proxy %s/proxyMode: %w", c.URL, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *Client) get(ctx context.Context, path, accept string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.URL, "/")+path, nil)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy metrics URL %q: %w", c.URL, err)
	}
	req.Header.Set("Accept", accept)
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("kube-proxy %s%s: %s", c.URL, path, resp.Status)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxBody), resp.Body}, nil
}

// ParseMetrics reads the two metrics Sync needs from Prometheus text exposition format.
func ParseMetrics(r io.Reader) (Sync, error) {
	s := Sync{Last: map[string]time.Time{}, Pending: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		var name string
		switch {
		case bytes.HasPrefix(line, []byte(lastSyncMetric)):
			name = lastSyncMetric
		case bytes.HasPrefix(line, []byte(pendingMetric)):
			name = pendingMetric
		default:
			continue
		}
		labels, value, ok := sample(line[len(name):])
		if !ok {
			continue // another metric sharing the prefix
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return Sync{}, fmt.Errorf("line %d: %s value %q: %w", n, name, value, err)
		}
		if name == pendingMetric {
			s.Pending = v
			continue
		}
		if v > 0 && !math.IsInf(v, 0) {
			sec, frac := math.Modf(v)
			s.Last[label(labels, "ip_family")] = time.Unix(int64(sec), int64(frac*1e9))
		}
	}
	if err := sc.Err(); err != nil {
		return Sync{}, err
	}
	return s, nil
}

// sample splits what follows a metric name: "{labels} value [timestamp]". ok is false when the
// name continues (a longer metric name).
func sample(rest []byte) (labels, value string, ok bool) {
	s := string(rest)
	if strings.HasPrefix(s, "{") {
		end := strings.Index(s, "}")
		if end < 0 {
			return "", "", false
		}
		labels, s = s[1:end], s[end+1:]
	}
	if !strings.HasPrefix(s, " ") {
		return "", "", false
	}
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return "", "", false
	}
	return labels, fields[0], true
}

// label returns the value of name in `a="x",b="y"`. kube-proxy's label values (IP families)
// need no unescaping.
func label(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// ErrUnsupportedMode is wrapped when kube-proxy runs in a mode no probe reads.
var ErrUnsupportedMode = errors.New("kube-proxy mode not supported")
