package session

import "github.com/spriteproxy/spriteproxy/internal/pump"

// Stats are a session's counters at one moment.
type Stats struct {
	Accepted int64 // local connections accepted so far
	Active   int64 // accepted connections not yet closed (dialing or forwarding)
	Failed   int64 // streams whose dial failed (a refused target, say)
	Sent     int64 // bytes forwarded from local clients to the sprite
	Received int64 // bytes forwarded from the sprite to local clients
}

// Stats returns the session's counters. Byte counts include the streams
// being forwarded, up to the last chunk copied. It may be called at any
// time, also after the session closed.
func (s *Session) Stats() Stats {
	st := Stats{
		Accepted: s.accepted.Load(),
		Active:   s.active.Load(),
		Failed:   s.failed.Load(),
	}
	s.mu.Lock()
	st.Sent, st.Received = s.sent, s.received
	for c := range s.live {
		st.Sent += c.AToB.Load()
		st.Received += c.BToA.Load()
	}
	s.mu.Unlock()
	return st
}

// track returns new counters for a stream, counted in Stats while it runs.
func (s *Session) track() *pump.Counters {
	c := new(pump.Counters)
	s.mu.Lock()
	s.live[c] = struct{}{}
	s.mu.Unlock()
	return c
}

// untrack moves a finished stream's counts into the session's totals.
func (s *Session) untrack(c *pump.Counters) {
	s.mu.Lock()
	delete(s.live, c)
	s.sent += c.AToB.Load()
	s.received += c.BToA.Load()
	s.mu.Unlock()
}
