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
// half_close extension the peer reads io.EOF and may still write back.
// A plain peer has no half-close: the close frame is its only end of
// stream, and a plain server answers it at once, dropping what it was
// still sending. So on the client, CloseWrite to a plain server sends
// nothing yet: the tunnel goes on reading, and the close frame goes out
// once the server has been silent for Dialer.HalfCloseLinger (as socat's
// -t), when the server's own close frame arrives, or at Close; a server
// that does not answer the linger's close frame within the close timeout
// has the tunnel closed, its reads failing with a timeout. On the
// server (towards a plain client), it sends the close frame at once.
// Writes after it fail with syscall.EPIPE.
func (c *Conn) CloseWrite() error {
	if err := c.await(); err != nil {
		return err
	}
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
	if c.state().out() != dirOpen {
		return nil
	}
	if err := c.writableLocked(); err != nil {
		if err == syscall.EPIPE {
			return nil
		}
		return err
	}
	switch c.finAction() {
	case finClose:
		return c.sendCloseLocked(closeNormal, "")
	case finLinger:
		// Our fin is recorded and the peer's close checked in one step: a
		// close frame read meanwhile is answered here or by the reader
		// (closeFrameReceived), never by neither.
		if c.finSent().has(recvClose) {
			return c.sendCloseLocked(closeNormal, "")
		}
		c.startLinger()
		return nil
	}
	_, err := c.writeFrameLocked(opText, wire.EOFMessage)
	// Our fin is recorded once the eof went out, or was cut by a
	// deadline (the next write finishes it). A connection that failed
	// under it did not send it: that stays the connection's failure (a
	// ResumableConn resumes and sends it again), not the Conn's own
	// end of writing.
	if err == nil || isTimeout(err) {
		c.finSent()
	}
	return err
}

// Close ends the tunnel: it sends the close frame (unless sent already),
// waits up to the close timeout for the peer's (reading and discarding what
// the peer still sends), then closes the connection underneath and stops
// the keep-alive timer. It is idempotent and safe to call concurrently; a
// blocked Read returns, and a Write under way finishes first or, if the
// peer does not read, fails at the close timeout.
func (c *Conn) Close() error {
	c.await()
	return c.closeStream()
}

// closeStream is Close once any optimistic reply is in.
func (c *Conn) closeStream() error {
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

// CloseNow closes the tunnel at once, without the closing handshake: the
// peer sees the connection end without a close frame. Use Close for a clean
// end; CloseNow is for giving up on a broken or stuck peer. Like Close, it
// is idempotent, and after either one the other does nothing.
func (c *Conn) CloseNow() error {
	c.abortPending()
	return c.closeNow()
}

// closeNow is CloseNow once any optimistic reply is in.
func (c *Conn) closeNow() error {
	if c.raw {
		return c.rawClose()
	}
	c.closeOnce.Do(func() {
		c.beginClose()
		c.closeErr = c.finish()
	})
	return c.closeErr
}

// close is Close with a close frame of code and reason.
func (c *Conn) close(code int, reason string) error {
	return c.closeBy(time.Now().Add(c.cfg.closeTimeout), code, reason)
}

// closeBy is close with the deadline of a Close already under way (one
// deadline bounds the whole Close, whatever path it takes).
func (c *Conn) closeBy(deadline time.Time, code int, reason string) error {
	c.beginClose()
	clean := false
	// A Write under way finishes first, or gives up at the deadline if the
	// peer does not read, as in closeReuse. (Taking a held write side for
	// a blocked Write dropped the close frame behind one that was only
	// returning: its bytes out, its goroutine not yet run again.)
	c.wd.closing(c.nc, deadline)
	c.wmu.Lock()
	if c.wr.err == nil && !c.state().closed() {
		c.writeControlLocked()
		if c.flushPendLocked() == nil && c.sendCloseLocked(code, reason) == nil {
			clean = true
		}
	}
	c.wmu.Unlock()
	if clean && !c.state().has(recvClose) {
		c.drainOrWait(deadline)
	}
	return c.finish()
}

// drainOrWait reads and discards until the peer's close frame (or end,
// under reuse), an error or deadline. While a Read holds the read side, it
// waits for that Read to see the peer's last frame, or to let go (having
// returned at an eof, say) so that the drain can read on.
func (c *Conn) drainOrWait(deadline time.Time) {
	c.closeRead.Store(deadline.UnixNano()) // first: see restoreReadDeadline
	c.nc.SetReadDeadline(deadline)
	if c.lockReadBy(deadline, c.peerClosed) {
		c.drainLocked()
		c.unlockRead()
	}
}

// lockReadBy takes the read side (rmu) for a close: at once if it is
// free, or when the Read, copy or AwaitEnd holding it lets go
// (unlockRead), giving up at deadline or when stop is closed (nil for
// never). It is not polling: the holder's unlockRead wakes it. One close
// waits at a time (Close runs once, and its waits follow each other).
func (c *Conn) lockReadBy(deadline time.Time, stop <-chan struct{}) bool {
	if c.rmu.TryLock() {
		return true
	}
	left := make(chan struct{}, 1)
	c.readLeft.Store(&left)
	defer c.readLeft.Store(nil)
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		// Again after each wake-up, and once after the Store: a holder
		// that let go before it could not wake us.
		if c.rmu.TryLock() {
			return true
		}
		select {
		case <-stop:
			return false
		case <-t.C:
			return false
		case <-left:
		}
	}
}

// unlockRead lets go of the read side, and wakes a close waiting for it
// (lockReadBy): one atomic load when none waits.
func (c *Conn) unlockRead() {
	c.rmu.Unlock()
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
	if r.err != nil && r.err != io.EOF && !c.state().has(recvClose) {
		c.discardRaw()
		return
	}
	for {
		// Past the peer's eof: it ended the stream for the reader, not
		// for us.
		if err := c.awaitDataLocked(true); err != nil {
			return
		}
		bp := pool.Get()
		_, err := c.readPayloadLocked((*bp)[:min(r.left, int64(pool.Size))])
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
