package proxy

import (
	"net"

	"github.com/spriteproxy/spriteproxy/session"
)

// ProxySession is one forwarded port, from ProxyPort or ProxyPorts. Its
// fields describe it; changing them changes nothing. Its methods are safe
// for concurrent use.
type ProxySession struct {
	LocalPort  int    // the port listened on: the OS's pick when 0 was asked for
	RemotePort int    // the port dialed inside the sprite
	RemoteHost string // the host dialed inside the sprite, "localhost" if none was given, IPv6 without brackets

	s *session.Session
}

// Stats are a session's counters at one moment: connections accepted,
// active and failed, bytes forwarded each way, and the times a stream's
// tunnel was carried on over a new connection (Resumes, the resume
// extension).
type Stats = session.Stats

func newProxySession(s *session.Session, m PortMapping) *ProxySession {
	// The target is the "host:port" the session built from m and checked.
	host, _, _ := net.SplitHostPort(s.Target())
	return &ProxySession{LocalPort: s.Port(), RemotePort: m.RemotePort, RemoteHost: host, s: s}
}

// Close stops the session: it closes the local listener and every
// connection being forwarded, and returns once all the session's goroutines
// have exited. It is idempotent, safe to call concurrently, and returns nil.
func (ps *ProxySession) Close() error {
	if ps == nil || ps.s == nil {
		return nil
	}
	return ps.s.Close()
}

// Wait blocks until the session has closed, by Close, by the end of its
// context, or because its listener failed, and its goroutines have exited.
func (ps *ProxySession) Wait() {
	if ps == nil || ps.s == nil {
		return
	}
	ps.s.Wait()
}

// Done is closed once the session has closed and its goroutines have
// exited, as Wait returns; nil for a session with no listener.
func (ps *ProxySession) Done() <-chan struct{} {
	if ps == nil || ps.s == nil {
		return nil
	}
	return ps.s.Done()
}

// Err reports why the session ended: nil while it runs and after Close,
// the context's error (or cause) if its context ended it, or the error of
// a listener that failed.
func (ps *ProxySession) Err() error {
	if ps == nil || ps.s == nil {
		return nil
	}
	return ps.s.Err()
}

// LocalAddr returns the address the session listens on (127.0.0.1:port
// where the machine has IPv4; ::1 is served on the same port), or nil for a
// session with no listener.
func (ps *ProxySession) LocalAddr() net.Addr {
	if ps == nil || ps.s == nil {
		return nil
	}
	return ps.s.Addr()
}

// Stats returns the session's counters; they move while it runs.
func (ps *ProxySession) Stats() Stats {
	if ps == nil || ps.s == nil {
		return Stats{}
	}
	return ps.s.Stats()
}

// ProxyManager closes and waits for a group of sessions. It is safe for
// concurrent use.
type ProxyManager struct {
	m session.Manager
}

// NewProxyManager returns an empty ProxyManager.
func NewProxyManager() *ProxyManager { return &ProxyManager{} }

// AddSession adds ps to the group; nil is ignored.
func (pm *ProxyManager) AddSession(ps *ProxySession) {
	if ps == nil {
		return
	}
	pm.m.Add(ps.s)
}

// CloseAll closes every session of the group at once, forgets them, and
// returns once they have all closed.
func (pm *ProxyManager) CloseAll() { pm.m.CloseAll() }

// WaitAll blocks until every session of the group has closed.
func (pm *ProxyManager) WaitAll() { pm.m.WaitAll() }
