package websocket

import (
	"io"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pool"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return now.
var aLongTimeAgo = time.Unix(1, 0)

// CloseWrite ends the write side of the stream; reads go on. With the
// half_close extension the peer reads io.EOF and may still write back;
// with a plain peer this sends the close frame, which the peer reads as the
// end of the stream. Writes after it fail with syscall.EPIPE.
func (c *Conn) CloseWrite() error {
	if c.raw {
		return c.rawCloseWrite()
	}
	c.wmu.Lock()
	err := c.closeWriteLocked()
	c.wmu.Unlock()
	c.flushControl()
	if err != nil {
		return c.writeError(err)
	}
	return nil
}

func (c *Conn) closeWriteLocked() error {
	if c.wr.closed {
		return nil
	}
	if err := c.writableLocked(); err != nil {
		if err == syscall.EPIPE {
			return nil
		}
		return err
	}
	if !c.halfClose {
		return c.sendCloseLocked(closeNormal, "")
	}
	_, err := c.writeFrameLocked(opText, wire.EOFMessage)
	c.wr.closed = true
	return err
}

// Close ends the tunnel: it sends the close frame (unless sent already),
// waits up to the close timeout for the peer's (reading and discarding what
// the peer still sends), then closes the connection underneath and stops
// the keep-alive timer. It is idempotent and safe to call concurrently; a
// blocked Read or Write returns.
func (c *Conn) Close() error {
	if c.raw {
		return c.rawClose()
	}
	c.closeOnce.Do(func() {
		if c.reuse {
			c.closeErr = c.closeReuse()
			return
		}
		c.closeErr = c.close(closeNormal, "")
	})
	return c.closeErr
}

// close is Close with a close frame of code and reason.
func (c *Conn) close(code int, reason string) error {
	c.closing.Store(true)
	deadline := time.Now().Add(c.cfg.closeTimeout)
	clean := false
	if c.wmu.TryLock() {
		if c.wr.err == nil && !c.closed.Load() {
			c.wd.closing(c.nc, deadline)
			c.writeControlLocked()
			if c.flushPendLocked() == nil && c.sendCloseLocked(code, reason) == nil {
				clean = true
			}
		}
		c.wr.closed = true
		c.wmu.Unlock()
	} else {
		// A Write is blocked: the peer is not reading, so no close frame can
		// get through. Unblock the writer and close at once.
		c.wd.closing(c.nc, aLongTimeAgo)
	}
	if clean && !c.closeRecv.Load() {
		c.drainOrWait(deadline)
	}
	return c.finish()
}

// drainOrWait reads and discards until the peer's close frame (or end,
// under reuse), an error or deadline. While a Read holds the read side, it
// waits for that Read to see the peer's last frame, or to let go (having
// returned at an eof, say) so that the drain can read on.
func (c *Conn) drainOrWait(deadline time.Time) {
	c.nc.SetReadDeadline(deadline)
	if lockSoon(&c.rmu) {
		c.drainLocked()
		c.rmu.Unlock()
		return
	}
	left := make(chan struct{}, 1)
	c.readLeft.Store(&left)
	defer c.readLeft.Store(nil)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		if c.rmu.TryLock() { // (again after each signal, and once after the Store)
			c.drainLocked()
			c.rmu.Unlock()
			return
		}
		select {
		case <-c.peerClosed:
			return
		case <-t.C:
			return
		case <-left:
		}
	}
}

// readerLeft tells a Close waiting in drainOrWait that a Read has let go
// of the read side.
func (c *Conn) readerLeft() {
	if p := c.readLeft.Load(); p != nil {
		select {
		case *p <- struct{}{}:
		default:
		}
	}
}

// drainLocked reads and discards until the peer's close frame, an error or
// the read deadline.
func (c *Conn) drainLocked() {
	r := &c.rd
	r.eof = false // the eof message ended the stream for the reader, not for us
	if r.err != nil && r.err != io.EOF && !c.closeRecv.Load() {
		c.discardRaw()
		return
	}
	for {
		err := c.awaitDataLocked()
		if err != nil {
			if r.eof {
				r.eof = false
				continue
			}
			return
		}
		bp := pool.Get()
		_, err = c.readPayloadLocked((*bp)[:min(r.left, int64(pool.Size))])
		pool.Put(bp)
		if err != nil {
			return
		}
	}
}

// closeNC closes the connection under the tunnel. Under TLS that the tunnel
// made, a gathered write under way, or bytes a timeout kept, would make
// crypto/tls's Close send its close_notify behind them and wait; the
// connection is closed at once instead, without the alert, as crypto/tls
// does when its own Write is in flight (its failed alert is then no error
// of the tunnel's).
func (c *Conn) closeNC() error {
	if c.cork != nil && c.cork.Interrupt() {
		c.nc.Close()
		return nil
	}
	return c.nc.Close()
}

// maxDiscard bounds what Close reads and drops after a protocol error.
const maxDiscard = 1 << 20

// discardRaw reads and drops bytes after the read side failed (a frame
// over the limit, say), so that closing does not reset the connection
// before the peer has read our close frame; it stops at the peer's end of
// stream, the read deadline or maxDiscard bytes.
func (c *Conn) discardRaw() {
	bp := pool.Get()
	defer pool.Put(bp)
	for n := 0; n < maxDiscard; {
		m, err := c.nc.Read(*bp)
		n += m
		if err != nil {
			return
		}
	}
}
