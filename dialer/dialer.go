package dialer

import (
	"context"
	"net"
)

// Dialer opens a stream to an address inside a named sprite.
//
// DialSprite returns a net.Conn connected to address (a "host:port", host
// being a name, an IPv4 address or a bracketed IPv6 address) as seen from
// inside the sprite called sprite. network must be "tcp" (or "tcp4"/"tcp6",
// treated as "tcp": the sprite resolves the host).
//
// ctx bounds the dial and its handshake only: once DialSprite has returned,
// cancelling ctx has no effect on the returned conn.
//
// Errors are *net.OpError values with Op "dial" whose Err matches the
// package's sentinels with errors.Is: ErrUnsupportedNetwork, ErrBadAddress,
// ErrUnauthorized, ErrForbidden, ErrUnknownSprite, ErrTargetRefused,
// ErrTargetTimeout, ErrTargetForbidden, ErrTargetUnreachable, ErrBadRequest,
// ErrTunnelClosed, or the context's error.
//
// Implementations must be safe for concurrent use.
type Dialer interface {
	DialSprite(ctx context.Context, sprite, network, address string) (net.Conn, error)
}

// Func adapts an ordinary function to the Dialer interface.
type Func func(ctx context.Context, sprite, network, address string) (net.Conn, error)

// DialSprite calls f(ctx, sprite, network, address).
func (f Func) DialSprite(ctx context.Context, sprite, network, address string) (net.Conn, error) {
	return f(ctx, sprite, network, address)
}

var _ Dialer = Func(nil)

// HalfCloser is implemented by conns that can end their write side while
// still reading, as *net.TCPConn does. Every conn a transport of this module
// returns implements it; the forwarding engine uses it to pass a TCP FIN on.
type HalfCloser interface {
	CloseWrite() error
}

// ContextDialer is the standard dial-hook shape (net.Dialer, a netstack
// host, golang.org/x/net/proxy.ContextDialer): the server side uses it for
// "where a sprite's targets are dialed".
type ContextDialer interface {
	DialContext(ctx context.Context, network, address string) (net.Conn, error)
}
