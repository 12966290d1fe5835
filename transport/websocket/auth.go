package websocket

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"slices"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Authenticator decides whether a bearer token may open tunnels into a
// sprite. It returns nil, or an error matching dialer.ErrUnauthorized (the
// server answers 401) or dialer.ErrForbidden (403).
type Authenticator interface {
	Authenticate(ctx context.Context, token, sprite string) error
}

// AuthFunc adapts a function to Authenticator.
type AuthFunc func(ctx context.Context, token, sprite string) error

// Authenticate calls f.
func (f AuthFunc) Authenticate(ctx context.Context, token, sprite string) error {
	return f(ctx, token, sprite)
}

// StaticToken accepts one token, for every sprite. The comparison takes the
// same time whatever the token (digests of equal length are compared in
// constant time). An empty StaticToken accepts nothing.
type StaticToken string

// Authenticate implements Authenticator.
func (t StaticToken) Authenticate(_ context.Context, token, _ string) error {
	want := sha256.Sum256([]byte(t))
	got := sha256.Sum256([]byte(token))
	if t == "" || subtle.ConstantTimeCompare(want[:], got[:]) != 1 {
		return fmt.Errorf("%w: bad or missing token", dialer.ErrUnauthorized)
	}
	return nil
}

// Resolver tells where a sprite's targets are dialed: it maps a sprite's
// name to a dialer of that sprite's network. It returns an error matching
// dialer.ErrUnknownSprite for a name it does not serve (the server answers
// 404).
type Resolver interface {
	ResolveSprite(ctx context.Context, name string) (dialer.ContextDialer, error)
}

// ResolverFunc adapts a function to Resolver.
type ResolverFunc func(ctx context.Context, name string) (dialer.ContextDialer, error)

// ResolveSprite calls f.
func (f ResolverFunc) ResolveSprite(ctx context.Context, name string) (dialer.ContextDialer, error) {
	return f(ctx, name)
}

// HostNetwork places every sprite on this machine's own network: targets
// are dialed with Dialer (a zero net.Dialer if nil). Names, if not empty,
// lists the sprite names served; any other is unknown.
type HostNetwork struct {
	Names  []string
	Dialer *net.Dialer
}

// ResolveSprite implements Resolver.
func (h *HostNetwork) ResolveSprite(_ context.Context, name string) (dialer.ContextDialer, error) {
	if len(h.Names) > 0 && !slices.Contains(h.Names, name) {
		return nil, fmt.Errorf("%w: %q", dialer.ErrUnknownSprite, name)
	}
	if h.Dialer != nil {
		return h.Dialer, nil
	}
	return hostDialer, nil
}

// hostDialer dials targets on the host network. TCP keep-alive is off: the
// target is the sprite's own, and the tunnel has its own pings.
var hostDialer = &net.Dialer{KeepAlive: -1}
