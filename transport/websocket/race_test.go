//go:build race

package websocket

import "testing"

// skipUnderRace skips allocation counts, which the race detector's own
// allocations blur; .ci/run runs them without it.
func skipUnderRace(t *testing.T) { t.Skip("allocation counts run without -race (see .ci/run)") }
