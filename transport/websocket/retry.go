package websocket

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Riding over a restart: a tunnel that failed before the server's reply
// opened nothing inside the sprite (the server dials a target only once it
// has read a first message, and answers every one it read), so the Dialer
// tries it again on a fresh connection, with a jittered backoff, within
// the dial's ctx. A replica of serve that restarts behind a balancer, or a
// server that is over a limit for a moment, then costs the application a
// short wait instead of a failed connection. Once the reply has come, the
// tunnel is the caller's: nothing after it is ever retried, since bytes
// may have reached the target. PROTOCOL.md §7 lists the failures retried.

// Retry defaults.
const (
	// DefaultRetryAttempts is how many attempts one dial makes, the first
	// included, when it fails before the server's reply.
	DefaultRetryAttempts = 4
	// DefaultRetryBackoff is the wait before the first retry; it doubles
	// after each one.
	DefaultRetryBackoff = 50 * time.Millisecond
	// DefaultMaxRetryBackoff caps a wait between two attempts. A refusal
	// whose Retry-After asks for longer is not retried. spriteproxy's
	// server asks for 1 s when it is over a limit or shutting down, which
	// is within it: a client rides over a replica's restart or a moment at
	// its cap, within the dial's ctx.
	DefaultMaxRetryBackoff = time.Second
)

// Retry says how a Dialer retries a tunnel that failed before the server's
// reply: the connection refused, reset or closed during the TCP, TLS or
// WebSocket handshake or before the reply, an idle connection found closed,
// or an HTTP 429, 502 or 503 refusal whose Retry-After, if any, is within
// MaxBackoff. The zero value means the defaults.
// Every wait is bounded by the dial's ctx: a dial whose ctx would end
// during the next wait gives up at once with the last attempt's error,
// which is the same typed error a dial without retries returns.
type Retry struct {
	// MaxAttempts bounds the attempts of one dial, the first included: 0
	// means DefaultRetryAttempts; 1 (or a negative value) turns retries
	// off.
	MaxAttempts int
	// Backoff is the wait before the first retry, doubled after each one
	// up to MaxBackoff; each wait is drawn at random between half of it
	// and all of it, so that clients cut off together do not come back
	// together. 0 (or negative) means DefaultRetryBackoff.
	Backoff time.Duration
	// MaxBackoff caps a wait. The server's Retry-After, when longer than
	// the backoff, is the wait; when longer than MaxBackoff, the refusal
	// is not retried (the server asked for more than the client will
	// wait). 0 (or negative) means DefaultMaxRetryBackoff; below 1 s,
	// a spriteproxy server's 429 and 503 (Retry-After: 1) are reported at
	// once.
	MaxBackoff time.Duration

	// sleep waits d or until ctx ends (tests replace it with a fake clock).
	sleep func(ctx context.Context, d time.Duration) error
}

// dialRetrying is dial, retried as d.Retry says while it fails before the
// server's reply.
func (d *Dialer) dialRetrying(ctx context.Context, sprite, network, address string) (*Conn, error) {
	r := &d.Retry
	attempts := r.MaxAttempts
	if attempts == 0 {
		attempts = DefaultRetryAttempts
	}
	backoff, maxBackoff := r.Backoff, r.MaxBackoff
	if backoff <= 0 {
		backoff = DefaultRetryBackoff
	}
	if maxBackoff <= 0 {
		maxBackoff = DefaultMaxRetryBackoff
	}
	sleep := r.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	for attempt := 1; ; attempt++ {
		c, err := d.dial(ctx, sprite, network, address)
		if err == nil {
			return c, nil
		}
		after, ok := retryable(err)
		err = plainError(err)
		if !ok || attempt >= attempts || ctx.Err() != nil {
			return nil, err
		}
		if after > maxBackoff {
			return nil, err // the server asks for a longer wait than we take
		}
		wait := max(min(backoff/2+rand.N(backoff/2+1), maxBackoff), after)
		backoff = min(2*backoff, maxBackoff)
		if dl, has := ctx.Deadline(); has && time.Until(dl) <= wait {
			return nil, err // the next attempt could not finish in time
		}
		if d.Logger != nil {
			d.Logger.Debug("tunnel retried", "sprite", sprite, "addr", address, "attempt", attempt, "wait", wait, "err", err)
		}
		if sleep(ctx, wait) != nil {
			return nil, err
		}
	}
}

// retryable reports whether err, from a dial, is a failure before the
// server's reply that a new connection may not meet, and the server's
// Retry-After if it gave one.
func retryable(err error) (after time.Duration, ok bool) {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return 0, false
	}
	if he, isHE := errors.AsType[*dialer.HTTPError](err); isHE {
		switch he.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
			// Over a limit or shutting down (429, 503), or a balancer
			// with no replica to pass the upgrade to (502).
			if ra, isRA := errors.AsType[*retryAfterError](err); isRA {
				return ra.after, true
			}
			return 0, true
		}
		return 0, false
	}
	if _, isTE := errors.AsType[*dialer.TargetError](err); isTE {
		return 0, false // the server replied
	}
	if _, isCE := errors.AsType[*CloseError](err); isCE {
		return 0, false // a close code the server chose: not a cut connection
	}
	if isTimeout(err) {
		// The server may be slow, and may have dialed the target.
		return 0, false
	}
	if errors.Is(err, errClosedBeforeReply) || errors.Is(err, errUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE) {
		return 0, true
	}
	// A connect that failed in another way (Windows' own error numbers, a
	// host that cannot be reached for now), but not a name that does not
	// resolve.
	if op, isOp := errors.AsType[*net.OpError](err); isOp && op.Op == "dial" {
		_, dns := errors.AsType[*net.DNSError](err)
		return 0, !dns
	}
	return 0, false
}

// errClosedBeforeReply: the server closed the connection after the upgrade
// and before any reply to the first message (it was shutting down, or an
// idle connection of ours was closed under us).
var errClosedBeforeReply = fmt.Errorf("%w: server closed the tunnel before replying", dialer.ErrTunnelClosed)

// retryAfterError is a refusal that came with a Retry-After header. It is
// never returned to callers: plainError unwraps it.
type retryAfterError struct {
	*dialer.HTTPError
	after time.Duration
}

func (e *retryAfterError) Unwrap() error { return e.HTTPError }

// withRetryAfter is the refusal e with the server's Retry-After header
// value v ("" for none), for the retry loop to honour.
func withRetryAfter(e *dialer.HTTPError, v string) error {
	after, ok := parseRetryAfter(v, time.Now())
	if !ok {
		return e
	}
	return &retryAfterError{HTTPError: e, after: after}
}

// plainError is err without the wrapping that only the retry loop uses,
// so that callers see the error a dial without retries returns.
func plainError(err error) error {
	if ra, ok := err.(*retryAfterError); ok {
		return ra.HTTPError
	}
	return err
}

// parseRetryAfter reads a Retry-After value, seconds or an HTTP date
// (RFC 9110 §10.2.3), as a wait from now.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// sleepCtx waits d, or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
