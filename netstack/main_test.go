package netstack_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any goroutine outlives the tests: every test
// closes its Network, and Close must stop every goroutine its stacks
// started (gVisor's TCP processors included).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
