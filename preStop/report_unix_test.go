//go:build unix

package prestop

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A result file that would block (a FIFO nobody reads) fails at once: the app's SIGTERM is
// not held back for the timeline's sake.
func TestHandOverDoesNotBlockOnAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	var buf bytes.Buffer
	start := time.Now()
	HandOver(path, Report{TookMs: 1, BudgetMs: 2}, slog.New(slog.NewTextHandler(&buf, nil)))
	if el := time.Since(start); el > handOverTimeout {
		t.Errorf("took %s", el)
	}
	if !strings.Contains(buf.String(), "result not handed over") {
		t.Errorf("log %q", buf.String())
	}
}
