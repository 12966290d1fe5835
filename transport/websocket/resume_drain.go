package websocket

// The drain rule of the resume extension (PROTOCOL.md §9, Drain): while
// the server drains (Drain), resumable tunnels are resumed as usual; once
// Shutdown has begun, no connection reaches the server any more (its
// listeners are closed, an upgrade gets 503 and idle connections are
// closed), so a detached tunnel could never be resumed. It ends at once,
// as when its grace expires, instead of holding its target, its slot and
// the drain until the grace or Shutdown's deadline; a tunnel that loses
// its connection later ends then.

// shutdownResumables applies the rule to the resumable tunnels registered
// when Shutdown began; s.mu is not held (a tunnel's lock comes first).
func (s *Server) shutdownResumables(rs []*ResumableConn) {
	for _, r := range rs {
		r.endOnShutdown()
	}
}

// resumablesLocked is the resumable tunnels the server holds, each once
// (a tunnel is there under its token and, until confirmed, its previous
// one); s.mu is held.
func (s *Server) resumablesLocked() []*ResumableConn {
	seen := make(map[*ResumableConn]struct{}, len(s.resumable))
	rs := make([]*ResumableConn, 0, len(s.resumable))
	for _, r := range s.resumable {
		if _, ok := seen[r]; !ok {
			seen[r] = struct{}{}
			rs = append(rs, r)
		}
	}
	return rs
}

// resumableOpened applies the rule to r, just registered, if Shutdown has
// begun meanwhile (a handshake already under way when it began).
func (s *Server) resumableOpened(r *ResumableConn) {
	s.mu.Lock()
	shutting := s.shutting
	s.mu.Unlock()
	if shutting {
		r.endOnShutdown()
	}
}

// endOnShutdown ends r now if it is detached, and makes a later loss of
// its connection end it at once: its grace is over.
func (r *ResumableConn) endOnShutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.grace = 0
	if r.reading == nil && r.final == nil && !r.closed && r.graceTimer != nil {
		r.graceTimer.Reset(0) // its end, as at the grace's: target reset, counts kept
	}
}

// attached is called by a resume once the tunnel has taken the connection
// over: from then on the tunnel's end closes it, and the cut that bounds
// the handshake at Shutdown's deadline must not race that close and drop
// its close frame.
func (sl *slot) attached() {
	if sl.endCut != nil {
		sl.endCut()
	}
}
