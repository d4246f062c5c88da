package controllers

import (
	"context"
	"log/slog"

	"github.com/go-logr/logr"
)

// Slog bridges slog, which registry adapters log with, to logr, which the controller logs with:
// one sink, one format, one --zap-log-level. Give it the sink itself (the zap logger), not
// ctrl.Log: only a sink that knows slog keeps warnings apart from info. slog's Debug becomes
// logr's V(1), which --zap-log-level=debug shows.
func Slog(l logr.Logger) *slog.Logger {
	return slog.New(debugAsV1{logr.ToSlogHandler(l)})
}

// debugAsV1 maps slog's levels below Info (Debug is -4) onto logr's verbosity steps (V(1) is -1).
type debugAsV1 struct{ slog.Handler }

func verbosity(l slog.Level) slog.Level {
	if l < slog.LevelInfo {
		return (l - 3) / 4
	}
	return l
}

func (h debugAsV1) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, verbosity(l))
}

func (h debugAsV1) Handle(ctx context.Context, r slog.Record) error {
	r.Level = verbosity(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h debugAsV1) WithAttrs(attrs []slog.Attr) slog.Handler {
	return debugAsV1{h.Handler.WithAttrs(attrs)}
}

func (h debugAsV1) WithGroup(name string) slog.Handler { return debugAsV1{h.Handler.WithGroup(name)} }
