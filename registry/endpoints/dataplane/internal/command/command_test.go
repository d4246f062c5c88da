package command

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		read    int // bytes to read before Close; -1 reads all
		wantOut string
		wantErr string
	}{
		{"output streams", []string{"-c", "echo one; echo two"}, -1, "one\ntwo\n", ""},
		{"failure with its first stderr line", []string{"-c", "echo out; echo 'Error: No such file or directory' >&2; echo more >&2; exit 1"}, -1, "out\n", "sh -c echo out; echo 'Error: No such file or directory' >&2; echo more >&2; exit 1: exit status 1: Error: No such file or directory"},
		{"reader stops early: no hang, no error", []string{"-c", "yes"}, 10, "y\ny\ny\ny\ny\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Start(context.Background(), "sh", tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			var b []byte
			if tt.read < 0 {
				b, err = io.ReadAll(out)
			} else {
				b = make([]byte, tt.read)
				_, err = io.ReadFull(out, b)
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.wantOut {
				t.Errorf("read %q, want %q", b, tt.wantOut)
			}
			done := make(chan error, 1)
			go func() { done <- out.Close() }()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Close hangs")
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Close: %v", err)
				}
				return
			}
			var cmdErr *Error
			if !errors.As(err, &cmdErr) || err.Error() != tt.wantErr {
				t.Errorf("Close: %v, want %q", err, tt.wantErr)
			}
			if !strings.Contains(cmdErr.Stderr, "more") {
				t.Errorf("Stderr %q lacks the rest of standard error", cmdErr.Stderr)
			}
		})
	}
}

func TestStartMissingCommand(t *testing.T) {
	_, err := Start(context.Background(), "lastcall-no-such-command")
	if err == nil || !strings.Contains(err.Error(), "lastcall-no-such-command") {
		t.Errorf("got %v", err)
	}
}

func TestOutput(t *testing.T) {
	out, err := Output(context.Background(), "sh", "-c", "echo one")
	if err != nil || string(out) != "one\n" {
		t.Fatalf("got %q, %v", out, err)
	}
	_, err = Output(context.Background(), "sh", "-c", "echo 'chain missing' >&2; exit 3")
	var cmdErr *Error
	if !errors.As(err, &cmdErr) || cmdErr.ExitCode() != 3 || !strings.Contains(cmdErr.Stderr, "chain missing") {
		t.Fatalf("got %v", err)
	}
	if err.Error() != "sh -c echo 'chain missing' >&2; exit 3: exit status 3: chain missing" {
		t.Errorf("message %q", err)
	}
	_, err = Output(context.Background(), "lastcall-no-such-command")
	if !errors.As(err, &cmdErr) || cmdErr.ExitCode() != -1 {
		t.Errorf("missing command: %v", err)
	}
}
