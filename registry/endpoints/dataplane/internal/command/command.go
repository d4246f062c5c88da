// Package command streams the standard output of a read-only dump command (iptables-save, nft
// list), so a probe parses rules while they are printed instead of holding the whole dump.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// stderrLimit bounds what is kept of a command's standard error for its error message.
const stderrLimit = 4 << 10

// Error is a dump command that failed; Stderr lets a caller recognise known failures.
type Error struct {
	Command string
	Stderr  string
	Err     error
}

func (e *Error) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if msg == "" {
		return fmt.Sprintf("%s: %v", e.Command, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Command, e.Err, msg)
}

func (e *Error) Unwrap() error { return e.Err }

// Output runs name with args and returns its standard output, for commands whose output is
// small. A failed command is an *Error whose ExitCode and Stderr tell known failures apart.
func Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd, stderr := newCmd(ctx, name, args)
	out, err := cmd.Output()
	if err != nil {
		return out, &Error{Command: strings.Join(append([]string{name}, args...), " "), Stderr: stderr.String(), Err: err}
	}
	return out, nil
}

// ExitCode is the exit status of a command that ran and failed, -1 otherwise.
func (e *Error) ExitCode() int {
	var exit *exec.ExitError
	if errors.As(e.Err, &exit) {
		return exit.ExitCode()
	}
	return -1
}

// Start runs name with args and returns its standard output. Closing it stops the command if
// it is still printing, waits for it, and returns an *Error if it failed.
func Start(ctx context.Context, name string, args ...string) (io.ReadCloser, error) {
	cmd, stderr := newCmd(ctx, name, args)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, &Error{Command: name, Err: err}
	}
	return &output{ReadCloser: stdout, cmd: cmd, stderr: stderr, line: strings.Join(append([]string{name}, args...), " ")}, nil
}

// newCmd prepares name with args, keeping the start of its standard error.
func newCmd(ctx context.Context, name string, args []string) (*exec.Cmd, *limitedBuffer) {
	cmd := exec.CommandContext(ctx, name, args...)
	// Messages in English whatever the node's locale, so callers can match them.
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	stderr := &limitedBuffer{limit: stderrLimit}
	cmd.Stderr = stderr
	return cmd, stderr
}

type output struct {
	io.ReadCloser
	cmd    *exec.Cmd
	stderr *limitedBuffer
	line   string
	once   sync.Once
	err    error
}

func (o *output) Close() error {
	o.once.Do(func() {
		// One more read tells whether the reader took the whole output: then the command's
		// exit status counts. If it stopped early (for a reason of its own), closing our end
		// makes a command that is still printing fail on its next write instead of blocking
		// on a full pipe, and that failure is not reported.
		_, readErr := o.Read(make([]byte, 1))
		finished := errors.Is(readErr, io.EOF) || errors.Is(readErr, os.ErrClosed)
		_ = o.ReadCloser.Close()
		err := o.cmd.Wait()
		if err != nil && finished {
			o.err = &Error{Command: o.line, Stderr: o.stderr.String(), Err: err}
		}
	})
	return o.err
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.limit - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
