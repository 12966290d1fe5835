// Package testlog is a slog.Handler that keeps every record, for tests that
// check what a package logs and at which level.
package testlog

import (
	"context"
	"log/slog"
	"sync"
)

// Recorder is a slog.Handler that keeps every record at any level. Its zero
// value is ready; it is safe for concurrent use.
type Recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

var _ slog.Handler = (*Recorder)(nil)

// Enabled reports true for every level.
func (h *Recorder) Enabled(context.Context, slog.Level) bool { return true }

// Handle keeps a copy of r.
func (h *Recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}

// WithAttrs returns h: attributes are not kept apart.
func (h *Recorder) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup returns h: groups are not kept apart.
func (h *Recorder) WithGroup(string) slog.Handler { return h }

// Records returns the records kept so far.
func (h *Recorder) Records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.records...)
}
