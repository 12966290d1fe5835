// Package websocket is spriteproxy's default transport: the Sprites v1
// proxy protocol over WebSocket (RFC 6455, framed with github.com/gobwas/ws),
// both ends of it.
//
// The client side is Dialer, a dialer.Dialer: each DialSprite opens one
// WebSocket to {BaseURL}/v1/sprites/{name}/proxy, sends the target as
// {"host":...,"port":...}, waits for {"status":"connected"} and returns
// the stream as a *Conn (a net.Conn). The server side is Server, an
// http.Handler that authenticates, resolves the sprite, checks the target
// against a Policy, dials it and copies both ways.
//
//	srv := &websocket.Server{Auth: websocket.StaticToken(token)}
//	ln, _ := net.Listen("tcp", "127.0.0.1:8080")
//	go srv.Serve(ln) // or http.Serve(ln, srv): it is an http.Handler too
//	defer srv.Shutdown(ctx)
//
//	d := websocket.NewDialer("http://127.0.0.1:8080", token)
//	conn, err := d.DialSprite(ctx, "my-sprite", "tcp", "localhost:5432")
//
// Both ends speak the protocol exactly as the Sprites SDK does, and add the
// half_close, early_data, reuse and (opt-in on the server) raw_stream
// extensions when the peer takes them; PROTOCOL.md at the repository root
// is the wire specification.
//
// # Connection reuse
//
// With reuse, closing a tunnel cleanly leaves its WebSocket open, and the
// Dialer's next tunnel to the same sprite is a message and a reply on it,
// with no TCP, TLS or WebSocket handshake: about 1.6 times as many tunnels
// per second over ws, five times over wss. The Dialer keeps up to
// MaxIdlePerSprite idle connections for IdleConnTimeout;
// CloseIdleConnections releases them. The server checks the token again
// for each tunnel and counts only open tunnels against its limits.
//
// # Resume
//
// With resume (offered by default; Dialer.DisableResume, Server.DisableResume
// to stop), DialSprite returns a *ResumableConn: both sides number the
// stream's bytes, acknowledge them, and keep what the peer has not
// acknowledged (up to ResumeBuffer, 4 MiB, allocated in chunks only while
// data is unacknowledged), so that a tunnel whose WebSocket drops is
// carried on over a new one with nothing lost or repeated. The server
// keeps a dropped tunnel, its target and its slot for ResumeGrace (60 s)
// while the client reconnects; Resumes counts the times it did.
//
// # Serving
//
// Serve upgrades on the raw connection with pooled buffers and costs about
// half the memory and allocations per tunnel of ServeHTTP behind an
// http.Server; both speak the same protocol. The tunnel pings on its own,
// so a listener from net.ListenConfig{KeepAlive: -1} saves the kernel's
// keep-alive settings per connection. For wss, set Server.TLSConfig
// rather than wrapping the listener with tls.NewListener: the tunnel then
// owns the connection under TLS. Limits, timeouts and their defaults are
// the fields of Server and Tuning; README.md has the table.
//
// # Performance
//
// Data frames are as large as the writes (up to 256 KiB when copied, 1 MiB
// when sent by writev), masking is done in place in a pooled buffer, and
// reads go straight into the caller's buffer. A *Conn borrows pooled
// buffers only while data moves: an idle tunnel holds a few hundred bytes.
// Conn.CopyFrom and Conn.CopyTo (also as io.ReaderFrom and io.WriterTo)
// move a stream with no copy between read and send, and by splice between
// two TCP sockets where the frames need no unmasking.
//
// Under TLS, crypto/tls writes each 16 KiB record with a syscall of its
// own. Where the tunnel made the TLS connection (the Dialer always, Serve
// with TLSConfig), it gathers a frame's records and sends them with one
// write, which also keeps crypto/tls usable after a write deadline cuts a
// frame: the rest goes out with the next Write, as over plain TCP.
package websocket
