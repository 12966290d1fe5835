package session

import (
	"context"
	"net"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// serve forwards one accepted connection: it dials the target through the
// session's Dialer and pumps bytes both ways until both ends are done or the
// session closes. A failed dial closes local and nothing else.
func (s *Session) serve(local net.Conn) {
	defer s.wg.Done()
	defer s.active.Add(-1)
	id := s.streamID.Add(1)
	start := time.Now()

	remote, err := s.dial()
	if err != nil {
		if s.ctx.Err() == nil {
			s.failed.Add(1) // before the client can see its conn close
		}
		// A reset, not a clean end of stream: the client sees that the
		// connection failed, as it would if the target had refused it.
		if l, ok := local.(interface{ SetLinger(int) error }); ok {
			l.SetLinger(0)
		}
		local.Close()
		s.log.Debug("stream dial failed", "stream", id, "client", local.RemoteAddr(),
			"sprite", s.sprite, "target", s.target, "err", err)
		return
	}
	s.log.Debug("stream open", "stream", id, "client", local.RemoteAddr(),
		"sprite", s.sprite, "target", s.target, "setup", time.Since(start))

	c := s.track(remote)
	err = pump.Run(s.ctx, local, remote, c)
	resumes := s.untrack(c)

	s.log.Debug("stream closed", "stream", id, "client", local.RemoteAddr(),
		"sent", c.AToB.Load(), "received", c.BToA.Load(), "resumes", resumes, "duration", time.Since(start), "err", err)
}

// dial opens a stream to the target, within the dial timeout.
func (s *Session) dial() (net.Conn, error) {
	ctx := s.ctx
	if s.dialTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.dialTimeout)
		defer cancel()
	}
	return s.dialer.DialSprite(ctx, s.sprite, "tcp", s.target)
}
