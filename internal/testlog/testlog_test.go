package testlog

import (
	"log/slog"
	"testing"
)

func TestRecorder(t *testing.T) {
	var h Recorder
	l := slog.New(&h).With("k", "v")
	l.Debug("one")
	l.Info("two")
	rs := h.Records()
	if len(rs) != 2 || rs[0].Message != "one" || rs[0].Level != slog.LevelDebug || rs[1].Message != "two" {
		t.Fatalf("records %v", rs)
	}
}
