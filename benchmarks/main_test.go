package benchmarks

import (
	"os"
	"testing"

	"github.com/spriteproxy/spriteproxy/benchmarks/internal/rig"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// BenchmarkIdleTunnel runs this binary again as its client and server
	// processes.
	if role := os.Getenv(rig.ChildEnv); role != "" {
		os.Exit(rig.ChildMain(role))
	}
	goleak.VerifyTestMain(m)
}
