package session

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
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

	c := s.track()
	err = pump.Run(s.ctx, s.watch(local), remote, c)
	s.untrack(c)
	if lateDialFailure(err) {
		s.log.Debug("stream dial failed", "stream", id, "client", local.RemoteAddr(),
			"sprite", s.sprite, "target", s.target, "err", err)
		return
	}

	s.log.Debug("stream closed", "stream", id, "client", local.RemoteAddr(),
		"sent", c.AToB.Load(), "received", c.BToA.Load(), "duration", time.Since(start), "err", err)
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

// An optimistic tunnel (websocket.Dialer.Optimistic) is returned before
// the server has said whether its target could be dialed: a refusal then
// surfaces as the dial's error (a *net.OpError "dial") on the tunnel's
// first Read or Write, inside the pump. The stream is then a failed one,
// as if the dial had returned the error: it is counted before the local
// connection is reset (watchedLocal), so that a client that sees the reset
// finds it in Stats.

// lateDialFailure reports whether err, a pump's, is the tunnel's dial
// failing after DialSprite returned.
func lateDialFailure(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	if !ok || op.Op != "dial" {
		return false
	}
	_, ours := op.Addr.(*dialer.Addr)
	return ours
}

// watch wraps local so that the pump's cut of it (pump.ErrorCloser)
// counts a late dial failure before local is reset. CloseWrite is kept
// only where local has it, so that the pump treats local as before.
func (s *Session) watch(local net.Conn) net.Conn {
	w := watchedLocal{Conn: local, s: s}
	if _, ok := local.(interface{ CloseWrite() error }); ok {
		return &halfWatchedLocal{w}
	}
	return &w
}

// watchedLocal is a stream's local connection as the pump sees it.
type watchedLocal struct {
	net.Conn
	s *Session
}

// CloseWithError is the pump's cut: a late dial failure is counted, then
// local is reset where it can be (as a failed dial's local is), or closed.
func (w *watchedLocal) CloseWithError(err error) error {
	if lateDialFailure(err) {
		w.s.failed.Add(1)
	}
	if ec, ok := w.Conn.(pump.ErrorCloser); ok {
		return ec.CloseWithError(err)
	}
	if l, ok := w.Conn.(interface{ SetLinger(int) error }); ok {
		l.SetLinger(0)
	}
	if cn, ok := w.Conn.(interface{ CloseNow() error }); ok {
		return cn.CloseNow()
	}
	return w.Conn.Close()
}

// halfWatchedLocal is a watchedLocal whose connection can half-close.
type halfWatchedLocal struct{ watchedLocal }

// CloseWrite half-closes the local connection.
func (w *halfWatchedLocal) CloseWrite() error {
	return w.Conn.(interface{ CloseWrite() error }).CloseWrite()
}
