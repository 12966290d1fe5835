package proxy_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests and examples if any goroutine outlives
// them: sessions, tunnels, servers and services must all have been joined.
// Run with SPRITEPROXY_TEST_CHILD set, the test binary is instead a child
// process of a test that needs its own environment (see childMain).
func TestMain(m *testing.M) {
	if name := os.Getenv(childEnv); name != "" {
		os.Exit(childMain(name))
	}
	goleak.VerifyTestMain(m)
}
