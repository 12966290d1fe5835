package session

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: every
// session, stream and test service must have been joined.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
