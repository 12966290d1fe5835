package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Dialer returns a dialer.Dialer that reaches sprites directly on n: the
// sprite name is the name of a host of n, and the address is dialed from
// inside that host (so "localhost:5432" is that host's loopback). There is
// no tunnel and no framing; the conns are the host's own.
//
// Errors are *net.OpError values (see dialer.OpError) matching, with
// errors.Is: dialer.ErrUnsupportedNetwork or dialer.ErrBadAddress for a bad
// network or address, dialer.ErrUnknownSprite for a name with no host,
// dialer.ErrTargetRefused when nothing listens (also syscall.ECONNREFUSED),
// dialer.ErrTargetTimeout when ctx's deadline passes (also
// context.DeadlineExceeded; a net.Error whose Timeout reports true),
// dialer.ErrTargetUnreachable for an unknown name or address inside the
// sprite, or context.Canceled.
func (n *Network) Dialer() dialer.Dialer { return networkDialer{n} }

// networkDialer is the dialer.Dialer of a Network.
type networkDialer struct{ n *Network }

var _ dialer.Dialer = networkDialer{}

// DialSprite dials address from inside the host called sprite. ctx bounds
// the dial only.
func (d networkDialer) DialSprite(ctx context.Context, sprite, network, address string) (net.Conn, error) {
	if _, _, err := dialer.SplitAddress(network, address); err != nil {
		return nil, dialer.OpError(network, sprite, address, err)
	}
	h := d.n.host(sprite)
	if h == nil {
		return nil, dialer.OpError(network, sprite, address, fmt.Errorf("netstack: %w %q", dialer.ErrUnknownSprite, sprite))
	}
	c, err := h.DialContext(ctx, network, address)
	if err != nil {
		return nil, dialer.OpError(network, sprite, address, classify(err))
	}
	return c, nil
}

// classify pairs a Host.DialContext error with the dialer sentinel it
// means, keeping the cause matchable too.
func classify(err error) error {
	cause := err
	if op, ok := err.(*net.OpError); ok {
		cause = op.Err
	}
	var kind error
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return cause
	case errors.Is(err, syscall.ECONNREFUSED):
		kind = dialer.ErrTargetRefused
	case errors.As(err, &ne) && ne.Timeout():
		kind = dialer.ErrTargetTimeout
	default:
		kind = dialer.ErrTargetUnreachable
	}
	return &targetError{kind: kind, cause: cause}
}

// targetError is a failed dial inside a sprite: one of the dialer sentinels
// and what caused it. errors.Is matches either.
type targetError struct {
	kind  error // a dialer.ErrTarget* sentinel
	cause error
}

func (e *targetError) Error() string   { return e.kind.Error() + ": " + e.cause.Error() }
func (e *targetError) Unwrap() []error { return []error{e.kind, e.cause} }

// Timeout reports whether the dial ran out of time; it makes the
// *net.OpError around e a timeout too.
func (e *targetError) Timeout() bool { return e.kind == dialer.ErrTargetTimeout }

// Temporary is part of net.Error; it reports the same as Timeout.
func (e *targetError) Temporary() bool { return e.Timeout() }

var _ net.Error = (*targetError)(nil)
