// Package report turns the e2e's raw measurements (every request the load generator sent, every
// pod's drain, the ready pods over time) into per-path summaries, Markdown tables and PNG
// timelines, and keeps each run as JSON so a report can be rendered again.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Path is how the load generator reached the workload.
type Path string

const (
	// PathService goes through the workload's ClusterIP Service (kube-proxy).
	PathService Path = "service"
	// PathConsul balances on the client over Consul's passing instances, straight to pod IPs.
	PathConsul Path = "consul"
)

// Outcome classifies a request.
type Outcome string

// Outcomes: OK is any 2xx with its whole body; the rest are failures.
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

// Record is one request.
type Record struct {
	Path    Path          `json:"p"`
	Start   time.Time     `json:"-"`
	Latency time.Duration `json:"l"`
	Outcome Outcome       `json:"o"`
	Status  int           `json:"s,omitempty"`
	Pod     string        `json:"pod,omitempty"` // X-Processed-By: the pod that served it
	Target  string        `json:"t,omitempty"`   // host:port the request went to
	Err     string        `json:"e,omitempty"`
}

type recordJSON Record

// MarshalJSON writes Start as Unix nanoseconds: compact, and exact to the nanosecond.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		T int64 `json:"t0"`
		recordJSON
	}{r.Start.UnixNano(), recordJSON(r)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var v struct {
		T int64 `json:"t0"`
		recordJSON
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Record(v.recordJSON)
	r.Start = time.Unix(0, v.T)
	return nil
}

// Drain is one retired pod: when its deletion was seen, and when its container exited.
type Drain struct {
	Pod     string    `json:"pod"`
	Deleted time.Time `json:"deleted"`
	Exited  time.Time `json:"exited"`
}

// Sample is the number of ready pods from T on.
type Sample struct {
	T     time.Time `json:"t"`
	Ready int       `json:"ready"`
}

// Run is one scenario run of one variant.
type Run struct {
	Scenario  string    `json:"scenario"`
	Variant   string    `json:"variant"`
	Iteration int       `json:"iteration"`
	Start     time.Time `json:"start"` // the change was applied
	End       time.Time `json:"end"`   // the rollout settled and every retired pod had exited
	Records   []Record  `json:"records"`
	Drains    []Drain   `json:"drains"`
	Ready     []Sample  `json:"ready"`
}

// Name identifies the run in file names.
func (r Run) Name() string { return fmt.Sprintf("%s-%s-%d", r.Scenario, r.Variant, r.Iteration) }

// Summary is one run's numbers on one path.
type Summary struct {
	Scenario, Variant      string
	Iteration              int
	Path                   Path
	Requests, Failed       int
	Failures               map[Outcome]int // failure outcomes only
	LatencyP50, LatencyP99 time.Duration   // of the successful requests
	DrainP50, DrainMax     time.Duration
	Rollout                time.Duration
}

// Summarize returns one Summary per path in r's records, in path order.
func Summarize(r Run) []Summary {
	byPath := map[Path][]Record{}
	for _, rec := range r.Records {
		byPath[rec.Path] = append(byPath[rec.Path], rec)
	}
	var drains []time.Duration
	for _, d := range r.Drains {
		drains = append(drains, d.Exited.Sub(d.Deleted))
	}
	sort.Slice(drains, func(i, j int) bool { return drains[i] < drains[j] })
	var rollout time.Duration
	if !r.Start.IsZero() && r.End.After(r.Start) {
		rollout = r.End.Sub(r.Start)
	}
	var out []Summary
	for p, recs := range byPath {
		s := Summary{Scenario: r.Scenario, Variant: r.Variant, Iteration: r.Iteration, Path: p,
			Requests: len(recs), Failures: map[Outcome]int{}, Rollout: rollout,
			DrainP50: Percentile(drains, 50)}
		if len(drains) > 0 {
			s.DrainMax = drains[len(drains)-1]
		}
		var lat []time.Duration
		for _, rec := range recs {
			if rec.Outcome == OK {
				lat = append(lat, rec.Latency)
				continue
			}
			s.Failed++
			s.Failures[rec.Outcome]++
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		s.LatencyP50, s.LatencyP99 = Percentile(lat, 50), Percentile(lat, 99)
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path > out[j].Path }) // service, then consul
	return out
}

// Percentile of sorted values (nearest rank); 0 for none.
func Percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100 // ceil(p/100 · n), 1-based
	if i < 1 {
		i = 1
	}
	return sorted[i-1]
}

// Markdown writes one table per scenario, rows in the order given.
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
		b.WriteString("| variant | run | path | requests | failed | refused | reset | timeout | 5xx | other | latency p50 | p99 | drain p50 | drain max | rollout |\n")
		b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, s := range byScenario[sc] {
			fmt.Fprintf(&b, "| %s | %d | %s | %d | **%d** |", s.Variant, s.Iteration, s.Path, s.Requests, s.Failed)
			for _, o := range FailureClasses {
				fmt.Fprintf(&b, " %d |", s.Failures[o])
			}
			fmt.Fprintf(&b, " %s | %s | %s | %s | %s |\n", Human(s.LatencyP50), Human(s.LatencyP99), Human(s.DrainP50), Human(s.DrainMax), Human(s.Rollout))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Human prints a duration in ms below 10 s, else in s, one decimal.
func Human(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// WriteFiles writes dir/report.md (every run's tables), and per run dir/<name>.png (timeline)
// and dir/<name>.json (the run, for Load). It returns report.md's path.
func WriteFiles(dir string, runs []Run) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("report dir: %w", err)
	}
	var sums []Summary
	for _, r := range runs {
		sums = append(sums, Summarize(r)...)
		if err := writeFile(filepath.Join(dir, r.Name()+".json"), func(w io.Writer) error { return json.NewEncoder(w).Encode(r) }); err != nil {
			return "", err
		}
		if err := writeFile(filepath.Join(dir, r.Name()+".png"), func(w io.Writer) error { return WriteTimeline(w, r) }); err != nil {
			return "", err
		}
	}
	md := filepath.Join(dir, "report.md")
	err := writeFile(md, func(w io.Writer) error {
		if err := Markdown(w, "lastcall e2e report", sums); err != nil {
			return err
		}
		_, err := fmt.Fprintf(w, "\nFailed requests by class; latency of the successful ones; drain = deletion seen → container exit seen; rollout = change applied → last retired pod exited and every wanted pod ready. Timelines: `<scenario>-<variant>-<run>.png`.\n")
		return err
	})
	return md, err
}

func writeFile(path string, fill func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := fill(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("report %s: %w", filepath.Base(path), err)
	}
	return f.Close()
}

// Load reads a run WriteFiles saved.
func Load(path string) (Run, error) {
	var r Run
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}
