package websocket

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// The resume extension (PROTOCOL.md, Extension resume): a layer above
// *Conn that numbers the bytes of the stream, keeps what the peer has not
// acknowledged, and carries the tunnel on over a new connection when its
// connection drops.

const (
	// DefaultResumeBuffer caps, per direction of a resumable tunnel, the
	// bytes sent and not yet acknowledged (Dialer.ResumeBuffer,
	// Server.ResumeBuffer).
	DefaultResumeBuffer = 4 << 20
	// DefaultResumeGrace is how long a server keeps a resumable tunnel
	// whose connection dropped (Server.ResumeGrace).
	DefaultResumeGrace = 60 * time.Second

	resumeChunk      = 64 << 10 // the send buffer's unit of allocation
	ackDelay         = 50 * time.Millisecond
	maxResumeBackoff = time.Second
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, resumeChunk); return &b }}

// ResumableConn is a tunnel under the resume extension: a net.Conn whose
// stream outlives the WebSocket connection under it. When that connection
// drops (a network change, a reset, the dead-peer rule), the client opens
// a new one and both sides resend what the other lacks: no byte is lost,
// duplicated or reordered, and Reads and Writes block meanwhile (their
// deadlines still apply). DialSprite returns one when the server granted
// the extension. A tunnel that cannot be resumed (the server's grace
// expired, the token was refused, the offsets disagree) fails with a
// *dialer.ResumeError, which matches dialer.ErrTunnelClosed.
type ResumableConn struct {
	client   bool
	bufMax   int64
	ackEvery int64 // an ack is due once this much is delivered unacknowledged
	// detachedCounted: the server's tunnel is counted in
	// spriteproxy_tunnels_detached (setDetachedLocked).
	detachedCounted bool
	grace           time.Duration
	closeTimeout    time.Duration
	local           net.Addr
	remote          net.Addr

	// The client's way back.
	d            *Dialer
	sprite, host string
	port         int
	replica      string
	ctx          context.Context // ended by Close: stops a reconnection
	cancel       context.CancelFunc
	wg           sync.WaitGroup // the reconnection under way

	// The server's.
	srv    *Server
	bearer [sha256.Size]byte // the hash of the bearer token that opened it

	wmu sync.Mutex // serializes Write and CloseWrite
	rmu sync.Mutex // serializes reading from the Conn (Read, AwaitEnd, a waiting Write)

	mu         sync.Mutex
	cur        *Conn // nil while detached, or while resending (writers wait)
	reading    *Conn // the Conn readers use (set before the resend)
	gen        uint64
	stopEnd    func() bool
	release    chan struct{} // server: closed when the layer lets go of cur's connection
	changed    chan struct{}
	waiters    int
	final      error
	closed     bool
	endFn      func(error)
	token      string // client: the token to resume with
	tokHash    [sha256.Size]byte
	oldHash    [sha256.Size]byte // server: the token before, valid until the client's first frame
	hasOld     bool
	graceTimer *time.Timer
	resumes    int
	// resumeSeq numbers the server's resumes of the tunnel (resumeTunnel):
	// of two that overlap, only the later attaches.
	resumeSeq uint64

	chunks            []*[]byte
	base, acked, sent int64
	eofSent           bool
	// inFlight counts the segments of chunks being written (a Write's, a
	// resend's); Close leaves the chunks to the last of them.
	inFlight int

	recvd, delivered, ackedOut int64
	ackTimer                   *time.Timer
	ackArmed                   bool
	pending                    []byte
	peerEOF, peerClosed        bool

	rdl, wdl time.Time
	// ackReading: the ack reader runs (acks for a tunnel that wrote and
	// does not read, so that it gives its buffer back).
	ackReading bool
}

var (
	_ net.Conn         = (*ResumableConn)(nil)
	_ pump.EndAwaiter  = (*ResumableConn)(nil)
	_ pump.Ender       = (*ResumableConn)(nil)
	_ pump.ErrorCloser = (*ResumableConn)(nil)
)

// resumeBufferOf is the resume buffer a ResumeBuffer field asks for.
func resumeBufferOf(n int) int64 {
	if n <= 0 {
		return DefaultResumeBuffer
	}
	return int64(n)
}

func newResumable(c *Conn, client bool, buf int, grace time.Duration) *ResumableConn {
	r := &ResumableConn{
		client:       client,
		bufMax:       int64(buf),
		grace:        grace,
		closeTimeout: c.cfg.closeTimeout,
		local:        c.LocalAddr(),
		remote:       c.RemoteAddr(),
		changed:      make(chan struct{}),
	}
	r.bufMax = resumeBufferOf(buf)
	// Acks go out when a quarter of the smaller buffer is unacknowledged:
	// a peer with a smaller buffer than ours would otherwise wait for the
	// ack timer each time its buffer filled.
	r.ackEvery = r.bufMax / 4
	if c.peerBuf > 0 {
		r.ackEvery = min(r.ackEvery, max(c.peerBuf/4, 1))
	}
	if r.grace <= 0 {
		r.grace = DefaultResumeGrace
	}
	r.mu.Lock()
	r.publishLocked(c)
	r.mu.Unlock()
	return r
}

// newResumeToken is 32 random bytes, base64url.
func newResumeToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Resumes returns how many times the tunnel was carried on over a new
// connection.
func (r *ResumableConn) Resumes() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resumes
}

// LocalAddr is the local address of the tunnel's first connection.
func (r *ResumableConn) LocalAddr() net.Addr { return r.local }

// NetConn returns the connection under the tunnel now, for inspection (its
// TLS state, say), or nil while the tunnel waits to be resumed; a
// reconnection replaces it. Reading or writing it breaks the tunnel.
func (r *ResumableConn) NetConn() net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cur
	if c == nil {
		c = r.reading
	}
	if c == nil {
		return nil
	}
	return c.NetConn()
}

// RemoteAddr is as Conn's, for the tunnel's first connection.
func (r *ResumableConn) RemoteAddr() net.Addr { return r.remote }

// SetDeadline sets the read and write deadlines; they hold across
// reconnections and bound the waits for one.
func (r *ResumableConn) SetDeadline(t time.Time) error {
	r.SetReadDeadline(t)
	return r.SetWriteDeadline(t)
}

// SetReadDeadline sets the read deadline.
func (r *ResumableConn) SetReadDeadline(t time.Time) error {
	r.mu.Lock()
	r.rdl = t
	c := r.reading
	r.broadcastLocked()
	r.mu.Unlock()
	if c != nil {
		c.SetReadDeadline(t)
	}
	return nil
}

// SetWriteDeadline sets the write deadline.
func (r *ResumableConn) SetWriteDeadline(t time.Time) error {
	r.mu.Lock()
	r.wdl = t
	c := r.reading
	r.broadcastLocked()
	r.mu.Unlock()
	if c != nil {
		c.SetWriteDeadline(t)
	}
	return nil
}

func (r *ResumableConn) broadcastLocked() {
	if r.waiters > 0 {
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// waitLocked waits, r.mu held and released meanwhile, for a change or the
// deadline dl (zero: none); false at the deadline.
func (r *ResumableConn) waitLocked(dl time.Time) bool {
	if !dl.IsZero() && !time.Now().Before(dl) {
		return false
	}
	r.waiters++
	ch := r.changed
	r.mu.Unlock()
	ok := true
	if dl.IsZero() {
		<-ch
	} else {
		t := time.NewTimer(time.Until(dl))
		select {
		case <-ch:
		case <-t.C:
			ok = false
		}
		t.Stop()
	}
	r.mu.Lock()
	r.waiters--
	return ok
}

func (r *ResumableConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "websocket", Source: r.local, Addr: r.remote, Err: err}
}

// Read reads bytes of the stream: what a waiting Write read for it first,
// then straight from the connection into p.
func (r *ResumableConn) Read(p []byte) (int, error) {
	r.rmu.Lock()
	defer r.readDone()
	r.mu.Lock()
	for {
		if len(r.pending) > 0 {
			n := copy(p, r.pending)
			r.pending = r.pending[n:]
			if len(r.pending) == 0 {
				r.pending = nil
			}
			c, a := r.deliveredLocked(n)
			r.mu.Unlock()
			if c != nil {
				c.queueAck(a)
			}
			return n, nil
		}
		if r.peerEOF {
			r.mu.Unlock()
			return 0, io.EOF
		}
		if err := r.endErrLocked("read"); err != nil {
			r.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			r.mu.Unlock()
			return 0, nil
		}
		c, gen := r.reading, r.gen
		if c == nil {
			if !r.waitLocked(r.rdl) {
				r.mu.Unlock()
				return 0, r.opError("read", os.ErrDeadlineExceeded)
			}
			continue
		}
		r.mu.Unlock()
		n, err := c.Read(p)
		r.mu.Lock()
		if gen != r.gen {
			continue // from a connection dropped meanwhile: the peer resends it
		}
		if n > 0 {
			r.recvd += int64(n)
			r.confirmedLocked()
			c, a := r.deliveredLocked(n)
			r.mu.Unlock()
			if c != nil {
				c.queueAck(a)
			}
			return n, nil
		}
		if err == nil {
			continue
		}
		if done, err := r.readFailedLocked(c, gen, err); done {
			r.mu.Unlock()
			return 0, err
		}
	}
}

// readDone lets go of the read side, and wakes a Write that waits for
// acks and may now read them itself.
func (r *ResumableConn) readDone() {
	r.rmu.Unlock()
	r.mu.Lock()
	r.broadcastLocked()
	r.startAckReaderLocked()
	r.mu.Unlock()
}

// ackReadStep bounds each read of the ack reader, so that a Read that
// begins meanwhile waits no longer for the read side, and each read of a
// Write that waits (see Write).
const ackReadStep = 100 * time.Millisecond

// startAckReaderLocked starts the ack reader if bytes sent await their ack
// and nothing may read it: a tunnel that wrote and then neither reads nor
// writes would otherwise hold its send buffer until it does.
func (r *ResumableConn) startAckReaderLocked() {
	if r.ackReading || r.sent == r.acked || r.closed || r.peerClosed || r.final != nil || r.reading == nil {
		return
	}
	r.ackReading = true
	r.wg.Add(1)
	go r.ackReader()
}

// ackReader reads the connection, a step at a time, while bytes sent
// await their ack and no Read is under way; it ends when all is
// acknowledged, a Read takes over, or the tunnel is detached or over.
func (r *ResumableConn) ackReader() {
	defer r.wg.Done()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.sent > r.acked && !r.closed && !r.peerClosed && r.final == nil && r.reading != nil && r.rmu.TryLock() {
		r.readForWriterLocked(r.reading, r.gen, time.Now().Add(ackReadStep))
		r.rmu.Unlock()
	}
	r.ackReading = false
}

// deliveredLocked counts n bytes handed to the application, and says
// whether an ack is due now (to c, of a); else it arms the ack timer.
func (r *ResumableConn) deliveredLocked(n int) (*Conn, int64) {
	r.delivered += int64(n)
	if r.delivered-r.ackedOut >= r.ackEvery && r.cur != nil {
		r.ackedOut = r.delivered
		return r.reading, r.ackedOut
	}
	if !r.ackArmed {
		r.ackArmed = true
		if r.ackTimer == nil {
			r.ackTimer = time.AfterFunc(ackDelay, r.ackLater)
		} else {
			r.ackTimer.Reset(ackDelay)
		}
	}
	return nil, 0
}

// ackLater sends the ack that small flows wait for.
func (r *ResumableConn) ackLater() {
	r.mu.Lock()
	r.ackArmed = false
	c := r.reading
	if c == nil || r.delivered == r.ackedOut || r.closed {
		r.mu.Unlock()
		return
	}
	r.ackedOut = r.delivered
	a := r.ackedOut
	r.mu.Unlock()
	c.queueAck(a)
}

// confirmedLocked: the client's first frame on a resumed connection
// confirms that it got the reply: the token before is used up.
func (r *ResumableConn) confirmedLocked() {
	if r.hasOld && r.srv != nil {
		r.hasOld = false
		r.srv.forgetToken(r.oldHash, r)
	}
}

// ackIn takes the peer's ack of n, from the connection of gen.
func (r *ResumableConn) ackIn(gen uint64, n int64) {
	r.mu.Lock()
	if gen != r.gen {
		r.mu.Unlock()
		return
	}
	r.confirmedLocked()
	if n > r.sent {
		r.failLocked(&dialer.ResumeError{Reason: dialer.ResumeInconsistent, Err: errors.New("the peer acknowledged bytes never sent")})
		r.mu.Unlock()
		return
	}
	if n > r.acked {
		r.acked = n
		r.freeLocked()
		r.broadcastLocked()
	}
	r.mu.Unlock()
}

// freeLocked gives back the chunks all acknowledged; an idle tunnel holds
// none.
func (r *ResumableConn) freeLocked() {
	if r.acked == r.sent {
		for _, b := range r.chunks {
			chunkPool.Put(b)
		}
		// The slice's array is kept for the next writes, its pointers not:
		// past the slice's length they would still hold the chunks alive
		// (a used idle tunnel kept up to a burst's worth of them).
		clear(r.chunks)
		r.chunks, r.base = r.chunks[:0], r.sent
		return
	}
	for len(r.chunks) > 0 && r.acked-r.base >= resumeChunk {
		chunkPool.Put(r.chunks[0])
		r.chunks[0] = nil
		r.chunks = r.chunks[1:]
		r.base += resumeChunk
	}
}

// segDoneLocked: a segment of the send buffer handed to a connection is
// written; the last after a Close gives the chunks back.
func (r *ResumableConn) segDoneLocked() {
	r.inFlight--
	if r.inFlight == 0 && r.closed {
		r.acked = r.sent
		r.freeLocked()
	}
}

// appendLocked copies what fits of p (up to a chunk's end) into the send
// buffer and returns it there.
func (r *ResumableConn) appendLocked(p []byte) []byte {
	idx, off := (r.sent-r.base)/resumeChunk, int((r.sent-r.base)%resumeChunk)
	if idx == int64(len(r.chunks)) {
		r.chunks = append(r.chunks, chunkPool.Get().(*[]byte))
	}
	n := copy((*r.chunks[idx])[off:], p)
	r.sent += int64(n)
	return (*r.chunks[idx])[off : off+n]
}

// segmentLocked is the buffered bytes from o, up to a chunk's end.
func (r *ResumableConn) segmentLocked(o int64) []byte {
	idx, off := (o-r.base)/resumeChunk, (o-r.base)%resumeChunk
	end := min(int64(resumeChunk), off+(r.sent-o))
	return (*r.chunks[idx])[off:end]
}

// endErrLocked is what a Read or Write returns once the tunnel is over.
func (r *ResumableConn) endErrLocked(op string) error {
	if r.final != nil {
		return r.final
	}
	if r.closed {
		return r.opError(op, net.ErrClosed)
	}
	return nil
}

// isLoss says whether err, from c, is the connection lost (a resume
// carries on) rather than the tunnel's end.
func (r *ResumableConn) isLoss(c *Conn, err error) bool {
	if r.closed {
		return false
	}
	if c.deadErr.Load() != nil {
		return true // our dead-peer rule
	}
	var ce *CloseError
	if errors.As(err, &ce) {
		return ce.Code == closeTimedOut // the peer's dead-peer rule
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return false
	}
	if errors.Is(err, syscall.EPIPE) && writable(c.state()) != nil {
		return false // the Conn's own rule (the peer ended), not a socket's EPIPE
	}
	return !isTimeout(err)
}

// readFailedLocked acts on a read error of c; done says the Read returns
// err, else it waits for the connection that follows.
func (r *ResumableConn) readFailedLocked(c *Conn, gen uint64, err error) (bool, error) {
	switch {
	case err == io.EOF:
		r.peerEOF = true
		if c.state().in() != dirFin {
			r.peerClosed = true // it closed both ways
		}
		r.broadcastLocked()
		return true, io.EOF
	case isTimeout(err) && c.deadErr.Load() == nil:
		return true, err
	case r.isLoss(c, err):
		r.lostLocked(c, gen, err)
		return false, nil
	}
	r.failLocked(err)
	return true, err
}

// failLocked ends the tunnel for good with err.
func (r *ResumableConn) failLocked(err error) {
	if r.final != nil || r.closed {
		return
	}
	r.final = err
	r.setDetachedLocked(false)
	if r.graceTimer != nil {
		r.graceTimer.Stop()
	}
	if f := r.endFn; f != nil {
		r.endFn = nil
		go f(err)
	}
	r.broadcastLocked()
}

// setDetachedLocked says whether the server's tunnel waits, detached, for
// a resume: the one place that moves spriteproxy_tunnels_detached, so that
// every way in and out (a loss, a resume that takes over a live
// connection, an attach, a final end, a Close) counts a tunnel once.
func (r *ResumableConn) setDetachedLocked(on bool) {
	if r.srv == nil || r.detachedCounted == on {
		return
	}
	r.detachedCounted = on
	if on {
		r.srv.Metrics.resumeDetached(1)
	} else {
		r.srv.Metrics.resumeDetached(-1)
	}
}

// lostLocked detaches the tunnel from c, whose connection was lost, and
// starts the way back: the client's reconnection, the server's grace.
func (r *ResumableConn) lostLocked(c *Conn, gen uint64, err error) {
	if gen != r.gen || r.reading != c || r.final != nil || r.closed {
		return
	}
	rel := r.detachLocked()
	if r.client {
		r.wg.Add(1)
		go r.reconnect(time.Now())
	} else {
		r.armGraceLocked()
		r.setDetachedLocked(true)
	}
	r.mu.Unlock()
	c.CloseNow()
	if rel != nil {
		close(rel)
	}
	r.mu.Lock()
}

func (r *ResumableConn) armGraceLocked() {
	gen := r.gen
	r.graceTimer = time.AfterFunc(r.grace, func() {
		r.mu.Lock()
		if r.gen == gen && r.reading == nil {
			r.failLocked(&dialer.ResumeError{Reason: dialer.ResumeGraceExpired})
			r.srv.Metrics.resumed("expired")
		}
		r.mu.Unlock()
	})
}

// detachLocked takes the connection away from the tunnel.
func (r *ResumableConn) detachLocked() chan struct{} {
	if r.stopEnd != nil {
		r.stopEnd()
		r.stopEnd = nil
	}
	rel := r.release
	r.cur, r.reading, r.release = nil, nil, nil
	r.gen++
	r.broadcastLocked()
	return rel
}

// publishLocked makes c the tunnel's connection (for reading; for writing
// too unless resending).
func (r *ResumableConn) publishLocked(c *Conn) {
	r.reading = c
	r.cur = c
	gen := r.gen
	c.onAck = func(n int64) { r.ackIn(gen, n) }
	r.stopEnd = c.AfterEnd(func(err error) {
		r.mu.Lock()
		r.lostLocked(c, gen, err)
		r.mu.Unlock()
	})
	r.broadcastLocked()
}

// attach carries the tunnel on over c, whose peer has received m bytes:
// it resends what the peer lacks (readers may use c meanwhile, writers
// wait) and the eof if it had been sent. rel, on the server, is closed
// when the layer lets go of c.
func (r *ResumableConn) attach(c *Conn, m int64, rel chan struct{}) error {
	return r.attachAs(c, m, rel, 0)
}

// errResumeSuperseded: another resume of the tunnel came in while this
// one replied, and the tunnel is that one's.
var errResumeSuperseded = errors.New("websocket: a later resume of the tunnel superseded this one")

// attachAs is attach for the server's resume number seq (resumeTunnel's
// claim; 0 for none): a resume that a later one superseded while it
// replied attaches nothing, and its connection is closed.
func (r *ResumableConn) attachAs(c *Conn, m int64, rel chan struct{}, seq uint64) error {
	r.mu.Lock()
	if seq != 0 && seq != r.resumeSeq {
		r.mu.Unlock()
		c.CloseNow()
		return errResumeSuperseded
	}
	if err := r.endErrLocked("resume"); err != nil {
		r.mu.Unlock()
		c.CloseNow()
		return err
	}
	if m < r.acked || m > r.sent {
		err := &dialer.ResumeError{Reason: dialer.ResumeInconsistent}
		r.failLocked(err)
		r.mu.Unlock()
		c.CloseNow()
		return err
	}
	r.acked = m
	r.freeLocked()
	if r.graceTimer != nil {
		r.graceTimer.Stop()
	}
	r.publishLocked(c)
	r.cur = nil // writers wait for the resend
	r.release = rel
	gen, rdl := r.gen, r.rdl
	r.resumes++
	r.ackedOut = r.delivered
	a := r.ackedOut
	r.mu.Unlock()
	c.SetReadDeadline(rdl)
	c.queueAck(a) // the client's confirmation (and the server's news)
	// Each step looks, under r.mu, at what is left to send: the data, then
	// the eof, which a CloseWrite during the resend leaves to it (it finds
	// no connection to write to). The step that finds nothing left hands c
	// to the writers, so that no CloseWrite falls between the two.
	var err error
	eofResent := false
	for o := m; ; {
		r.mu.Lock()
		switch {
		case err != nil:
			r.lostLocked(c, gen, err)
		case gen != r.gen:
		case o < r.sent:
			seg := r.segmentLocked(o)
			r.inFlight++
			r.mu.Unlock()
			_, err = c.Write(seg)
			o += int64(len(seg))
			r.mu.Lock()
			r.segDoneLocked()
			r.mu.Unlock()
			continue
		case r.eofSent && !eofResent:
			r.mu.Unlock()
			eofResent = true
			err = c.CloseWrite()
			continue
		default:
			r.cur = c
			wdl := r.wdl
			r.broadcastLocked()
			r.mu.Unlock()
			c.SetWriteDeadline(wdl)
			return nil
		}
		r.mu.Unlock()
		return nil
	}
}

// Write copies p into the send buffer and sends it; a full buffer waits
// for the peer's acks (reading them itself when no Read is under way).
func (r *ResumableConn) Write(p []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	total := 0
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(p) > 0 {
		if err := r.writeErrLocked(); err != nil {
			return total, err
		}
		c, gen := r.cur, r.gen
		room := r.bufMax - (r.sent - r.acked)
		if c == nil || room <= 0 {
			if rc := r.reading; rc != nil && r.rmu.TryLock() {
				r.readForWriterLocked(rc, gen, r.ackStep())
				r.rmu.Unlock()
				continue
			}
			if !r.waitLocked(r.wdl) {
				return total, r.opError("write", os.ErrDeadlineExceeded)
			}
			continue
		}
		seg := r.appendLocked(p[:min(int64(len(p)), room)])
		r.inFlight++
		r.mu.Unlock()
		n, err := c.Write(seg)
		r.mu.Lock()
		r.segDoneLocked()
		if err != nil && gen == r.gen {
			if isTimeout(err) && c.deadErr.Load() == nil {
				r.sent -= int64(len(seg) - n)
				return total + n, err
			}
			if !r.isLoss(c, err) {
				r.failLocked(err)
				return total, err
			}
			r.lostLocked(c, gen, err)
		}
		total += len(seg)
		p = p[len(seg):]
	}
	if !r.rmu.TryLock() {
		return total, nil // a Read is under way: it takes the acks
	}
	r.rmu.Unlock()
	r.startAckReaderLocked()
	return total, nil
}

func (r *ResumableConn) writeErrLocked() error {
	if err := r.endErrLocked("write"); err != nil {
		return err
	}
	if r.eofSent || r.peerClosed {
		return r.opError("write", syscall.EPIPE)
	}
	if !r.wdl.IsZero() && !time.Now().Before(r.wdl) {
		return r.opError("write", os.ErrDeadlineExceeded)
	}
	return nil
}

// peerBufOf is the most c's peer may send that this side has not
// acknowledged: the resume buffer its first message or reply said, else
// the default one.
func peerBufOf(c *Conn) int64 {
	if c.peerBuf > 0 {
		return c.peerBuf
	}
	return DefaultResumeBuffer
}

// ackStep is the deadline of one read for acks by a writer that waits:
// a step at a time, as the ack reader's, so that what the writer waits
// for may come other than by the connection (the resend's end, a new
// write deadline), and never past the write deadline.
func (r *ResumableConn) ackStep() time.Time {
	dl := time.Now().Add(ackReadStep)
	if !r.wdl.IsZero() && r.wdl.Before(dl) {
		dl = r.wdl
	}
	return dl
}

// readForWriterLocked reads c for a Write that waits for acks while no
// Read is under way: data goes to pending (acknowledged only once Read
// hands it on, so the peer's buffer bounds it), acks to the send buffer.
// r.mu and r.rmu are held; r.mu is let go meanwhile.
func (r *ResumableConn) readForWriterLocked(c *Conn, gen uint64, dl time.Time) {
	r.mu.Unlock()
	c.SetReadDeadline(dl)
	bp := chunkPool.Get().(*[]byte)
	n, err := c.readOrAck(*bp)
	r.mu.Lock()
	rdl := r.rdl
	overrun := false
	if gen == r.gen {
		if past := r.recvd + int64(n) - r.ackedOut; n > 0 && past > peerBufOf(c) {
			// More than the peer may have unacknowledged: it is not
			// keeping its buffer (a peer that does holds it back), and
			// what it sends would be kept here without bound.
			overrun = true
			r.failLocked(protocolErrorf(closeProtocolError, "the peer sent %d bytes past the last acknowledgement, over its resume buffer of %d", past, peerBufOf(c)))
			n = 0
		}
		if n > 0 {
			r.recvd += int64(n)
			r.confirmedLocked()
			r.pending = append(r.pending, (*bp)[:n]...)
		}
		if err != nil && !(isTimeout(err) && c.deadErr.Load() == nil) {
			r.readFailedLocked(c, gen, err)
		}
	}
	r.mu.Unlock()
	chunkPool.Put(bp)
	if overrun {
		c.CloseNow() // nothing more of it is read
	}
	c.SetReadDeadline(rdl)
	r.mu.Lock()
}

// CloseWrite ends the write side once all data is sent (the eof of
// half_close); it is sent again after a resume if the peer may lack it.
func (r *ResumableConn) CloseWrite() error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	if r.eofSent {
		r.mu.Unlock()
		return nil
	}
	if err := r.endErrLocked("close write"); err != nil {
		r.mu.Unlock()
		return err
	}
	r.eofSent = true
	c, gen := r.cur, r.gen
	r.mu.Unlock()
	if c == nil {
		return nil // the resend sends it
	}
	if err := c.CloseWrite(); err != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		if gen == r.gen && !r.isLoss(c, err) {
			r.failLocked(err)
			return err
		}
		r.lostLocked(c, gen, err)
	}
	return nil
}

// errCloseUnsent is what Close returns (wrapped in a *net.OpError) when
// the close timeout passed before a resume had sent the peer what it
// lacks: the peer is reset, and that data is lost.
var errCloseUnsent = fmt.Errorf("%w: closed before a resume resent what the peer lacks", dialer.ErrTunnelClosed)

// Close ends the tunnel: it waits (up to the close timeout) for a
// reconnection under way, so that data still buffered reaches the peer,
// then closes the connection as Conn.Close does. If none has resent that
// data by then, the peer is reset instead (never a clean end), and Close
// returns an error that matches dialer.ErrTunnelClosed.
func (r *ResumableConn) Close() error { return r.closeWith(nil) }

// CloseWithError ends the tunnel as Conn.CloseWithError does: for a
// stream cut short at its far side.
func (r *ResumableConn) CloseWithError(err error) error {
	if err == nil {
		err = errors.New("reset")
	}
	return r.closeWith(err)
}

func (r *ResumableConn) closeWith(cause error) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	if cause == nil {
		dl := time.Now().Add(r.closeTimeout)
		for (r.cur == nil || r.reading == nil) && r.final == nil && r.waitLocked(dl) {
		}
		if r.cur == nil && r.final == nil && r.sent > r.acked {
			// No resend finished within the close timeout: bytes Write
			// reported written may never reach the peer, which must not
			// read a clean end (a reset: CloseWithError), nor may Close
			// report one.
			cause = errCloseUnsent
		}
	}
	unsent := cause == errCloseUnsent
	r.closed = true
	c := r.reading
	r.setDetachedLocked(false)
	rel := r.detachLocked()
	if r.graceTimer != nil {
		r.graceTimer.Stop()
	}
	if r.ackTimer != nil {
		r.ackTimer.Stop()
	}
	r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
	}
	// The connection closes before the wait for the layer's goroutines: a
	// resend under way on it (a reconnection's) then ends.
	var err error
	if c != nil {
		if cause != nil {
			err = c.CloseWithError(cause)
		} else {
			err = c.Close()
		}
	}
	if unsent {
		err = r.opError("close", errCloseUnsent)
	}
	r.wg.Wait()
	if r.srv != nil {
		r.srv.forgetAll(r)
	}
	if rel != nil {
		close(rel)
	}
	r.mu.Lock()
	if r.inFlight == 0 { // else the last segment's writer frees them
		r.acked = r.sent
		r.freeLocked()
	}
	r.pending = nil
	r.mu.Unlock()
	return err
}

// AwaitEnd is Conn.AwaitEnd across reconnections (pump.EndAwaiter).
func (r *ResumableConn) AwaitEnd() error {
	r.rmu.Lock()
	defer r.readDone()
	r.mu.Lock()
	for {
		if r.closed {
			r.mu.Unlock()
			return nil
		}
		if r.final != nil {
			r.mu.Unlock()
			return r.final
		}
		c, gen := r.reading, r.gen
		if c == nil {
			r.waitLocked(time.Time{})
			continue
		}
		r.mu.Unlock()
		err := c.AwaitEnd()
		r.mu.Lock()
		if err == nil || errors.Is(err, pump.ErrNoWatch) {
			r.mu.Unlock()
			return err
		}
		if gen != r.gen {
			continue
		}
		if r.isLoss(c, err) {
			r.lostLocked(c, gen, err)
			continue
		}
		r.failLocked(err)
	}
}

// AfterEnd calls f, once and in a goroutine of its own, when the tunnel
// ends for good outside a Read or Write (its grace expired, its resume was
// refused) (pump.Ender).
func (r *ResumableConn) AfterEnd(f func(error)) (stop func() bool) {
	r.mu.Lock()
	if r.final != nil {
		err := r.final
		r.mu.Unlock()
		go f(err)
		return func() bool { return false }
	}
	r.endFn = f
	r.mu.Unlock()
	return func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		ok := r.endFn != nil
		r.endFn = nil
		return ok
	}
}

// The client's side.

// newClientResumable wraps c, just dialed with resume granted.
func (d *Dialer) newClientResumable(c *Conn, sprite, host string, port int) *ResumableConn {
	r := newResumable(c, true, d.ResumeBuffer, c.resumeGrace)
	r.d, r.sprite, r.host, r.port, r.replica, r.token = d, sprite, host, port, c.replica, c.resumeTok
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r
}

// resumeRefusedFor is how long a client goes on trying to resume while
// every attempt is refused at TCP before it takes the server for gone.
const resumeRefusedFor = 3 * time.Second

// reconnect carries the tunnel on over a new connection, trying until the
// server's grace from the drop is spent; it ends with success, failure or
// Close.
func (r *ResumableConn) reconnect(from time.Time) {
	defer r.wg.Done()
	deadline := from.Add(r.grace)
	backoff := cmpOr(r.d.Retry.Backoff, DefaultRetryBackoff)
	var refused time.Time // since when every attempt was refused at TCP
	for {
		r.mu.Lock()
		tok, recvd := r.token, r.recvd
		r.mu.Unlock()
		ctx, cancel := context.WithDeadline(r.ctx, deadline)
		c, rep, err := r.d.resumeDial(ctx, r.sprite, r.host, r.port, tok, recvd, r.replica)
		cancel()
		if r.ctx.Err() != nil {
			if c != nil {
				c.CloseNow()
			}
			return
		}
		if err == nil {
			r.mu.Lock()
			r.token = rep.Resume
			if rep.Replica != "" {
				r.replica = rep.Replica
			}
			r.mu.Unlock()
			r.attach(c, rep.Received, nil)
			return
		}
		var re *dialer.ResumeError
		switch {
		case errors.As(err, &re):
		case errors.Is(err, dialer.ErrUnauthorized) || errors.Is(err, dialer.ErrForbidden):
			re = &dialer.ResumeError{Reason: dialer.ResumeRevoked, Err: err}
		case errors.Is(err, dialer.ErrUnknownSprite):
			re = &dialer.ResumeError{Reason: dialer.ResumeGone, Err: err}
		case errors.Is(err, syscall.ECONNREFUSED):
			// Nothing listens where the server was. A balancer or relay
			// restarting refuses for a moment; a server process that died
			// took the tunnel (in its memory) with it, and one started in
			// its place would answer gone. So refusals are retried for
			// resumeRefusedFor, not the whole grace.
			if refused.IsZero() {
				refused = time.Now()
			}
			if time.Since(refused) >= resumeRefusedFor {
				re = &dialer.ResumeError{Reason: dialer.ResumeGone, Err: err}
			}
		default:
			refused = time.Time{}
		}
		wait := min(backoff/2+mrand.N(backoff/2+1), maxResumeBackoff)
		backoff = min(2*backoff, maxResumeBackoff)
		if re == nil && time.Until(deadline) <= wait {
			// The last attempt's error is told, not wrapped: a dial's
			// timeout must not make the tunnel's end read as a deadline
			// that a later Read could outlive.
			re = &dialer.ResumeError{Reason: dialer.ResumeGraceExpired, Err: fmt.Errorf("last attempt: %s", err)}
		}
		if re != nil {
			r.mu.Lock()
			r.failLocked(re)
			r.mu.Unlock()
			return
		}
		if sleepCtx(r.ctx, wait) != nil {
			return
		}
	}
}
