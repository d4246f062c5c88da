package report

import (
	"bytes"
	"image/png"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)

func rec(p Path, sec float64, o Outcome, lat time.Duration) Record {
	return Record{Path: p, Start: t0.Add(time.Duration(sec * float64(time.Second))), Outcome: o, Latency: lat}
}

func sampleRun() Run {
	r := Run{Scenario: "rolling-update", Variant: "control", Iteration: 2, Start: t0, End: t0.Add(20 * time.Second),
		Drains: []Drain{
			{Pod: "a", Deleted: t0.Add(time.Second), Exited: t0.Add(3 * time.Second)},
			{Pod: "b", Deleted: t0.Add(2 * time.Second), Exited: t0.Add(3 * time.Second)},
			{Pod: "c", Deleted: t0.Add(4 * time.Second), Exited: t0.Add(9 * time.Second)},
		},
		Ready: []Sample{{t0.Add(-10 * time.Second), 6}, {t0.Add(3 * time.Second), 7}, {t0.Add(12 * time.Second), 6}},
	}
	for i := range 100 {
		r.Records = append(r.Records, rec(PathService, float64(i)*0.1, OK, time.Duration(i+1)*time.Millisecond))
		r.Records = append(r.Records, rec(PathConsul, float64(i)*0.1, OK, 50*time.Millisecond))
	}
	r.Records = append(r.Records,
		rec(PathService, 2.5, Refused, 0), rec(PathService, 2.6, Reset, 0),
		rec(PathConsul, 2.5, Status5xx, 0), rec(PathConsul, 2.7, Timeout, 5*time.Second), rec(PathConsul, 2.8, Other, 0))
	return r
}

func TestSummarize(t *testing.T) {
	sums := Summarize(sampleRun())
	if len(sums) != 2 {
		t.Fatalf("%d summaries, want one per path", len(sums))
	}
	tests := []struct {
		got, want Summary
	}{
		{sums[0], Summary{Path: PathService, Requests: 102, Failed: 2, Failures: map[Outcome]int{Refused: 1, Reset: 1},
			LatencyP50: 50 * time.Millisecond, LatencyP99: 99 * time.Millisecond}},
		{sums[1], Summary{Path: PathConsul, Requests: 103, Failed: 3, Failures: map[Outcome]int{Status5xx: 1, Timeout: 1, Other: 1},
			LatencyP50: 50 * time.Millisecond, LatencyP99: 50 * time.Millisecond}},
	}
	for _, tt := range tests {
		g, w := tt.got, tt.want
		if g.Path != w.Path || g.Requests != w.Requests || g.Failed != w.Failed || g.LatencyP50 != w.LatencyP50 || g.LatencyP99 != w.LatencyP99 {
			t.Errorf("%s: got %+v, want %+v", w.Path, g, w)
		}
		for o, n := range w.Failures {
			if g.Failures[o] != n {
				t.Errorf("%s: %d %s, want %d", w.Path, g.Failures[o], o, n)
			}
		}
		if g.Failures[OK] != 0 {
			t.Errorf("%s: ok counted as a failure", w.Path)
		}
		// drains 2 s, 1 s, 5 s: p50 2 s, max 5 s; rollout 20 s
		if g.DrainP50 != 2*time.Second || g.DrainMax != 5*time.Second || g.Rollout != 20*time.Second {
			t.Errorf("%s: drain p50 %s max %s rollout %s, want 2s 5s 20s", w.Path, g.DrainP50, g.DrainMax, g.Rollout)
		}
		if g.Scenario != "rolling-update" || g.Variant != "control" || g.Iteration != 2 {
			t.Errorf("labels not carried: %+v", g)
		}
	}
}

func TestSummarizeEmpty(t *testing.T) {
	if s := Summarize(Run{Scenario: "x"}); len(s) != 0 {
		t.Errorf("a run without records gave %d summaries", len(s))
	}
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
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
	}
	for _, tt := range tests {
		if got := Percentile(tt.in, tt.p); got != tt.want {
			t.Errorf("Percentile(%v, %d) = %s, want %s", tt.in, tt.p, got, tt.want)
		}
	}
}

func TestMarkdown(t *testing.T) {
	var b bytes.Buffer
	if err := Markdown(&b, "title", Summarize(sampleRun())); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"## rolling-update",
		"| control | 2 | service | 102 | **2** | 1 | 1 | 0 | 0 | 0 | 50.0 ms | 99.0 ms | 2000.0 ms | 5000.0 ms | 20.0 s |",
		"| control | 2 | consul | 103 | **3** | 0 | 0 | 1 | 1 | 1 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestTimelineMarksFailedSecondsOnly(t *testing.T) {
	r := sampleRun() // failures only in second 2 after the change
	var b bytes.Buffer
	if err := WriteTimeline(&b, r); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&b)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	tl := bucketize(r)
	redIn := func(sec int) bool {
		x0, x1 := tl.x(t0.Add(time.Duration(sec)*time.Second))+1, tl.x(t0.Add(time.Duration(sec+1)*time.Second))-1
		for x := x0; x < x1; x++ {
			for y := marginT; y < height-marginB; y++ {
				if img.At(x, y) == ColorFailed {
					return true
				}
			}
		}
		return false
	}
	if !redIn(2) {
		t.Error("no red in the second with failures")
	}
	for _, sec := range []int{0, 1, 3, 5, 8} {
		if redIn(sec) {
			t.Errorf("red in second %d, which had no failure", sec)
		}
	}
}

func TestWriteFilesAndLoad(t *testing.T) {
	dir := t.TempDir()
	r := sampleRun()
	md, err := WriteFiles(dir, []Run{r})
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(md) != "report.md" {
		t.Errorf("markdown at %s", md)
	}
	got, err := Load(filepath.Join(dir, r.Name()+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Records) != len(r.Records) || !got.Records[3].Start.Equal(r.Records[3].Start) ||
		got.Records[3].Latency != r.Records[3].Latency || got.Records[len(r.Records)-1].Outcome != Other ||
		!got.Drains[2].Exited.Equal(r.Drains[2].Exited) || got.Ready[1].Ready != 7 {
		t.Errorf("round trip changed the run: %+v", got.Records[3])
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("Load of a missing file succeeded")
	}
}
