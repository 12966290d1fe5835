package session

import (
	"net"

	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// Stats are a session's counters at one moment.
type Stats struct {
	Accepted int64 // local connections accepted so far
	Active   int64 // accepted connections not yet closed (dialing or forwarding)
	Failed   int64 // streams whose dial failed (a refused target, say)
	Sent     int64 // bytes forwarded from local clients to the sprite
	Received int64 // bytes forwarded from the sprite to local clients
	// Resumes counts the times a stream's tunnel lost its connection and
	// was carried on over a new one (the resume extension): the sum, over
	// the streams so far, of their conns' Resumes, for a Dialer whose
	// conns have that method (websocket.ResumableConn); 0 otherwise.
	Resumes int64
}

// resumer is a stream's conn that counts its resumes.
type resumer interface{ Resumes() int }

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
	st.Sent, st.Received, st.Resumes = s.sent, s.received, s.resumes
	for c, r := range s.live {
		st.Sent += c.AToB.Load()
		st.Received += c.BToA.Load()
		if r != nil {
			st.Resumes += int64(r.Resumes())
		}
	}
	s.mu.Unlock()
	return st
}

// track returns new counters for a stream to remote, counted in Stats
// while it runs (and remote's resumes, if it counts them).
func (s *Session) track(remote net.Conn) *pump.Counters {
	c := new(pump.Counters)
	r, _ := remote.(resumer)
	s.mu.Lock()
	s.live[c] = r
	s.mu.Unlock()
	return c
}

// untrack moves a finished stream's counts into the session's totals, and
// returns its resumes.
func (s *Session) untrack(c *pump.Counters) int {
	n := 0
	s.mu.Lock()
	if r := s.live[c]; r != nil {
		n = r.Resumes()
	}
	delete(s.live, c)
	s.sent += c.AToB.Load()
	s.received += c.BToA.Load()
	s.resumes += int64(n)
	s.mu.Unlock()
	return n
}
