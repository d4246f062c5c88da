package controllers

import (
	"bytes"
	"encoding/json"
	"flag"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// A registry's slog lines come out of the controller's zap logger, as JSON, at their level.
func TestSlogJoinsTheControllersLog(t *testing.T) {
	tests := []struct {
		name  string
		level string   // --zap-log-level
		want  []string // levels of the lines that come out
	}{
		{"info", "info", []string{"info", "warn", "error"}},
		{"debug", "debug", []string{"debug", "info", "warn", "error"}},
		{"error", "error", []string{"error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			opts := zap.Options{DestWriter: &buf}
			fs := flag.NewFlagSet("controller", flag.ContinueOnError)
			opts.BindFlags(fs)
			if err := fs.Parse([]string{"--zap-log-level=" + tt.level}); err != nil {
				t.Fatal(err)
			}
			log := Slog(zap.New(zap.UseFlagOptions(&opts)).WithName("registry")).With("registry", "consul")
			log.Debug("watch ended early")
			log.Info("deregistered", "id", "web-1")
			log.Warn("agent services unreadable")
			log.Error("gone")
			var levels []string
			for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var entry map[string]any
				if err := json.Unmarshal([]byte(line), &entry); err != nil {
					t.Fatalf("not a zap JSON line: %q", line)
				}
				if entry["logger"] != "registry" || entry["registry"] != "consul" {
					t.Errorf("line lacks the logger name or the attributes: %q", line)
				}
				levels = append(levels, entry["level"].(string))
			}
			if strings.Join(levels, ",") != strings.Join(tt.want, ",") {
				t.Errorf("levels = %v, want %v\n%s", levels, tt.want, buf.String())
			}
		})
	}
}
