package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lastcall-dev/lastcall/e2e/report"
)

type apiClient struct {
	t   *testing.T
	url string
}

func newAPI(t *testing.T) (*control, apiClient) {
	c := newControl(context.Background(), quiet)
	c.consulWait = 300 * time.Millisecond
	s := httptest.NewServer(c.handler())
	t.Cleanup(s.Close)
	return c, apiClient{t, s.URL}
}

// answer is a response, read and closed.
type answer struct {
	code         int
	uncompressed bool // the transport asked for gzip and unpacked it
	body         string
}

// do sends a request; the default transport asks for gzip and unpacks it.
func (a apiClient) do(method, path, body string) answer {
	a.t.Helper()
	req, err := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Uncompressed, string(b)}
}

type statusAnswer struct {
	Runs []struct {
		Name       string
		Generators []struct {
			Path report.Path
			Sent int64
		}
	}
}

func (a apiClient) status() statusAnswer {
	a.t.Helper()
	ans := a.do(http.MethodGet, "/status", "")
	var st statusAnswer
	if err := json.Unmarshal([]byte(ans.body), &st); err != nil || ans.code != http.StatusOK {
		a.t.Fatalf("status: %d %q: %v", ans.code, ans.body, err)
	}
	return st
}

func TestControlAPI(t *testing.T) {
	target := server(t, func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("X-Processed-By", "pod-1") })
	_, cs := newFakeConsul(t, target.Listener.Addr().String())
	_, api := newAPI(t)

	if ans := api.do(http.MethodGet, "/healthz", ""); ans.code != http.StatusOK || ans.body != "ok\n" {
		t.Errorf("healthz: %d %q", ans.code, ans.body)
	}

	bad := []struct{ body, field string }{
		{`not json`, "body"},
		{`{"name":"x","bogus":1}`, "bogus"},
		{`{"name":"","generators":[]}`, "name"},
		{`{"name":"x","generators":[]}`, "generators"},
		{`{"name":"x","generators":[{"path":"service","url":"nope","rate":1}]}`, "generators[0].url"},
		{`{"name":"x","generators":[{"path":"dns","rate":1}]}`, "generators[0].path"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":1},{"path":"consul","consulAddr":"http://c:8500","rate":1}]}`, "generators[1].service"},
		{`{"name":"x","generators":[{"path":"consul","service":"web","rate":1}]}`, "generators[0].consulAddr"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":0}]}`, "generators[0].rate"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":"fast"}]}`, "rate"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":1,"timeout":"soon"}]}`, "generators[0].timeout"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":1,"conns":-1}]}`, "generators[0].conns"},
		{`{"name":"x","generators":[{"path":"service","url":"http://a/","rate":1,"connection":"close"}]}`, "generators[0].connection"},
	}
	for _, b := range bad {
		ans := api.do(http.MethodPost, "/start", b.body)
		if ans.code != http.StatusBadRequest || !strings.Contains(ans.body, b.field) || strings.Count(ans.body, "\n") > 1 {
			t.Errorf("start %s: %d %q, want 400 naming %s on one line", b.body, ans.code, ans.body, b.field)
		}
	}

	start := fmt.Sprintf(`{"name":"r1","generators":[
		{"path":"service","url":%q,"rate":200},
		{"path":"consul","consulAddr":%q,"service":"web","urlPath":"/work","rate":200}]}`, target.URL+"/work", cs.URL)
	if ans := api.do(http.MethodPost, "/start", start); ans.code != http.StatusAccepted {
		t.Fatalf("start: %d %s", ans.code, ans.body)
	}
	if ans := api.do(http.MethodPost, "/start", start); ans.code != http.StatusConflict {
		t.Errorf("second start of r1: %d, want 409", ans.code)
	}
	eventually(t, 20*time.Second, "requests on both paths", func() bool {
		st := api.status()
		return len(st.Runs) == 1 && st.Runs[0].Name == "r1" && len(st.Runs[0].Generators) == 2 &&
			st.Runs[0].Generators[0].Sent > 5 && st.Runs[0].Generators[1].Sent > 5
	})

	if ans := api.do(http.MethodPost, "/stop", ""); ans.code != http.StatusBadRequest {
		t.Errorf("stop without a name: %d, want 400", ans.code)
	}
	stop := api.do(http.MethodPost, "/stop?name=r1", "")
	if stop.code != http.StatusOK {
		t.Fatalf("stop: %d %s", stop.code, stop.body)
	}
	if !stop.uncompressed {
		t.Error("the stop answer was not gzipped for a client that accepts gzip")
	}
	var out struct{ Records []report.Record }
	if err := json.Unmarshal([]byte(stop.body), &out); err != nil {
		t.Fatalf("stop answer: %v", err)
	}
	paths := map[report.Path]int{}
	for _, r := range out.Records {
		if r.Outcome != report.OK || r.Pod != "pod-1" {
			t.Errorf("record %+v", r)
		}
		paths[r.Path]++
	}
	if paths[report.PathService] == 0 || paths[report.PathConsul] == 0 {
		t.Errorf("records by path: %v", paths)
	}
	if ans := api.do(http.MethodPost, "/stop?name=r1", ""); ans.code != http.StatusNotFound {
		t.Errorf("stop of a stopped run: %d, want 404", ans.code)
	}
	if st := api.status(); len(st.Runs) != 0 {
		t.Errorf("status after stop: %+v", st)
	}
	// the name is free again
	if ans := api.do(http.MethodPost, "/start", start); ans.code != http.StatusAccepted {
		t.Errorf("start after stop: %d %s", ans.code, ans.body)
	}
	api.do(http.MethodPost, "/stop?name=r1", "")
}

func TestControlStartWhenConsulDoesNotAnswer(t *testing.T) {
	// a listener that never answers
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	c, api := newAPI(t)
	body := fmt.Sprintf(`{"name":"r","generators":[{"path":"consul","consulAddr":"http://%s","service":"web","rate":10}]}`, l.Addr())
	ans := api.do(http.MethodPost, "/start", body)
	if ans.code != http.StatusBadGateway || !strings.Contains(ans.body, "generators[0].consulAddr") {
		t.Errorf("start: %d %q, want 502 naming generators[0].consulAddr", ans.code, ans.body)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.runs) != 0 || len(c.starting) != 0 {
		t.Errorf("a failed start left %d runs, %d names reserved", len(c.runs), len(c.starting))
	}
}

func TestAcceptsGzip(t *testing.T) {
	tests := []struct {
		header string
		want   bool
	}{
		{"", false},
		{"gzip", true},
		{"deflate, gzip;q=1.0, *;q=0.5", true},
		{"GZIP", true},
		{"gzip;q=0", false},
		{"identity", false},
		{"x-gzip", false},
	}
	for _, tt := range tests {
		if got := acceptsGzip(tt.header); got != tt.want {
			t.Errorf("acceptsGzip(%q) = %t, want %t", tt.header, got, tt.want)
		}
	}
}

func TestStopAnswerPlainWithoutGzip(t *testing.T) {
	target := server(t, func(http.ResponseWriter, *http.Request) {})
	_, api := newAPI(t)
	start := fmt.Sprintf(`{"name":"p","generators":[{"path":"service","url":%q,"rate":100}]}`, target.URL)
	if ans := api.do(http.MethodPost, "/start", start); ans.code != http.StatusAccepted {
		t.Fatalf("start: %d %s", ans.code, ans.body)
	}
	req, err := http.NewRequest(http.MethodPost, api.url+"/stop?name=p", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept-Encoding", "identity") // and the transport leaves the body alone
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Records []report.Record }
	if resp.Header.Get("Content-Encoding") != "" || json.NewDecoder(resp.Body).Decode(&out) != nil {
		t.Errorf("plain answer expected: encoding %q", resp.Header.Get("Content-Encoding"))
	}
}
