// Package session is spriteproxy's forwarding engine: a local listener, an
// accept loop, and for each accepted connection a stream dialed through a
// dialer.Dialer and copied both ways by the module's one copy engine, with
// half-close passed on in both directions.
//
// A Session forwards one local port to one address inside one sprite:
//
//	s, err := session.Start(ctx, session.Config{
//		Dialer:     d, // any dialer.Dialer
//		Sprite:     "db",
//		LocalPort:  0, // the OS picks
//		RemotePort: 5432,
//	})
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//	fmt.Println("postgres is at", s.Addr())
//
// # Lifetime
//
// A session runs until its context is done, Close is called, or a listener
// fails for good. Closing closes the listeners and every connection being
// forwarded, and Close (like Wait) returns only once every goroutine the
// session started has exited. A stream whose dial fails (or takes longer
// than the dial timeout) resets only its own local connection, as a refused
// connect would; the session keeps serving.
//
// # Listening
//
// The local host defaults to "localhost", which is served on both 127.0.0.1
// and ::1 (on the same port) where the machine has both, so that a client
// resolving localhost to either reaches the session. Where the session
// listens is pluggable (Config.Listen): the OS by default, or any network
// that hands out a net.Listener, such as a userspace TCP/IP stack.
//
// # Observing
//
// Stats reads a session's counters while it runs. Each stream logs one
// debug line when it opens and one when it closes; normal traffic never logs
// above debug.
//
// A Manager closes and waits for a group of sessions.
package session
