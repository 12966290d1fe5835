package websocket

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/internal/cork"
	"github.com/spriteproxy/spriteproxy/internal/pool"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// writevChunk is the largest frame sent without copying (the server writes
// header and payload with one writev); frames that are copied (masked by
// the client, or sent over TLS) are at most pool.Size.
const writevChunk = 1 << 20

// writer is the write side's state, guarded by Conn.wmu.
type writer struct {
	err  error  // sticky: the stream can carry no more frames
	pend []byte // the rest of a frame cut short by a write timeout
	hdr  [maxHeader]byte
	ctrl [maxControlPayload]byte // a control frame's payload on its way out
}

// pendingControl holds control frames that the read side asked for, to be
// sent by whoever holds the write lock next.
type pendingControl struct {
	pongData    [maxControlPayload]byte
	pongN       uint8 // ≤ maxControlPayload
	pong        bool
	ping        bool
	ack         bool // resume: an ack of ackN is owed
	ackN        int64
	close       bool
	closeCode   uint16
	closeReason string
}

// Write sends p as one binary message (several for large p). See Conn.
func (c *Conn) Write(p []byte) (int, error) {
	if h := c.hs; h != nil {
		if !h.settled() {
			return c.writeEarly(h, p)
		}
		if err := h.failed(); err != nil {
			return 0, err
		}
	}
	if c.raw {
		return c.rawWrite(p)
	}
	c.wmu.Lock()
	n, err := c.writeLocked(p)
	c.wmu.Unlock()
	c.flushControl()
	if err != nil {
		err = c.writeError(err)
	}
	return n, err
}

func (c *Conn) writeLocked(p []byte) (int, error) {
	if err := c.writableLocked(); err != nil {
		return 0, err
	}
	chunk := pool.Size
	if !c.client && c.tcp != nil {
		chunk = writevChunk
	}
	n := 0
	for n < len(p) {
		m, err := c.writeFrameLocked(opBinary, p[n:min(len(p), n+chunk)])
		n += m
		if err != nil {
			return n, err
		}
	}
	c.lastData.Store(c.lastWrite.Load())
	return n, nil
}

// writableLocked says whether data may be written, and sends whatever is
// owed first (control frames, the rest of a cut frame).
func (c *Conn) writableLocked() error {
	w := &c.wr
	if w.err != nil {
		return w.err
	}
	if err := writable(c.state()); err != nil {
		return err
	}
	if c.ctrlPending.Load() {
		c.writeControlLocked()
		if w.err != nil {
			return w.err
		}
		if err := writable(c.state()); err != nil {
			return err // our close frame went out (answering the peer's)
		}
	}
	return c.flushPendLocked()
}

// flushPendLocked finishes a frame that a write timeout cut short.
func (c *Conn) flushPendLocked() error {
	w := &c.wr
	if len(w.pend) == 0 {
		return w.err
	}
	n, err := c.ncWrite(w.pend)
	w.pend = w.pend[n:]
	if err != nil {
		if !isTimeout(err) {
			w.err = err
		}
		return err
	}
	w.pend = nil
	return nil
}

// writeFrameLocked sends p as one frame of opcode op and returns how many
// payload bytes were sent (or committed: a frame cut by a timeout is
// finished later).
func (c *Conn) writeFrameLocked(op byte, p []byte) (int, error) {
	if err := c.flushPendLocked(); err != nil {
		return 0, err
	}
	if !c.client && c.tcp != nil {
		hl := putHeader(c.wr.hdr[:], op, len(p), nil)
		c.wvec[0], c.wvec[1] = c.wr.hdr[:hl], p
		c.wbufs = c.wvec[:]
		n, err := c.wbufs.WriteTo(c.nc)
		c.wvec[1] = nil
		return c.afterWrite(len(p), hl+len(p), int(n), err, func(from int) []byte {
			frame := append(c.wr.hdr[:hl:hl], p...)
			return frame[from:]
		})
	}
	bp := pool.Get()
	defer pool.Put(bp)
	copy((*bp)[pool.Headroom:], p)
	return c.sendBufLocked(op, bp, len(p))
}

// sendBufLocked frames the n payload bytes at (*bp)[pool.Headroom:] in place
// (header in the headroom, masked where the client must mask) and sends
// them with one write.
func (c *Conn) sendBufLocked(op byte, bp *[]byte, n int) (int, error) {
	buf := *bp
	var mask *[4]byte
	var m [4]byte
	if c.client {
		binary.LittleEndian.PutUint32(m[:], rand.Uint32())
		mask = &m
	}
	hl := headerLen(n, c.client)
	start := pool.Headroom - hl
	putHeader(buf[start:], op, n, mask)
	if c.client {
		ws.Cipher(buf[pool.Headroom:pool.Headroom+n], m, 0)
	}
	frame := buf[start : pool.Headroom+n]
	written, err := c.ncWrite(frame)
	return c.afterWrite(n, len(frame), written, err, func(from int) []byte {
		return append([]byte(nil), frame[from:]...)
	})
}

// ncWrite writes b to the connection under the tunnel. Under TLS made by
// the tunnel, crypto/tls writes b's records into the cork.Conn, which sends
// them with one write (see cork.Conn).
//
// b is sent a frame's size at a time (a raw stream's Write may be larger).
// On a timeout, the count includes the bytes the cork.Conn keeps to send
// first next time; on any other failure of a gathered write, it does not
// (nothing of that part is known to have gone out).
func (c *Conn) ncWrite(b []byte) (int, error) {
	if c.cork == nil {
		return c.nc.Write(b)
	}
	n := 0
	for {
		chunk := b[n:min(len(b), n+cork.Chunk)]
		if err := c.cork.Begin(); err != nil {
			return n, err
		}
		m, err := c.nc.Write(chunk)
		if err != nil {
			m = 0 // the cork failed for good: none of it goes out
		}
		if ferr := c.cork.End(); err == nil && ferr != nil {
			err = ferr
			if !isTimeout(ferr) {
				m = 0
			}
		}
		n += m
		if err != nil || n == len(b) {
			return n, err
		}
	}
}

// afterWrite accounts for a frame write of total bytes (payload of them)
// that wrote n: a frame cut by a timeout is kept (rest copies what is left)
// to be finished by the next write; any other failure is final.
func (c *Conn) afterWrite(payload, total, n int, err error, rest func(from int) []byte) (int, error) {
	if err == nil {
		c.lastWrite.Store(time.Now().UnixNano())
		return payload, nil
	}
	if isTimeout(err) && !c.state().closed() {
		if n == 0 {
			return 0, err
		}
		c.wr.pend = rest(n)
		return payload, err
	}
	c.wr.err = err
	c.lost(c.opError("write", err))
	return min(payload, max(0, n-(total-payload))), err
}

// writeError turns a write-side error into what Write returns.
func (c *Conn) writeError(err error) error {
	if d := c.deadErr.Load(); d != nil {
		return *d
	}
	if c.state().closed() || errors.Is(err, net.ErrClosed) {
		return c.opError("write", net.ErrClosed)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return err
	}
	return c.opError("write", err)
}

// queuePong asks for a pong answering a ping with payload p.
func (c *Conn) queuePong(p []byte) {
	c.ctrlMu.Lock()
	c.ctrl.pong = true
	c.ctrl.pongN = uint8(copy(c.ctrl.pongData[:], p))
	c.ctrlMu.Unlock()
	c.ctrlPending.Store(true)
	c.flushControl()
}

// queueAck asks for an ack of n (resume); a later one replaces an earlier
// one not yet sent (acks are cumulative).
func (c *Conn) queueAck(n int64) {
	c.ctrlMu.Lock()
	c.ctrl.ack, c.ctrl.ackN = true, n
	c.ctrlMu.Unlock()
	c.ctrlPending.Store(true)
	c.flushControl()
}

// queuePing asks for a keep-alive ping.
func (c *Conn) queuePing() {
	c.ctrlMu.Lock()
	c.ctrl.ping = true
	c.ctrlMu.Unlock()
	c.ctrlPending.Store(true)
	c.flushControl()
}

// queueClose asks for a close frame with code and reason.
func (c *Conn) queueClose(code int, reason string) {
	c.ctrlMu.Lock()
	if !c.ctrl.close {
		c.ctrl.close, c.ctrl.closeCode, c.ctrl.closeReason = true, uint16(code), reason
	}
	c.ctrlMu.Unlock()
	c.ctrlPending.Store(true)
	c.flushControl()
}

// flushControl sends pending control frames if the write side is free; if
// it is not, its holder sends them when it lets go (it checks after
// unlocking, so nothing queued is left behind).
func (c *Conn) flushControl() {
	for c.ctrlPending.Load() && c.wmu.TryLock() {
		c.writeControlLocked()
		c.wmu.Unlock()
	}
}

// writeControlLocked sends the pending control frames.
func (c *Conn) writeControlLocked() {
	c.ctrlMu.Lock()
	pong, ping, closing, code, reason := c.ctrl.pong, c.ctrl.ping, c.ctrl.close, int(c.ctrl.closeCode), c.ctrl.closeReason
	n := copy(c.wr.ctrl[:], c.ctrl.pongData[:c.ctrl.pongN])
	ack, ackN := c.ctrl.ack, c.ctrl.ackN
	c.ctrl.pong, c.ctrl.ping, c.ctrl.close, c.ctrl.ack = false, false, false, false
	c.ctrlPending.Store(false)
	c.ctrlMu.Unlock()
	if c.wr.err != nil || c.state().closed() {
		return
	}
	if c.state().has(sentEnd) {
		// After end, the connection carries the next stream's frames:
		// the peer expects no pong or ping of this one.
		pong, ping = false, false
	}
	if pong || ping {
		// Keep-alive does not depend on the application's deadline.
		defer c.wd.control(c.nc, c.controlBound())()
	}
	if pong {
		c.writeFrameLocked(opPong, c.wr.ctrl[:n])
	}
	if ping {
		c.writeFrameLocked(opPing, nil)
	}
	if ack && c.resume && !c.state().has(sentEnd) && !c.state().has(sentClose) {
		if len(c.wr.pend) == 0 || c.flushPendLocked() == nil {
			c.writeFrameLocked(opText, wire.AppendAck(c.wr.ctrl[:0], ackN))
		}
	}
	if closing {
		c.sendCloseLocked(code, reason)
	}
}

// controlBound is how long a ping or pong may take to write.
func (c *Conn) controlBound() time.Duration {
	if c.cfg.keepAlive > 0 {
		return c.cfg.keepAlive
	}
	return c.cfg.closeTimeout
}

// sendCloseLocked sends the close frame once; no data may follow it.
func (c *Conn) sendCloseLocked(code int, reason string) error {
	if !c.closeFrameSent() {
		return nil
	}
	_, err := c.writeFrameLocked(opClose, closeBody(c.wr.ctrl[:0], code, reason))
	return err
}
