package proxy_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests and examples if any goroutine outlives
// them: sessions, tunnels, servers and services must all have been joined.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
