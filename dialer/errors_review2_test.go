package dialer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
)

// TestResumeErrorNeverEOF: ResumeError's doc says it matches
// ErrTunnelClosed and never io.EOF, whatever its cause: a cause that is
// (or wraps) io.EOF, or a deadline, must not make the tunnel's end read as
// a clean end of stream or as a timeout that a later Read could outlive.
// The cause's text is kept. Unwrap used to hand the cause on as is.
func TestResumeErrorNeverEOF(t *testing.T) {
	t.Parallel()
	for _, cause := range []error{io.EOF, fmt.Errorf("reading the reply: %w", io.EOF), os.ErrDeadlineExceeded} {
		err := error(&ResumeError{Reason: ResumeGone, Err: cause})
		if errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%v matches its cause %v", err, cause)
		}
		if !errors.Is(err, ErrTunnelClosed) {
			t.Errorf("%v does not match ErrTunnelClosed", err)
		}
		if want := "tunnel closed: resume failed: tunnel gone: " + cause.Error(); err.Error() != want {
			t.Errorf("Error() = %q, want %q", err.Error(), want)
		}
	}
	// Other causes stay reachable (a revoked token matches ErrForbidden).
	err := &ResumeError{Reason: ResumeRevoked, Err: fmt.Errorf("%w: no", ErrForbidden)}
	if !errors.Is(err, ErrForbidden) {
		t.Errorf("%v does not match ErrForbidden", err)
	}
}
