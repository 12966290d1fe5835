// Package dialer defines how the rest of spriteproxy reaches a sprite: the
// one-method Dialer interface, the errors every transport returns, and the
// address checks they share.
//
// A Dialer gives a net.Conn to host:port as seen from inside a named sprite.
// The default one (package transport/websocket) speaks the Sprites v1 wire
// protocol over WebSocket; package netstack offers one that reaches an
// in-process network with no framing at all; a test can plug in a Func.
//
//	var d dialer.Dialer = websocket.NewDialer("https://api.example", token)
//	conn, err := d.DialSprite(ctx, "db", "tcp", "localhost:5432")
//	if errors.Is(err, dialer.ErrTargetRefused) {
//		// nothing listens on 5432 inside the sprite
//	}
//
// # Errors
//
// Failures are *net.OpError values whose Err matches one of the sentinels
// (ErrUnauthorized, ErrTargetRefused, ...) with errors.Is. A refusal of the
// upgrade is an *HTTPError carrying the status and the server's JSON
// error/message; a handshake error reply is a *TargetError. Timeouts satisfy
// net.Error with Timeout() true.
package dialer
