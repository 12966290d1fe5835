// Package proxy is spriteproxy's public API: it lets a local process talk to
// TCP services running inside a sprite, through encrypted WebSocket tunnels.
// Forward one port (ProxyPort), several at once (ProxyPorts), or open a
// net.Conn to an address inside the sprite (ProxySocket, or DialContext for
// dial hooks).
//
// The API is the one of the Sprites Go SDK's proxy: code written against it
// compiles against this package with only the import path changed.
//
//	import sprites "github.com/spriteproxy/spriteproxy/proxy"
//
//	client := sprites.New(token, sprites.WithBaseURL("https://api.sprites.dev"))
//	sprite := client.Sprite("my-sprite")
//
//	// localhost:5432 here is postgres inside the sprite.
//	session, err := sprite.ProxyPort(ctx, 5432, 5432)
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer session.Close()
//
//	// Or no local port at all: a conn straight to the service.
//	conn, err := sprite.ProxySocket(ctx, "tcp", "localhost:5432")
//
//	// Or any client with a dial hook.
//	httpClient := &http.Client{Transport: &http.Transport{DialContext: sprite.DialContext}}
//
// # Sessions
//
// A ProxySession listens on localhost (both 127.0.0.1 and ::1, on one port)
// and tunnels each accepted connection on a stream of its own; end of stream
// is passed on both ways, so a client that shuts down its write side still
// reads the whole reply. A stream that fails (nothing listening inside the
// sprite, say) resets only its own connection. The context given to
// ProxyPort or ProxyPorts bounds the session's life; Close closes the
// listener and the connections being forwarded, and returns once nothing of
// the session runs any more. Local port 0 lets the OS pick a port, which
// LocalPort and LocalAddr report. Stats reads a session's counters. A
// ProxyManager closes or waits for a group of sessions.
//
// # SOCKS5
//
// Sprite.SOCKS5 returns a SOCKS5 server (RFC 1928, CONNECT, no
// authentication) whose every connection is a tunnel into the sprite, to
// the address the SOCKS client asked for: one local listener reaches every
// service of the sprite, for curl --socks5-hostname, browsers and
// net/http's socks5h:// proxies. Names are resolved inside the sprite,
// never here; dial errors come back as the RFC's reply codes.
//
// # Errors
//
// Bad input fails before any I/O: ports outside 1-65535 (0 is allowed for a
// local port), an empty or malformed host or address match
// dialer.ErrBadAddress with errors.Is, a network other than tcp
// dialer.ErrUnsupportedNetwork. ProxyPorts reports which mapping failed with
// a *MappingError. Dial errors are *net.OpError values that match the
// sentinels of package dialer: dialer.ErrUnauthorized, dialer.ErrTargetRefused
// and so on.
//
// # Transports
//
// By default a Client speaks the Sprites v1 protocol over WebSocket
// (package transport/websocket), configured by WithBaseURL, WithTLSConfig
// and WithNetDial. WithDialer plugs in any other dialer.Dialer, such as an
// in-process network for tests; WithListen moves the local listeners off
// the OS network.
package proxy
