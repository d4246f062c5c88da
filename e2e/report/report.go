// Package report turns the e2e's raw measurements (every request the load generator sent, every
// pod's drain, the ready pods over time) into per-path summaries, Markdown tables and PNG
// timelines, and keeps each run as JSON so a report can be rendered again.
package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	prestop "github.com/lastcall-dev/lastcall/preStop"
)

// Path is how the load generator reached the workload.
type Path string

const (
	// PathService goes through the workload's ClusterIP Service (kube-proxy).
	PathService Path = "service"
	// PathConsul balances on the client over Consul's passing instances, straight to pod IPs.
	PathConsul Path = "consul"
)

// Conn is how a caller uses connections.
type Conn string

const (
	// ConnKeepAlive reuses pooled keep-alive connections: the zero value, as most callers do.
	ConnKeepAlive Conn = ""
	// ConnNew opens a new connection for every request (keep-alive off): each one is routed
	// afresh by the dataplane, so it sees every node's kube-proxy lag.
	ConnNew Conn = "new"
)

// Protocol is what the load generator spoke to the workload.
type Protocol string

const (
	// ProtoHTTP1 is HTTP/1.1 through the load generator's tuned client (idle connections closed
	// early, a pool per host): the zero value, "http1" in the load generator's API.
	ProtoHTTP1 Protocol = ""
	// ProtoHTTP1Default is HTTP/1.1 through a client with Go's http.DefaultTransport settings
	// (90 s idle timeout, 2 idle connections kept per host).
	ProtoHTTP1Default Protocol = "http1-default"
	// ProtoH2C is HTTP/2 without TLS, with prior knowledge, through Go's http.Transport defaults.
	ProtoH2C Protocol = "h2c"
	// ProtoGRPC is gRPC unary calls through grpc-go's defaults (pick_first, one connection).
	ProtoGRPC Protocol = "grpc"
)

// Protocols lists the protocols in report order.
var Protocols = []Protocol{ProtoHTTP1, ProtoHTTP1Default, ProtoH2C, ProtoGRPC}

// String names p as the load generator's API does: "http1" for the zero value.
func (p Protocol) String() string {
	if p == ProtoHTTP1 {
		return "http1"
	}
	return string(p)
}

// ParseProtocol reads a protocol's name; "" is http1.
func ParseProtocol(s string) (Protocol, bool) {
	if s == "http1" {
		return ProtoHTTP1, true
	}
	return Protocol(s), slices.Contains(Protocols, Protocol(s))
}

// Outcome classifies a request.
type Outcome string

// Outcomes: OK is a 2xx answer read to its end (a gRPC call answered OK); the rest are
// failures. A gRPC call answered with an error status counts as 5xx, DEADLINE_EXCEEDED as
// timeout, and a connection refused or lost under it as refused or reset.
const (
	OK        Outcome = "ok"
	Refused   Outcome = "refused"
	Reset     Outcome = "reset"
	Timeout   Outcome = "timeout"
	Status5xx Outcome = "5xx"
	Other     Outcome = "other"
)

// FailureClasses lists the failure outcomes in report order.
var FailureClasses = []Outcome{Refused, Reset, Timeout, Status5xx, Other}

// Record is one request. Its JSON is compact (a run holds tens of thousands): short keys, the
// start as Unix nanoseconds, the latency as nanoseconds.
type Record struct {
	Path    Path          `json:"p"`
	Conn    Conn          `json:"c,omitempty"`  // empty: keep-alive
	Proto   Protocol      `json:"pr,omitempty"` // empty: http1
	Retry   bool          `json:"r,omitempty"`  // the caller retried what the server did not process
	Idem    bool          `json:"k,omitempty"`  // the request carried an Idempotency-Key header
	Start   time.Time     `json:"-"`            // as "t0", see MarshalJSON
	Latency time.Duration `json:"l"`
	Outcome Outcome       `json:"o"`
	Status  int           `json:"s,omitempty"`   // HTTP status, 0 when none (gRPC too)
	Pod     string        `json:"pod,omitempty"` // X-Processed-By: the pod that served it
	Target  string        `json:"t,omitempty"`   // host:port the request went to
	Err     string        `json:"e,omitempty"`   // failures only
}

// recordJSON has Record's fields without its methods, so the methods below can embed it.
type recordJSON Record

type recordWire struct {
	Start int64 `json:"t0"`
	recordJSON
}

// MarshalJSON writes Start as Unix nanoseconds: compact, and exact to the nanosecond.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordWire{r.Start.UnixNano(), recordJSON(r)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var v recordWire
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Record(v.recordJSON)
	r.Start = time.Unix(0, v.Start)
	return nil
}

// Drain is one retired pod: when its deletion was seen, and when its container exited.
type Drain struct {
	Pod     string    `json:"pod"`
	Deleted time.Time `json:"deleted"`
	Exited  time.Time `json:"exited"`
	// What the kubelet recorded, whatever the watch's latency: the pod's deletionTimestamp (when
	// it kills what is still running), and the app container's end (1 s precision) and exit code.
	KillAt   time.Time `json:"killAt,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	ExitCode *int32    `json:"exitCode,omitempty"`
	// Helper is what lastcall-prestop reported in the app container's termination message;
	// nil without the helper (the control) or when the report was cut.
	Helper *prestop.Report `json:"helper,omitempty"`
}

// Sample is the number of ready pods of the workload from T on.
type Sample struct {
	T     time.Time `json:"t"`
	Ready int       `json:"ready"`
}

// Run is one scenario run of one variant.
type Run struct {
	Scenario  string    `json:"scenario"` // e.g. rolling-update
	Variant   string    `json:"variant"`  // e.g. lastcall, control, sleep-5
	Iteration int       `json:"iteration"`
	Start     time.Time `json:"start"` // the change was applied
	End       time.Time `json:"end"`   // the rollout settled
	Records   []Record  `json:"records"`
	Drains    []Drain   `json:"drains"`
	Ready     []Sample  `json:"ready"`
}

// Name identifies the run in file names: <scenario>-<variant>-<iteration>.
func (r Run) Name() string {
	safe := strings.NewReplacer("/", "_", `\`, "_", " ", "_")
	return safe.Replace(fmt.Sprintf("%s-%s-%d", r.Scenario, r.Variant, r.Iteration))
}

// Summary is one run's numbers on one path, for one kind of caller.
type Summary struct {
	Scenario, Variant      string
	Iteration              int
	Path                   Path
	Conn                   Conn
	Proto                  Protocol
	Retry                  bool
	Idem                   bool
	Requests, Failed       int
	Failures               map[Outcome]int // by failure class; never OK
	LatencyP50, LatencyP99 time.Duration   // of the successful requests
	DrainP50, DrainMax     time.Duration   // deletion seen → container exit
	Rollout                time.Duration   // End - Start
}

// caller is what Summarize groups records by.
type caller struct {
	path  Path
	conn  Conn
	proto Protocol
	retry bool
	idem  bool
}

// Summarize returns one Summary per protocol, path and kind of caller in r's records: by protocol
// in Protocols' order (unknown ones last, by name); then service, consul, then any other path by
// name; on each path plain callers before retrying ones, keep-alive callers before
// new-connection ones. A run without records has none.
func Summarize(r Run) []Summary {
	byPath := map[caller][]Record{}
	for _, rec := range r.Records {
		k := caller{rec.Path, rec.Conn, rec.Proto, rec.Retry, rec.Idem}
		byPath[k] = append(byPath[k], rec)
	}
	var drains []time.Duration
	for _, d := range r.Drains {
		if !d.Deleted.IsZero() && !d.Exited.IsZero() {
			drains = append(drains, d.Exited.Sub(d.Deleted))
		}
	}
	slices.Sort(drains)
	var drainMax, rollout time.Duration
	if len(drains) > 0 {
		drainMax = drains[len(drains)-1]
	}
	if !r.Start.IsZero() && r.End.After(r.Start) {
		rollout = r.End.Sub(r.Start)
	}

	out := make([]Summary, 0, len(byPath))
	for k, recs := range byPath {
		s := Summary{
			Scenario: r.Scenario, Variant: r.Variant, Iteration: r.Iteration, Path: k.path, Conn: k.conn,
			Proto: k.proto, Retry: k.retry, Idem: k.idem,
			Requests: len(recs), Failures: map[Outcome]int{},
			DrainP50: percentile(drains, 50), DrainMax: drainMax, Rollout: rollout,
		}
		var lat []time.Duration
		for _, rec := range recs {
			if rec.Outcome == OK {
				lat = append(lat, rec.Latency)
				continue
			}
			s.Failed++
			s.Failures[failureClass(rec.Outcome)]++
		}
		slices.Sort(lat)
		s.LatencyP50, s.LatencyP99 = percentile(lat, 50), percentile(lat, 99)
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Summary) int {
		return cmp.Or(compareProto(a.Proto, b.Proto),
			cmp.Compare(pathRank(a.Path), pathRank(b.Path)), cmp.Compare(a.Path, b.Path),
			compareBool(a.Retry, b.Retry), compareBool(a.Idem, b.Idem), cmp.Compare(a.Conn, b.Conn))
	})
	return out
}

// compareProto orders protocols as Protocols lists them, unknown ones last by name.
func compareProto(a, b Protocol) int {
	rank := func(p Protocol) int {
		if i := slices.Index(Protocols, p); i >= 0 {
			return i
		}
		return len(Protocols)
	}
	return cmp.Or(cmp.Compare(rank(a), rank(b)), cmp.Compare(a, b))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	}
	return 1
}

// Caller names the path, then the protocol unless it is http1, whether requests carry an
// Idempotency-Key (Go's Transport resends those, as it does GETs), whether the caller retries,
// and whether it opens a new connection per request: "service", "service, new conn",
// "consul, grpc, retry".
func (s Summary) Caller() string {
	return string(s.Path) + s.kind()
}

// kind is what Caller adds to the path.
func (s Summary) kind() string {
	var b strings.Builder
	if s.Proto != ProtoHTTP1 {
		b.WriteString(", " + s.Proto.String())
	}
	if s.Idem {
		b.WriteString(", idempotency-key")
	}
	if s.Retry {
		b.WriteString(", retry")
	}
	if s.Conn == ConnNew {
		b.WriteString(", new conn")
	}
	return b.String()
}

// failureClass keeps the table's columns adding up to "failed": an outcome the report does
// not know is counted as other.
func failureClass(o Outcome) Outcome {
	if slices.Contains(FailureClasses, o) {
		return o
	}
	return Other
}

func pathRank(p Path) int {
	switch p {
	case PathService:
		return 0
	case PathConsul:
		return 1
	}
	return 2
}

// percentile of sorted values, nearest rank; 0 for none.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100 // ceil(p/100 · n), 1-based
	return sorted[max(i, 1)-1]
}

// Markdown writes title and one table per scenario (in order of first appearance), a row per
// summary in the order given.
func Markdown(w io.Writer, title string, sums []Summary) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n", title)
	var order []string
	byScenario := map[string][]Summary{}
	for _, s := range sums {
		if _, ok := byScenario[s.Scenario]; !ok {
			order = append(order, s.Scenario)
		}
		byScenario[s.Scenario] = append(byScenario[s.Scenario], s)
	}
	for _, sc := range order {
		fmt.Fprintf(&b, "\n## %s\n\n", sc)
		b.WriteString("| variant | run | path | requests | failed | refused | reset | timeout | 5xx | other | latency p50 | latency p99 | drain p50 | drain max | rollout |\n")
		b.WriteString("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range byScenario[sc] {
			fmt.Fprintf(&b, "| %s | %d | %s | %d | **%d** |", s.Variant, s.Iteration, s.Caller(), s.Requests, s.Failed)
			for _, o := range FailureClasses {
				fmt.Fprintf(&b, " %d |", s.Failures[o])
			}
			fmt.Fprintf(&b, " %s | %s | %s | %s | %s |\n",
				human(s.LatencyP50), human(s.LatencyP99), human(s.DrainP50), human(s.DrainMax), human(s.Rollout))
		}
		writeByProtocol(&b, byScenario[sc])
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write markdown: %w", err)
	}
	return nil
}

// protoTotal is one variant's requests in one protocol, over its runs, paths and connections.
type protoTotal struct {
	variant  string
	proto    Protocol
	retry    bool
	runs     map[int]bool
	requests int
	failed   int
	failures map[Outcome]int
}

// byProtocol sums sums per variant (in order of first appearance) and protocol (in Protocols'
// order, plain callers before retrying ones), over runs, paths and connections.
func byProtocol(sums []Summary) []*protoTotal {
	type key struct {
		variant string
		proto   Protocol
		retry   bool
	}
	var variants []string
	totals := map[key]*protoTotal{}
	for _, s := range sums {
		if !slices.Contains(variants, s.Variant) {
			variants = append(variants, s.Variant)
		}
		k := key{s.Variant, s.Proto, s.Retry}
		t := totals[k]
		if t == nil {
			t = &protoTotal{variant: s.Variant, proto: s.Proto, retry: s.Retry, runs: map[int]bool{}, failures: map[Outcome]int{}}
			totals[k] = t
		}
		t.runs[s.Iteration] = true
		t.requests += s.Requests
		t.failed += s.Failed
		for o, n := range s.Failures {
			t.failures[o] += n
		}
	}
	out := make([]*protoTotal, 0, len(totals))
	for _, t := range totals {
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b *protoTotal) int {
		return cmp.Or(cmp.Compare(slices.Index(variants, a.variant), slices.Index(variants, b.variant)),
			compareProto(a.proto, b.proto), compareBool(a.retry, b.retry))
	})
	return out
}

// writeByProtocol writes a scenario's failures by protocol and class, when it has callers of
// another protocol than http1 (or retrying ones): a report of http1 callers only is unchanged.
func writeByProtocol(b *strings.Builder, sums []Summary) {
	if !slices.ContainsFunc(sums, func(s Summary) bool { return s.Proto != ProtoHTTP1 || s.Retry }) {
		return
	}
	b.WriteString("\nFailures by protocol and class, over the runs and paths:\n\n")
	b.WriteString("| variant | protocol | runs | requests | failed | refused | reset | timeout | 5xx | other |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, t := range byProtocol(sums) {
		proto := t.proto.String()
		if t.retry {
			proto += ", retry"
		}
		fmt.Fprintf(b, "| %s | %s | %d | %d | **%d** |", t.variant, proto, len(t.runs), t.requests, t.failed)
		for _, o := range FailureClasses {
			fmt.Fprintf(b, " %d |", t.failures[o])
		}
		b.WriteString("\n")
	}
}

// human prints a duration in ms below 10 s, else in s, with one decimal; "–" for none.
func human(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d < 10*time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
}

// WriteFiles writes dir/report.md (a header and every run's tables), and per run
// dir/<name>.png (its timeline) and dir/<name>.json (the run, for Load), name being Run.Name.
// It returns report.md's path.
func WriteFiles(dir string, runs []Run) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report dir: %w", err)
	}
	var sums []Summary
	for _, r := range runs {
		sums = append(sums, Summarize(r)...)
		base := filepath.Join(dir, r.Name())
		if err := writeFile(base+".json", func(w io.Writer) error { return json.NewEncoder(w).Encode(r) }); err != nil {
			return "", err
		}
		if err := writeFile(base+".png", func(w io.Writer) error { return WriteTimeline(w, r) }); err != nil {
			return "", err
		}
	}
	md := filepath.Join(dir, "report.md")
	err := writeFile(md, func(w io.Writer) error {
		if err := Markdown(w, "lastcall e2e report", sums); err != nil {
			return err
		}
		_, err := io.WriteString(w, "\nFailed requests by class; latency of the successful ones; "+
			"drain = deletion seen → container exit seen; rollout = change applied → rollout settled. "+
			"Per run: `<scenario>-<variant>-<run>.png` (timeline) and `.json` (raw data).\n")
		return err
	})
	if err != nil {
		return "", err
	}
	return md, nil
}

func writeFile(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := fill(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("report %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	return nil
}

// Load reads a run that WriteFiles saved as JSON.
func Load(path string) (Run, error) {
	var r Run
	b, err := os.ReadFile(path)
	if err != nil {
		return Run{}, fmt.Errorf("load run: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return Run{}, fmt.Errorf("load run %s: %w", path, err)
	}
	return r, nil
}
