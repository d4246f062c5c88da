package prestop

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"
)

// The helper hands its result to lastcall-controller through the container's termination
// message, which needs no RBAC: the app's ServiceAccount keeps read-only access to its pod. The
// kubelet reads the file when the container ends and publishes it as
// status.containerStatuses[].state.terminated.message, where the controller's drain timeline
// picks it up.

// ReportMarker starts the line the helper appends to the termination message.
const ReportMarker = "lastcall-prestop: "

// DefaultResultFile is the kubelet's default terminationMessagePath.
const DefaultResultFile = "/dev/termination-log"

// handOverTimeout bounds the write of the report: a local file takes microseconds, and a file
// system that hangs must not hold the app's SIGTERM back.
const handOverTimeout = 100 * time.Millisecond

// Report is the drain's result as the helper hands it over: about 120 bytes, far below the
// kubelet's 4096-byte limit per container. Durations are whole milliseconds. New fields must be
// optional: an older controller ignores them, a newer one reads older reports.
type Report struct {
	// Open is how many inbound connections on the serving ports were still open when the helper
	// returned; nil when its meter does not count connections.
	Open *int `json:"open,omitempty"`
	// QuietMs is the quiet window chosen and QuietWhy why (QuietFloor, ...); QuietWhy is empty
	// when no traffic was watched.
	QuietMs  int64  `json:"quietMs"`
	QuietWhy string `json:"quietWhy,omitempty"`
	// Quiet: the traffic was quiet for the window within the budget.
	Quiet bool `json:"quiet"`
	// FellBack: a registry could not confirm the removal and the fallback wait covered it.
	FellBack bool `json:"fellBack"`
	// TookMs is how long the helper ran, BudgetMs how long it was allowed to.
	TookMs   int64 `json:"tookMs"`
	BudgetMs int64 `json:"budgetMs"`
	// CPUMs is the CPU time (user + system) the helper's process used, in whole milliseconds;
	// nil when unknown.
	CPUMs *int64 `json:"cpuMs,omitempty"`
}

// ReportOf is the report of a drain.
func ReportOf(res Result) Report {
	r := Report{
		QuietMs: res.QuietWindow.Window.Milliseconds(), QuietWhy: res.QuietWindow.Reason, Quiet: res.Quiet,
		FellBack: res.FellBack, TookMs: res.Elapsed.Milliseconds(), BudgetMs: res.Budget.Milliseconds(),
	}
	if res.OpenKnown {
		n := res.OpenConnections
		r.Open = &n
	}
	if res.CPUKnown {
		ms := res.CPU.Milliseconds()
		r.CPUMs = &ms
	}
	return r
}

// Line is the report as appended: the marker, JSON, a newline.
func (r Report) Line() string {
	b, _ := json.Marshal(r) // plain fields: cannot fail
	return ReportMarker + string(b) + "\n"
}

// ParseReport reads the last report in a termination message. The marker may follow the app's
// own text on the same line (an app that wrote no final newline); what follows it up to the end
// of the line must be one whole JSON object with tookMs and budgetMs. ok is false when there is
// no marker, or when the last one is followed by anything else (the kubelet truncates long
// messages; an app may have written over the file).
func ParseReport(message string) (r Report, ok bool) {
	i := strings.LastIndex(message, ReportMarker)
	if i < 0 {
		return Report{}, false
	}
	line := message[i+len(ReportMarker):]
	if j := strings.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	line = strings.TrimSpace(line)
	var fields map[string]json.RawMessage
	if json.Unmarshal([]byte(line), &fields) != nil || fields["tookMs"] == nil || fields["budgetMs"] == nil {
		return Report{}, false
	}
	if json.Unmarshal([]byte(line), &r) != nil {
		return Report{}, false
	}
	if (r.Open != nil && *r.Open < 0) || (r.CPUMs != nil && *r.CPUMs < 0) || r.QuietMs < 0 || r.TookMs < 0 || r.BudgetMs < 0 {
		return Report{}, false
	}
	return r, true
}

// AppendReport appends r's line to path, which must already exist and be a regular file: the
// kubelet creates the termination message file, and the helper never creates files. The
// error wraps fs.ErrNotExist when the file is absent. Opening does not block (a FIFO without
// a reader fails at once).
func AppendReport(path string, r Report) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("open the result file: %w", err)
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat the result file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%s): want the container's terminationMessagePath", path, st.Mode().Type())
	}
	if _, err := f.WriteString(r.Line()); err != nil {
		return fmt.Errorf("append to the result file: %w", err)
	}
	return nil
}

// HandOver appends r to path (empty: off) for lastcall-controller. It never fails the drain and
// returns within handOverTimeout whatever the file system does; a problem is logged once.
func HandOver(path string, r Report, log *slog.Logger) {
	if path == "" {
		return
	}
	done := make(chan error, 1) // buffered: a write that hangs past the timeout never blocks
	go func() { done <- AppendReport(path, r) }()
	var err error
	tm := time.NewTimer(handOverTimeout)
	defer tm.Stop()
	select {
	case err = <-done:
	case <-tm.C:
		err = fmt.Errorf("the result file took longer than %s to write", handOverTimeout)
	}
	switch {
	case err == nil:
		log.Debug("result handed over", "file", path, "report", strings.TrimSpace(r.Line()))
	case errors.Is(err, fs.ErrNotExist):
		// Not in a container, or a terminationMessagePath elsewhere that --result-file does not name.
		log.Info("result not handed over: the result file does not exist, and the helper does not create it",
			"file", path, "fix", "set --result-file / LASTCALL_RESULT_FILE to the container's terminationMessagePath")
	default:
		log.Warn("result not handed over", "file", path, "err", err)
	}
}
