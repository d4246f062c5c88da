package prestop

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
)

func TestParseReport(t *testing.T) {
	full := Report{Open: ptr.To(2), QuietMs: 1200, QuietWhy: QuietTraffic, Quiet: true, TookMs: 3456, BudgetMs: 20000, CPUMs: ptr.To[int64](37)}
	line := full.Line()
	tests := []struct {
		name    string
		message string
		want    Report
		ok      bool
	}{
		{"our line alone", line, full, true},
		{"app's own text before", "panic: out of memory\ngoroutine 1 [running]\n" + line, full, true},
		{"app's text without a final newline", "exiting" + line, full, true},
		{"several lines: the last wins", Report{TookMs: 1, BudgetMs: 2}.Line() + "app\n" + line, full, true},
		{"without a trailing newline", strings.TrimSuffix(line, "\n"), full, true},
		{"CRLF", strings.TrimSuffix(line, "\n") + "\r\n", full, true},
		{"open unknown", ReportMarker + `{"quietMs":0,"quiet":false,"fellBack":true,"tookMs":5,"budgetMs":6}`, Report{FellBack: true, TookMs: 5, BudgetMs: 6}, true},
		{"fields a newer helper adds are ignored", ReportMarker + `{"open":0,"tookMs":5,"budgetMs":6,"later":{"x":1}}`, Report{Open: ptr.To(0), TookMs: 5, BudgetMs: 6}, true},
		{"no marker", "Sleep expired\n", Report{}, false},
		{"empty", "", Report{}, false},
		{"truncated by the kubelet", line[:len(line)/2], Report{}, false},
		{"the last line truncated, an earlier one whole", line + line[:len(line)-10], Report{}, false},
		{"garbage after the marker", ReportMarker + "not json\n", Report{}, false},
		{"text after the object", strings.TrimSuffix(line, "\n") + " and more\n", Report{}, false},
		{"JSON but not an object", ReportMarker + "null\n", Report{}, false},
		{"an object without the helper's fields", ReportMarker + "{}\n", Report{}, false},
		{"wrong types", ReportMarker + `{"open":"two","tookMs":5,"budgetMs":6}`, Report{}, false},
		{"negative CPU", ReportMarker + `{"cpuMs":-3,"tookMs":5,"budgetMs":6}`, Report{}, false},
		{"negative count", ReportMarker + `{"open":-1,"tookMs":5,"budgetMs":6}`, Report{}, false},
		{"marker without a space", strings.TrimSpace(ReportMarker) + `{"tookMs":5,"budgetMs":6}`, Report{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseReport(tt.message)
			if ok != tt.ok || !equalReports(got, tt.want) {
				t.Errorf("ParseReport = %+v, %v; want %+v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func equalReports(a, b Report) bool { return a.Line() == b.Line() }

func TestReportOf(t *testing.T) {
	res := Result{Budget: 20 * time.Second, FellBack: true, Quiet: true, QuietWindow: QuietChoice{Window: 1500 * time.Millisecond, Reason: QuietTraffic},
		OpenConnections: 3, OpenKnown: true, Elapsed: 4321 * time.Millisecond, CPU: 42 * time.Millisecond, CPUKnown: true}
	line := ReportOf(res).Line()
	want := ReportMarker + `{"open":3,"quietMs":1500,"quietWhy":"traffic","quiet":true,"fellBack":true,"tookMs":4321,"budgetMs":20000,"cpuMs":42}` + "\n"
	if line != want {
		t.Errorf("line\n %s want\n %s", line, want)
	}
	res.OpenConnections, res.OpenKnown, res.CPUKnown = 0, false, false
	if r := ReportOf(res); r.Open != nil || r.CPUMs != nil {
		t.Errorf("open connections and CPU unknown, reported %v and %v", r.Open, r.CPUMs)
	}
	if len(line) > 200 {
		t.Errorf("line is %d bytes; it shares the kubelet's 4096 bytes with the app's message", len(line))
	}
}

func TestAppendReport(t *testing.T) {
	r := Report{Open: ptr.To(1), TookMs: 10, BudgetMs: 20}
	t.Run("existing file: appended after the app's message", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "termination-log")
		if err := os.WriteFile(path, []byte("app says bye\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := AppendReport(path, r); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		if string(data) != "app says bye\n"+r.Line() {
			t.Errorf("file = %q", data)
		}
		if got, ok := ParseReport(string(data)); !ok || !equalReports(got, r) {
			t.Errorf("read back %+v, %v", got, ok)
		}
	})
	t.Run("absent: not created", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "termination-log")
		if err := AppendReport(path, r); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("err = %v, want not-exist", err)
		}
		if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the file was created (stat: %v)", err)
		}
	})
	t.Run("not a file", func(t *testing.T) {
		if err := AppendReport(t.TempDir(), r); err == nil {
			t.Error("a directory was accepted")
		}
	})
}

func TestHandOverLogsOnceAndNeverCreates(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		log  string // "" : nothing at info and above
	}{
		{"off", "", ""},
		{"absent", filepath.Join(dir, "absent"), "the result file does not exist"},
		{"unwritable", dir, "result not handed over"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			start := time.Now()
			HandOver(tt.path, Report{TookMs: 1, BudgetMs: 2}, slog.New(slog.NewTextHandler(&buf, nil)))
			if el := time.Since(start); el > handOverTimeout {
				t.Errorf("took %s", el)
			}
			if n := strings.Count(buf.String(), "\n"); (tt.log == "" && n != 0) || (tt.log != "" && (n != 1 || !strings.Contains(buf.String(), tt.log))) {
				t.Errorf("log %q; want one line with %q", buf.String(), tt.log)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("created %d files", len(entries))
	}
}
