package proxy

import (
	"context"
	"fmt"
	"net"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/session"
)

// PortMapping is one local port forwarded to a port inside a sprite.
type PortMapping struct {
	LocalPort  int    // 0-65535; 0 lets the OS pick
	RemotePort int    // 1-65535
	RemoteHost string // host inside the sprite: a name, "10.0.0.1", "fdf::1" or "[::1]"; empty means "localhost"
}

// MappingError is the error of ProxyPorts (and ProxyPort) when one mapping
// could not be set up: it names the mapping and wraps the cause, so that
// errors.Is sees dialer.ErrBadAddress, a listen error, and so on.
type MappingError struct {
	Index   int         // the mapping's index in the slice given
	Mapping PortMapping // the mapping as given
	Err     error       // why it failed
}

// Error names the mapping by its index, local port and target, then the
// cause.
func (e *MappingError) Error() string {
	return fmt.Sprintf("proxy: mapping %d (local port %d → %s): %v",
		e.Index, e.Mapping.LocalPort, dialer.HostPort(e.Mapping.RemoteHost, e.Mapping.RemotePort), e.Err)
}

// Unwrap returns the cause, so that errors.Is sees dialer's sentinels and
// syscall errors through it.
func (e *MappingError) Unwrap() error { return e.Err }

// ProxyPort forwards localPort on this machine's localhost (127.0.0.1 and
// ::1) to remotePort on localhost inside the sprite called spriteName: each
// connection accepted locally is tunnelled on its own stream. It is
// ProxyPorts with one mapping.
//
// ctx bounds the whole life of the session: cancelling it closes the
// session, as Close does.
func (c *Client) ProxyPort(ctx context.Context, spriteName string, localPort, remotePort int) (*ProxySession, error) {
	sessions, err := c.ProxyPorts(ctx, spriteName, []PortMapping{{LocalPort: localPort, RemotePort: remotePort}})
	if err != nil {
		return nil, err
	}
	return sessions[0], nil
}

// ProxyPorts starts one session per mapping, in order, and returns them in
// the same order. It is all or nothing: every mapping is checked before any
// I/O (bad ports and hosts fail with errors matching dialer.ErrBadAddress),
// and if a session cannot start (a local port in use, say) those already
// started are closed before the *MappingError naming the mapping returns.
//
// Listening is all a session does up front; each stream is dialed when a
// local connection arrives, and a stream that fails (nothing listening
// inside the sprite, a refused token) resets only that connection.
//
// ctx bounds the whole life of the sessions: cancelling it closes them all.
func (c *Client) ProxyPorts(ctx context.Context, spriteName string, mappings []PortMapping) ([]*ProxySession, error) {
	if err := checkSprite(spriteName); err != nil {
		return nil, err
	}
	cfgs := make([]session.Config, len(mappings))
	for i, m := range mappings {
		cfgs[i] = session.Config{
			Dialer:     c.dialer,
			Sprite:     spriteName,
			RemoteHost: m.RemoteHost,
			RemotePort: m.RemotePort,
			LocalPort:  m.LocalPort,
			Listen:     c.listen,
			Logger:     c.logger,
		}
		if err := cfgs[i].Validate(); err != nil {
			return nil, &MappingError{Index: i, Mapping: m, Err: err}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}

	sessions := make([]*ProxySession, 0, len(mappings))
	var started session.Manager // to close them all at once on a failure
	for i, cfg := range cfgs {
		s, err := session.Start(ctx, cfg)
		if err != nil {
			started.CloseAll()
			return nil, &MappingError{Index: i, Mapping: mappings[i], Err: err}
		}
		started.Add(s)
		sessions = append(sessions, newProxySession(s, mappings[i]))
	}
	return sessions, nil
}

// ProxySocket opens a connection to addr ("host:port", an IPv6 host in
// brackets) as seen from inside the sprite called spriteName. network must
// be "tcp" ("tcp4" and "tcp6" are taken as "tcp": the sprite resolves the
// host). A bad network or address fails before any I/O, with an error
// matching dialer.ErrUnsupportedNetwork or dialer.ErrBadAddress.
//
// ctx bounds the dial and its handshake only: the returned conn outlives it.
// Errors are *net.OpError values; see dialer.Dialer for what they match.
func (c *Client) ProxySocket(ctx context.Context, network, spriteName, addr string) (net.Conn, error) {
	if _, _, err := dialer.SplitAddress(network, addr); err != nil {
		return nil, dialer.OpError(network, spriteName, addr, err)
	}
	if err := checkSprite(spriteName); err != nil {
		return nil, dialer.OpError(network, spriteName, addr, err)
	}
	return c.dialer.DialSprite(ctx, spriteName, network, addr)
}

// checkSprite refuses a sprite name that no URL of the protocol can carry.
func checkSprite(name string) error {
	if err := dialer.CheckSprite(name); err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}
