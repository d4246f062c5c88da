package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func rec(p Path, sec float64, o Outcome, lat time.Duration) Record {
	return Record{Path: p, Start: at(sec), Outcome: o, Latency: lat}
}

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, 0, len(v))
	for _, x := range v {
		out = append(out, time.Duration(x)*time.Millisecond)
	}
	return out
}

// sampleRun: 10 s of 10 ok/s on each path, failures only in second 2 after the change; drains
// of 2 s, 1 s and 5 s.
func sampleRun() Run {
	r := Run{Scenario: "rolling-update", Variant: "control", Iteration: 2, Start: t0, End: at(20),
		Drains: []Drain{
			{Pod: "a", Deleted: at(1), Exited: at(3)},
			{Pod: "b", Deleted: at(2), Exited: at(3)},
			{Pod: "c", Deleted: at(4), Exited: at(9)},
		},
		Ready: []Sample{{at(-10), 6}, {at(3), 7}, {at(12), 6}},
	}
	for i := range 100 {
		r.Records = append(r.Records,
			rec(PathService, float64(i)*0.1, OK, time.Duration(i+1)*time.Millisecond),
			rec(PathConsul, float64(i)*0.1, OK, 50*time.Millisecond))
	}
	r.Records = append(r.Records,
		rec(PathService, 2.5, Refused, 0), rec(PathService, 2.6, Reset, 0),
		rec(PathConsul, 2.5, Status5xx, 0), rec(PathConsul, 2.7, Timeout, 5*time.Second), rec(PathConsul, 2.8, Other, 0))
	return r
}

func TestSummarize(t *testing.T) {
	base := Run{Scenario: "s", Variant: "v", Iteration: 1, Start: t0, End: at(30)}
	with := func(recs []Record, drains ...Drain) Run {
		r := base
		r.Records, r.Drains = recs, drains
		return r
	}
	tests := []struct {
		name string
		run  Run
		want []Summary
	}{
		{"empty run", Run{Scenario: "s"}, []Summary{}},
		{"drains but no requests", with(nil, Drain{Pod: "a", Deleted: at(1), Exited: at(2)}), []Summary{}},
		{
			"per path, service first, failure classes",
			with([]Record{
				rec(PathConsul, 0, OK, 10*time.Millisecond),
				rec(PathConsul, 1, Timeout, 5*time.Second),
				rec(PathService, 0, OK, 20*time.Millisecond),
				rec(PathService, 1, Refused, 0),
				rec(PathService, 2, Refused, 0),
				rec(PathService, 3, "weird", 0),
			}, Drain{Pod: "a", Deleted: at(1), Exited: at(3)}, Drain{Pod: "b", Deleted: at(5), Exited: at(6)}, Drain{Pod: "c", Deleted: at(6), Exited: at(10)}),
			[]Summary{
				{Scenario: "s", Variant: "v", Iteration: 1, Path: PathService, Requests: 4, Failed: 3,
					Failures:   map[Outcome]int{Refused: 2, Other: 1},
					LatencyP50: 20 * time.Millisecond, LatencyP99: 20 * time.Millisecond,
					DrainP50: 2 * time.Second, DrainMax: 4 * time.Second, Rollout: 30 * time.Second},
				{Scenario: "s", Variant: "v", Iteration: 1, Path: PathConsul, Requests: 2, Failed: 1,
					Failures:   map[Outcome]int{Timeout: 1},
					LatencyP50: 10 * time.Millisecond, LatencyP99: 10 * time.Millisecond,
					DrainP50: 2 * time.Second, DrainMax: 4 * time.Second, Rollout: 30 * time.Second},
			},
		},
		{
			"new-connection callers apart from keep-alive ones on the same path",
			func() Run {
				newConn := func(sec float64, o Outcome) Record {
					r := rec(PathService, sec, o, time.Millisecond)
					r.Conn = ConnNew
					return r
				}
				return with([]Record{
					newConn(0, Timeout), rec(PathService, 0, OK, time.Millisecond),
					newConn(1, OK), newConn(2, Refused), rec(PathConsul, 0, OK, time.Millisecond),
				})
			}(),
			[]Summary{
				{Scenario: "s", Variant: "v", Iteration: 1, Path: PathService, Requests: 1, Failures: map[Outcome]int{},
					LatencyP50: time.Millisecond, LatencyP99: time.Millisecond, Rollout: 30 * time.Second},
				{Scenario: "s", Variant: "v", Iteration: 1, Path: PathService, Conn: ConnNew, Requests: 3, Failed: 2,
					Failures:   map[Outcome]int{Timeout: 1, Refused: 1},
					LatencyP50: time.Millisecond, LatencyP99: time.Millisecond, Rollout: 30 * time.Second},
				{Scenario: "s", Variant: "v", Iteration: 1, Path: PathConsul, Requests: 1, Failures: map[Outcome]int{},
					LatencyP50: time.Millisecond, LatencyP99: time.Millisecond, Rollout: 30 * time.Second},
			},
		},
		{
			"percentiles over ok requests only",
			func() Run {
				var recs []Record
				for i := 1; i <= 200; i++ {
					recs = append(recs, rec(PathService, 0, OK, time.Duration(i)*time.Millisecond))
				}
				recs = append(recs, rec(PathService, 0, Timeout, time.Hour))
				return with(recs)
			}(),
			[]Summary{{Scenario: "s", Variant: "v", Iteration: 1, Path: PathService, Requests: 201, Failed: 1,
				Failures: map[Outcome]int{Timeout: 1}, LatencyP50: 100 * time.Millisecond, LatencyP99: 198 * time.Millisecond,
				Rollout: 30 * time.Second}},
		},
		{
			"no ok request, unfinished rollout, unfinished drain",
			func() Run {
				r := with([]Record{rec(PathService, 0, Reset, time.Second)}, Drain{Pod: "a", Deleted: at(1)})
				r.End = time.Time{}
				return r
			}(),
			[]Summary{{Scenario: "s", Variant: "v", Iteration: 1, Path: PathService, Requests: 1, Failed: 1,
				Failures: map[Outcome]int{Reset: 1}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summarize(tt.run)
			if len(got) == 0 && len(tt.want) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Summarize:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	tests := []struct {
		in   []time.Duration
		p    int
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4), 99, 4 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(1, 2, 3), 0, 1 * time.Millisecond},
		{ms(1, 2, 3), 100, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("percentile(%v, %d) = %s, want %s", tt.in, tt.p, got, tt.want)
		}
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "–"},
		{1234 * time.Microsecond, "1.2 ms"},
		{9999 * time.Millisecond, "9999.0 ms"},
		{10 * time.Second, "10.0 s"},
		{83*time.Second + 260*time.Millisecond, "83.3 s"},
	}
	for _, tt := range tests {
		if got := human(tt.in); got != tt.want {
			t.Errorf("human(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	other := sampleRun()
	other.Scenario, other.Variant, other.Iteration = "scale-down-6-2", "lastcall", 1
	other.Records = other.Records[:200] // ok only
	other.Records = append(other.Records, Record{Path: PathService, Conn: ConnNew, Start: at(3), Outcome: Timeout})
	var b bytes.Buffer
	if err := Markdown(&b, "the title", append(Summarize(sampleRun()), Summarize(other)...)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# the title\n",
		"## rolling-update\n",
		"| control | 2 | service | 102 | **2** | 1 | 1 | 0 | 0 | 0 | 50.0 ms | 99.0 ms | 2000.0 ms | 5000.0 ms | 20.0 s |\n",
		"| control | 2 | consul | 103 | **3** | 0 | 0 | 1 | 1 | 1 | 50.0 ms | 50.0 ms |",
		"## scale-down-6-2\n",
		"| lastcall | 1 | service | 100 | **0** | 0 | 0 | 0 | 0 | 0 |",
		"| lastcall | 1 | service, new conn | 1 | **1** | 0 | 0 | 1 | 0 | 0 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "| variant |") != 2 {
		t.Errorf("want one table per scenario:\n%s", out)
	}
	if strings.Contains(out, "by protocol") {
		t.Errorf("a report of http1 callers only has a protocol table:\n%s", out)
	}
	if i, j := strings.Index(out, "| control | 2 | service"), strings.Index(out, "| control | 2 | consul"); i > j {
		t.Errorf("rows out of order:\n%s", out)
	}
}

// redColumns says, per one-second bucket of r's timeline, whether its columns hold a red pixel.
func redColumns(t *testing.T, r Run) (timeline, []bool) {
	t.Helper()
	var b bytes.Buffer
	if err := WriteTimeline(&b, r); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if img.Bounds() != image.Rect(0, 0, imgW, imgH) {
		t.Fatalf("image is %v", img.Bounds())
	}
	tl := newTimeline(r)
	red := make([]bool, tl.secs)
	for i := range tl.secs {
		x0, x1 := tl.columns(i)
		for x := x0; x < x1 && !red[i]; x++ {
			for y := plotT - minFailedH; y < imgH; y++ {
				if img.At(x, y) == colorFailed {
					red[i] = true
					break
				}
			}
		}
	}
	return tl, red
}

// sharesColumns: below a pixel per second, bucket i may share its column with a failed one.
func sharesColumns(tl timeline, i int, failed []bool) bool {
	x0, x1 := tl.columns(i)
	for j, f := range failed {
		if f {
			if y0, y1 := tl.columns(j); x0 < y1 && y0 < x1 {
				return true
			}
		}
	}
	return false
}

func TestTimelineShowsFailuresInTheirSecondOnly(t *testing.T) {
	long := Run{Scenario: "long", Variant: "v", Iteration: 1, Start: t0, End: at(1800)}
	for s := range 1800 {
		long.Records = append(long.Records, rec(PathService, float64(s), OK, time.Millisecond))
	}
	long.Records = append(long.Records, rec(PathService, 900.5, Reset, 0)) // one failure among 1800

	noTimes := Run{Scenario: "no-times", Records: []Record{
		rec(PathConsul, 0, OK, 0), rec(PathConsul, 3.2, Refused, 0), rec(PathConsul, 7, OK, 0),
	}}
	tests := []struct {
		name string
		run  Run
		fail []time.Time // when the failures were
	}{
		{"sample", sampleRun(), []time.Time{at(2.5)}},
		{"one failure in half an hour", long, []time.Time{at(900.5)}},
		{"no start or end", noTimes, []time.Time{at(3.2)}},
		{"no failures", func() Run { r := sampleRun(); r.Records = r.Records[:200]; return r }(), nil},
		{"empty", Run{Scenario: "empty"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl, red := redColumns(t, tt.run)
			want := make([]bool, tl.secs)
			for _, f := range tt.fail {
				i, ok := tl.bucket(f)
				if !ok {
					t.Fatalf("failure at %s outside the timeline", f)
				}
				want[i] = true
			}
			for i := range want {
				if want[i] && !red[i] {
					t.Errorf("second %d had a failure and shows no red", i)
				}
				if !want[i] && red[i] && !sharesColumns(tl, i, want) {
					t.Errorf("second %d had no failure and shows red", i)
				}
			}
		})
	}
}

func TestNiceStep(t *testing.T) {
	tests := []struct{ top, n, want int }{
		{1, 5, 1}, {5, 5, 1}, {6, 5, 2}, {10, 5, 2}, {11, 5, 5}, {201, 5, 50}, {1000, 5, 200}, {7, 8, 1}, {30, 8, 5},
	}
	for _, tt := range tests {
		if got := niceStep(tt.top, tt.n); got != tt.want {
			t.Errorf("niceStep(%d, %d) = %d, want %d", tt.top, tt.n, got, tt.want)
		}
	}
}

func TestRecordJSON(t *testing.T) {
	in := Record{Path: PathConsul, Conn: ConnNew, Start: time.Unix(0, 1795424211557649538), Latency: 69900401, Outcome: Reset,
		Status: 502, Pod: "web-1", Target: "10.244.1.7:8080", Err: "EOF"}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"t0":1795424211557649538,"p":"consul","c":"new","l":69900401,"o":"reset","s":502,"pod":"web-1","t":"10.244.1.7:8080","e":"EOF"}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
	g := Record{Path: PathService, Proto: ProtoGRPC, Retry: true, Start: time.Unix(0, 1), Outcome: OK}
	if b, err := json.Marshal(g); err != nil || string(b) != `{"t0":1,"p":"service","pr":"grpc","r":true,"l":0,"o":"ok"}` {
		t.Errorf("gRPC record JSON %s, %v", b, err)
	}
	var out Record
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.Start.Equal(in.Start) {
		t.Errorf("start %s, want %s", out.Start, in.Start)
	}
	out.Start = in.Start
	if out != in {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
}

func TestWriteFilesAndLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := sampleRun()
	md, err := WriteFiles(dir, []Run{r})
	if err != nil {
		t.Fatal(err)
	}
	if md != filepath.Join(dir, "report.md") {
		t.Errorf("markdown at %s", md)
	}
	text, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "| control | 2 | service | 102 |") {
		t.Errorf("report.md:\n%s", text)
	}
	if _, err := os.Stat(filepath.Join(dir, "rolling-update-control-2.png")); err != nil {
		t.Error(err)
	}

	got, err := Load(filepath.Join(dir, "rolling-update-control-2.json"))
	if err != nil {
		t.Fatal(err)
	}
	// times come back without their monotonic reading and location: compare instants
	if len(got.Records) != len(r.Records) || len(got.Drains) != len(r.Drains) || len(got.Ready) != len(r.Ready) {
		t.Fatalf("round trip lost data: %d records, %d drains, %d samples", len(got.Records), len(got.Drains), len(got.Ready))
	}
	for i := range r.Records {
		g, w := got.Records[i], r.Records[i]
		if !g.Start.Equal(w.Start) {
			t.Fatalf("record %d starts at %s, want %s", i, g.Start, w.Start)
		}
		g.Start = w.Start
		if g != w {
			t.Fatalf("record %d: got %+v, want %+v", i, g, w)
		}
	}
	if !got.Start.Equal(r.Start) || !got.End.Equal(r.End) || !got.Drains[2].Exited.Equal(r.Drains[2].Exited) || got.Ready[1].Ready != 7 {
		t.Errorf("round trip changed the run: %+v", got)
	}
	if !reflect.DeepEqual(Summarize(got), Summarize(r)) {
		t.Error("the loaded run summarizes differently")
	}

	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "bad.json")); err == nil {
		t.Error("Load of broken JSON succeeded")
	}
}

// protoRec is a record of a caller of protocol p.
func protoRec(path Path, p Protocol, retry bool, o Outcome) Record {
	r := rec(path, 1, o, time.Millisecond)
	r.Proto, r.Retry = p, retry
	return r
}

func TestSummarizeByProtocol(t *testing.T) {
	r := Run{Scenario: "s", Variant: "v", Iteration: 1, Records: []Record{
		protoRec(PathConsul, ProtoGRPC, true, OK),
		protoRec(PathConsul, ProtoGRPC, false, Status5xx),
		protoRec(PathService, ProtoGRPC, false, Reset),
		protoRec(PathService, "quic", false, OK),
		protoRec(PathService, ProtoH2C, false, OK),
		protoRec(PathConsul, ProtoHTTP1, false, OK),
		protoRec(PathService, ProtoHTTP1Default, false, Refused),
		protoRec(PathService, ProtoHTTP1, false, OK),
	}}
	var got []string
	for _, s := range Summarize(r) {
		got = append(got, fmt.Sprintf("%s %d/%d %v", s.Caller(), s.Failed, s.Requests, s.Failures))
	}
	want := []string{
		"service 0/1 map[]",
		"consul 0/1 map[]",
		"service, http1-default 1/1 map[refused:1]",
		"service, h2c 0/1 map[]",
		"service, grpc 1/1 map[reset:1]",
		"consul, grpc 1/1 map[5xx:1]",
		"consul, grpc, retry 0/1 map[]",
		"service, quic 0/1 map[]",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("summaries\n got %q\nwant %q", got, want)
	}
}

func TestCaller(t *testing.T) {
	tests := []struct {
		s    Summary
		want string
	}{
		{Summary{Path: PathService}, "service"},
		{Summary{Path: PathService, Conn: ConnNew}, "service, new conn"},
		{Summary{Path: PathService, Proto: ProtoHTTP1Default, Conn: ConnNew}, "service, http1-default, new conn"},
		{Summary{Path: PathConsul, Proto: ProtoGRPC, Retry: true}, "consul, grpc, retry"},
		{Summary{Path: PathConsul, Retry: true}, "consul, retry"},
	}
	for _, tt := range tests {
		if got := tt.s.Caller(); got != tt.want {
			t.Errorf("Caller() = %q, want %q", got, tt.want)
		}
	}
}

func TestMarkdownByProtocol(t *testing.T) {
	run := func(variant string, iteration int, recs ...Record) Run {
		return Run{Scenario: "rolling-update", Variant: variant, Iteration: iteration, Records: recs}
	}
	var sums []Summary
	for _, r := range []Run{
		run("lastcall", 1, protoRec(PathService, ProtoHTTP1, false, OK), protoRec(PathService, ProtoGRPC, false, OK),
			protoRec(PathConsul, ProtoGRPC, false, OK)),
		run("lastcall", 2, protoRec(PathService, ProtoGRPC, false, OK), protoRec(PathConsul, ProtoGRPC, true, OK)),
		run("control", 1, protoRec(PathService, ProtoHTTP1, false, Refused), protoRec(PathService, ProtoGRPC, false, Reset),
			protoRec(PathConsul, ProtoGRPC, false, Status5xx), protoRec(PathConsul, ProtoH2C, false, Timeout)),
	} {
		sums = append(sums, Summarize(r)...)
	}
	var b bytes.Buffer
	if err := Markdown(&b, "t", sums); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	rows := []string{
		"| lastcall | 1 | service, grpc | 1 | **0** | 0 | 0 | 0 | 0 | 0 |",
		"Failures by protocol and class, over the runs and paths:\n\n| variant | protocol | runs | requests | failed | refused | reset | timeout | 5xx | other |\n",
		"| lastcall | http1 | 1 | 1 | **0** | 0 | 0 | 0 | 0 | 0 |\n" +
			"| lastcall | grpc | 2 | 3 | **0** | 0 | 0 | 0 | 0 | 0 |\n" +
			"| lastcall | grpc, retry | 1 | 1 | **0** | 0 | 0 | 0 | 0 | 0 |\n" +
			"| control | http1 | 1 | 1 | **1** | 1 | 0 | 0 | 0 | 0 |\n" +
			"| control | h2c | 1 | 1 | **1** | 0 | 0 | 1 | 0 | 0 |\n" +
			"| control | grpc | 1 | 2 | **2** | 0 | 1 | 0 | 1 | 0 |\n",
	}
	for _, want := range rows {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestParseProtocol(t *testing.T) {
	tests := []struct {
		in   string
		want Protocol
		ok   bool
	}{
		{"", ProtoHTTP1, true}, {"http1", ProtoHTTP1, true}, {"http1-default", ProtoHTTP1Default, true},
		{"h2c", ProtoH2C, true}, {"grpc", ProtoGRPC, true}, {"HTTP1", "HTTP1", false}, {"h2", "h2", false},
	}
	for _, tt := range tests {
		if got, ok := ParseProtocol(tt.in); got != tt.want || ok != tt.ok {
			t.Errorf("ParseProtocol(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
	if ProtoHTTP1.String() != "http1" || ProtoGRPC.String() != "grpc" {
		t.Error("String")
	}
}
