package websocket

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// resumeDial asks the server, on an idle reused connection if one is there
// (and no replica is named) or on a new one, to carry on the tunnel of tok;
// received is what the client has received of the stream.
func (d *Dialer) resumeDial(ctx context.Context, sprite, host string, port int, tok string, received int64, replica string) (*Conn, wire.Reply, error) {
	if err := d.init(); err != nil {
		return nil, wire.Reply{}, err
	}
	first := wire.Marshal(wire.Request{Host: host, Port: port, Features: d.allowed().offer(false), Resume: tok, Received: received, Buffer: resumeBufferOf(d.ResumeBuffer)})
	if replica == "" && !d.DisableReuse && !d.DisableHalfClose {
		if l := d.takeIdle(sprite); l != nil {
			c := newConn(l.nc, true, d.cfg, l.pre)
			c.announced = l.optimistic
			c, rep, replied, err := d.resumeOn(ctx, c, first, false, sprite)
			if err == nil || replied {
				return c, rep, err
			}
		}
	}
	u := *d.base
	u.Path = d.base.Path + "/v1/sprites/" + sprite + "/proxy"
	hdr := d.header
	if replica != "" {
		u.RawQuery = url.Values{"replica": {replica}}.Encode()
		h := http.Header{"User-Agent": {UserAgent}, wire.ReplicaHeader: {replica}}
		if d.Token != "" {
			h.Set("Authorization", "Bearer "+d.Token)
		}
		hdr = ws.HandshakeHeaderHTTP(h)
	}
	nc, err := d.netConn(ctx)
	if err != nil {
		return nil, wire.Reply{}, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	var rw io.ReadWriter = nc
	sentEarly := d.earlyData.Load()
	if sentEarly {
		rw = &earlyWriter{Conn: nc, frame: maskedTextFrame(first)}
	}
	br, announced, err := d.upgradeWith(nc, rw, &u, hdr)
	if err != nil {
		nc.Close()
		return nil, wire.Reply{}, err
	}
	var pre []byte
	if br != nil {
		pre, _ = br.Peek(br.Buffered())
	}
	c := newConn(nc, true, d.cfg, pre)
	c.announced = announced
	if br != nil {
		ws.PutReader(br)
	}
	c, rep, _, err := d.resumeOn(ctx, c, first, sentEarly, sprite)
	return c, rep, err
}

// resumeOn sends the resume request on c (unless it went out early) and
// reads the answer; replied says the server answered.
func (d *Dialer) resumeOn(ctx context.Context, c *Conn, first []byte, sent bool, sprite string) (*Conn, wire.Reply, bool, error) {
	dl, _ := ctx.Deadline()
	c.nc.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	defer stop()
	fail := func(replied bool, err error) (*Conn, wire.Reply, bool, error) {
		c.closeNow()
		return nil, wire.Reply{}, replied, err
	}
	if !sent {
		if err := c.writeMessage(first); err != nil {
			return fail(false, err)
		}
	}
	msg, err := c.readMessage()
	if err != nil {
		return fail(false, err)
	}
	rep, err := wire.ParseReply(msg)
	if err != nil {
		return fail(true, err)
	}
	switch {
	case rep.Status == wire.StatusError:
		var reason string
		switch rep.Error {
		case dialer.CodeGone:
			reason = dialer.ResumeGone
		case dialer.CodeForbidden:
			return fail(true, &dialer.ResumeError{Reason: dialer.ResumeRevoked, Err: fmt.Errorf("%w: %s", dialer.ErrForbidden, rep.Message)})
		case dialer.CodeInconsistent:
			reason = dialer.ResumeInconsistent
		default:
			return fail(true, &dialer.TargetError{Code: rep.Error, Message: rep.Message})
		}
		return fail(true, &dialer.ResumeError{Reason: reason, Err: errors.New(rep.Message)})
	case rep.Status != wire.StatusResumed:
		return fail(true, fmt.Errorf("%w: a resume answered %q", dialer.ErrTunnelClosed, rep.Status))
	}
	c.setExtensions(negotiate(rep.Features, d.allowed()))
	c.resume = true // (the tunnel's extension, whatever this reply lists)
	if c.reuse {
		c.onReuse = func(l *link) { d.putIdle(sprite, l) }
	}
	c.nc.SetDeadline(time.Time{})
	c.startKeepalive()
	return c, rep, true, nil
}

// The server's side.

// graceMillis is grace in the reply's milliseconds, rounded up: a grace
// under 1 ms sent as 0 would read as "not said" and give the client the
// 60 s default.
func graceMillis(grace time.Duration) int64 {
	return int64((grace + time.Millisecond - 1) / time.Millisecond)
}

// errResumeServed: the first message resumed a tunnel, which has let go of
// the connection since.
var errResumeServed = errors.New("resumed tunnel served")

// newServerResumable wraps c, whose reply granted resume, and registers
// its token.
func (s *Server) newServerResumable(c *Conn, sl *slot) *ResumableConn {
	r := newResumable(c, false, s.ResumeBuffer, c.resumeGrace)
	r.srv = s
	r.bearer = sha256.Sum256([]byte(sl.token))
	r.tokHash = sha256.Sum256([]byte(c.resumeTok))
	s.mu.Lock()
	if s.resumable == nil {
		s.resumable = make(map[[sha256.Size]byte]*ResumableConn)
	}
	s.resumable[r.tokHash] = r
	s.mu.Unlock()
	return r
}

// forgetToken drops one token of r.
func (s *Server) forgetToken(h [sha256.Size]byte, r *ResumableConn) {
	s.mu.Lock()
	if s.resumable[h] == r {
		delete(s.resumable, h)
	}
	s.mu.Unlock()
}

// forgetAll drops the tokens of r, which has ended.
func (s *Server) forgetAll(r *ResumableConn) {
	r.mu.Lock()
	cur, old, hasOld := r.tokHash, r.oldHash, r.hasOld
	r.mu.Unlock()
	s.forgetToken(cur, r)
	if hasOld {
		s.forgetToken(old, r)
	}
}

// resumeTunnel answers a first message with a resume token: it carries the
// tunnel on over c and returns once the tunnel has let go of c
// (errResumeServed), or refuses.
func (s *Server) resumeTunnel(c *Conn, req wire.Request, sl *slot) error {
	s.release(sl) // the tunnel holds its slot already
	h := sha256.Sum256([]byte(req.Resume))
	s.mu.Lock()
	r := s.resumable[h]
	s.mu.Unlock()
	if r == nil {
		s.replyError(c, dialer.CodeGone, "no tunnel to resume")
		s.Metrics.resumed("gone")
		return &dialer.ResumeError{Reason: dialer.ResumeGone}
	}
	bearer := sha256.Sum256([]byte(sl.token))
	if subtle.ConstantTimeCompare(bearer[:], r.bearer[:]) != 1 {
		s.replyError(c, dialer.CodeForbidden, "the tunnel belongs to another token")
		s.Metrics.resumed("forbidden")
		return fmt.Errorf("%w: resume with another token", dialer.ErrForbidden)
	}
	ext := negotiate(req.Features, s.allowed())
	ext.resume = true
	newTok := newResumeToken()
	newHash := sha256.Sum256([]byte(newTok))
	r.mu.Lock()
	if err := r.endErrLocked("resume"); err != nil {
		r.mu.Unlock()
		s.replyError(c, dialer.CodeGone, "no tunnel to resume")
		s.Metrics.resumed("gone")
		return err
	}
	if req.Received < r.acked || req.Received > r.sent {
		err := &dialer.ResumeError{Reason: dialer.ResumeInconsistent}
		r.failLocked(err)
		r.mu.Unlock()
		s.replyError(c, dialer.CodeInconsistent, "received count outside what was sent and not acknowledged")
		s.Metrics.resumed("inconsistent")
		return err
	}
	r.resumeSeq++
	seq := r.resumeSeq
	old := r.reading
	var rel chan struct{}
	if old != nil {
		// Detached here, not by a loss (lostLocked counts those): counted
		// here, so that a reply that fails, leaving the tunnel to wait,
		// leaves it counted, and the attach below uncounts it.
		rel = r.detachLocked()
		r.setDetachedLocked(true)
	}
	if r.graceTimer != nil {
		r.graceTimer.Stop()
	}
	if r.hasOld && r.oldHash != h {
		s.forgetToken(r.oldHash, r)
	}
	if r.tokHash != h {
		// A resume with the token before: the reply that replaced it did
		// not reach the client, and its token is replaced in turn.
		s.forgetToken(r.tokHash, r)
	}
	r.oldHash, r.hasOld = h, true
	r.tokHash = newHash
	// Registered under r.mu (r.mu before s.mu, as forgetToken above): a
	// resume that comes in on another connection as soon as old is closed
	// below, with the token before, must find newHash registered to forget
	// it; registered after r.mu, it stayed in s.resumable for good.
	s.mu.Lock()
	s.resumable[newHash] = r
	s.mu.Unlock()
	rep := wire.Reply{Status: wire.StatusResumed, Received: r.recvd, Resume: newTok,
		GraceMS: graceMillis(r.grace), Replica: s.ReplicaID, Features: ext.features(), Buffer: r.bufMax}
	r.mu.Unlock()
	if old != nil {
		old.CloseNow()
		if rel != nil {
			close(rel)
		}
	}
	c.nc.SetWriteDeadline(time.Now().Add(s.handshakeTimeout()))
	if err := c.writeMessage(wire.Marshal(rep)); err != nil {
		r.mu.Lock()
		if r.reading == nil && r.final == nil && !r.closed {
			r.armGraceLocked()
		}
		r.mu.Unlock()
		return err
	}
	c.setExtensions(ext)
	c.nc.SetDeadline(time.Time{})
	c.startKeepalive()
	done := make(chan struct{})
	if err := r.attachAs(c, req.Received, done, seq); err != nil {
		return err
	}
	r.mu.Lock()
	r.setDetachedLocked(false)
	r.mu.Unlock()
	s.Metrics.resumed("ok")
	s.log("tunnel resumed", "client", c.remote)
	sl.attached() // resume_drain.go
	<-done
	return errResumeServed
}
