package dialer

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
)

// Sentinel errors. Every error a Dialer of this module returns matches one of
// them with errors.Is (or is the context's error, or an I/O error of the
// network under the tunnel).
var (
	// ErrUnsupportedNetwork: the network is not "tcp" (or "tcp4"/"tcp6").
	ErrUnsupportedNetwork = errors.New("unsupported network")
	// ErrBadAddress: the address is not host:port, the host is empty or too
	// long, or a port is outside 1-65535.
	ErrBadAddress = errors.New("bad address")
	// ErrUnauthorized: the server refused the token (HTTP 401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the token may not use this sprite (HTTP 403).
	ErrForbidden = errors.New("forbidden")
	// ErrUnknownSprite: the server knows no sprite of that name (HTTP 404).
	ErrUnknownSprite = errors.New("unknown sprite")
	// ErrUnavailable: the server is shutting down or over a limit (HTTP 429
	// or 503); trying again later may work.
	ErrUnavailable = errors.New("server unavailable")
	// ErrBadRequest: the server rejected the request as malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrTargetRefused: the target inside the sprite refused the connection.
	ErrTargetRefused = errors.New("connection refused by target")
	// ErrTargetTimeout: the server timed out dialing the target. It is a
	// net.Error whose Timeout method reports true.
	ErrTargetTimeout error = timeoutError{"timeout dialing target"}
	// ErrTargetForbidden: the server's target policy does not allow the
	// address.
	ErrTargetForbidden = errors.New("target not allowed by policy")
	// ErrTargetUnreachable: the target's host could not be resolved or
	// reached.
	ErrTargetUnreachable = errors.New("target unreachable")
	// ErrTunnelClosed: the tunnel ended before or during the handshake, or the
	// peer violated the protocol.
	ErrTunnelClosed = errors.New("tunnel closed")
)

type timeoutError struct{ s string }

func (e timeoutError) Error() string   { return e.s }
func (e timeoutError) Timeout() bool   { return true }
func (e timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

// Error codes of the wire protocol, as carried in a server's JSON error
// replies (both the HTTP refusal body and the handshake's error reply).
const (
	CodeConnectionRefused = "connection_refused"
	CodeTimeout           = "timeout"
	CodeForbidden         = "forbidden"
	CodeBadRequest        = "bad_request"
	CodeUnreachable       = "unreachable"
	// CodeUnavailable: the server is over a limit or shutting down (as an
	// error reply: its tunnel caps filled between the upgrade and the
	// first message).
	CodeUnavailable = "unavailable"
)

// TargetError is the server's handshake error reply: the tunnel was
// established but the target could not be (or may not be) dialed.
// errors.Is matches it against ErrTargetRefused, ErrTargetTimeout,
// ErrTargetForbidden, ErrTargetUnreachable, ErrBadRequest or ErrUnavailable
// by its Code.
type TargetError struct {
	Code    string // one of the Code* constants, or a code this package does not know
	Message string // the server's human-readable text, possibly empty
}

// Error describes the refusal, the server's message included.
func (e *TargetError) Error() string {
	s := e.sentinelText()
	if e.Message != "" && e.Message != s {
		return s + ": " + e.Message
	}
	return s
}

func (e *TargetError) sentinelText() string {
	if s := targetSentinel(e.Code); s != nil {
		return s.Error()
	}
	return "target error " + e.Code
}

// Is reports whether target is the sentinel for e's code.
func (e *TargetError) Is(target error) bool {
	s := targetSentinel(e.Code)
	return s != nil && s == target
}

// Timeout reports whether the server timed out dialing the target.
func (e *TargetError) Timeout() bool { return e.Code == CodeTimeout }

// Temporary is part of net.Error; it reports the same as Timeout.
func (e *TargetError) Temporary() bool { return e.Timeout() }

var _ net.Error = (*TargetError)(nil)

func targetSentinel(code string) error {
	switch code {
	case CodeConnectionRefused:
		return ErrTargetRefused
	case CodeTimeout:
		return ErrTargetTimeout
	case CodeForbidden:
		return ErrTargetForbidden
	case CodeUnreachable:
		return ErrTargetUnreachable
	case CodeBadRequest:
		return ErrBadRequest
	case CodeUnavailable:
		return ErrUnavailable
	}
	return nil
}

// CodeOf returns the wire protocol code for err (one of the Code* constants),
// for servers that turn a dial error into a reply; "unreachable" when no
// better code fits.
func CodeOf(err error) string {
	switch {
	case errors.Is(err, ErrTargetRefused):
		return CodeConnectionRefused
	case errors.Is(err, ErrTargetForbidden):
		return CodeForbidden
	case errors.Is(err, ErrBadAddress), errors.Is(err, ErrBadRequest), errors.Is(err, ErrUnsupportedNetwork):
		return CodeBadRequest
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return CodeTimeout
	}
	return CodeUnreachable
}

// HTTPError is a server's refusal of the WebSocket upgrade. errors.Is
// matches it against ErrUnauthorized (401), ErrForbidden (403),
// ErrUnknownSprite (404), ErrUnavailable (429, 503) and ErrBadRequest (400).
type HTTPError struct {
	StatusCode int    // the HTTP status, e.g. 401
	Code       string // the body's "error" field, if the body was JSON
	Message    string // the body's "message" field, if the body was JSON
}

// Error describes the refusal: the status and the server's message.
func (e *HTTPError) Error() string {
	s := fmt.Sprintf("server refused the tunnel: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		s += ": " + e.Message
	} else if e.Code != "" {
		s += ": " + e.Code
	}
	return s
}

// Is reports whether target is the sentinel for e's status code.
func (e *HTTPError) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusUnauthorized:
		return target == ErrUnauthorized
	case http.StatusForbidden:
		return target == ErrForbidden
	case http.StatusNotFound:
		return target == ErrUnknownSprite
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return target == ErrUnavailable
	case http.StatusBadRequest:
		return target == ErrBadRequest
	}
	return false
}

// Addr is the address of a target inside a sprite. It is what dial errors
// name, and what a tunnel's RemoteAddr reports when the server did not name
// an IP address.
type Addr struct {
	Sprite  string // the sprite's name
	Address string // host:port as seen from inside the sprite
}

// Network returns "tcp".
func (a *Addr) Network() string { return "tcp" }

// String returns "sprite/host:port".
func (a *Addr) String() string {
	if a.Sprite == "" {
		return a.Address
	}
	return a.Sprite + "/" + a.Address
}

// OpError wraps err as the *net.OpError a failed dial of address in sprite
// returns. A nil err gives nil.
func OpError(network, sprite, address string, err error) error {
	if err == nil {
		return nil
	}
	if op, ok := err.(*net.OpError); ok {
		if _, ours := op.Addr.(*Addr); ours {
			return err
		}
	}
	return &net.OpError{Op: "dial", Net: network, Addr: &Addr{Sprite: sprite, Address: address}, Err: err}
}

// Error codes of the resume extension's error replies.
const (
	// CodeGone: the server knows no tunnel of that resume token (it ended,
	// its grace expired, the token was used up, or the server restarted).
	CodeGone = "gone"
	// CodeInconsistent: the received count of a resume is outside what the
	// other side sent and has not seen acknowledged.
	CodeInconsistent = "inconsistent"
)

// Reasons a resumable tunnel ends for good (ResumeError.Reason).
const (
	ResumeGraceExpired = "grace expired"
	ResumeGone         = "tunnel gone"
	ResumeRevoked      = "token refused"
	ResumeInconsistent = "inconsistent offsets"
)

// ResumeError ends a resumable tunnel (the resume extension) whose
// connection dropped and that could not be carried on over a new one:
// Reason is one of the Resume* reasons, Err what caused it, if anything.
// It matches ErrTunnelClosed, never io.EOF.
type ResumeError struct {
	Reason string
	Err    error
}

func (e *ResumeError) Error() string {
	if e.Err == nil {
		return "tunnel closed: resume failed: " + e.Reason
	}
	return "tunnel closed: resume failed: " + e.Reason + ": " + e.Err.Error()
}

// Is matches ErrTunnelClosed.
func (e *ResumeError) Is(target error) bool { return target == ErrTunnelClosed }

// Unwrap returns the cause, unless it is (or wraps) io.EOF or a
// deadline: the tunnel's end must read neither as a clean end of stream
// nor as a timeout that a later Read could outlive (Error still says it).
func (e *ResumeError) Unwrap() error {
	if errors.Is(e.Err, io.EOF) || errors.Is(e.Err, os.ErrDeadlineExceeded) {
		return nil
	}
	return e.Err
}
