package websocket

import (
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
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
		return c.sendCloseLocked(closeNormal)
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
		c.closeErr = c.close()
	})
	return c.closeErr
}

func (c *Conn) close() error {
	c.closing.Store(true)
	deadline := time.Now().Add(c.cfg.closeTimeout)
	clean := false
	if c.wmu.TryLock() {
		if c.wr.err == nil && !c.closed.Load() {
			c.nc.SetWriteDeadline(deadline)
			c.writeControlLocked()
			if c.flushPendLocked() == nil && c.sendCloseLocked(closeNormal) == nil {
				clean = true
			}
		}
		c.wr.closed = true
		c.wmu.Unlock()
	} else {
		// A Write is blocked: the peer is not reading, so no close frame can
		// get through. Unblock the writer and close at once.
		c.nc.SetWriteDeadline(aLongTimeAgo)
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

// timeoutError is the error of a tunnel closed by the dead-peer or idle
// timeout.
type timeoutError struct{ msg string }

func (e *timeoutError) Error() string        { return "websocket: " + e.msg }
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Temporary() bool      { return false }
func (e *timeoutError) Is(target error) bool { return target == dialer.ErrTunnelClosed }

var _ net.Error = (*timeoutError)(nil)

// startKeepalive arms the keep-alive timer. No goroutine runs while the
// tunnel is idle: the timer's function runs briefly every tick.
func (c *Conn) startKeepalive() {
	if c.raw {
		c.rawKeepAlive() // no frames to ping with: the kernel probes instead
		return
	}
	if c.cfg.tick <= 0 {
		return
	}
	c.kmu.Lock()
	defer c.kmu.Unlock()
	if c.closed.Load() {
		return
	}
	c.kTimer = time.AfterFunc(c.cfg.tick, c.keepalive)
}

// keepalive sends a ping if nothing was sent for the keep-alive interval,
// closes a tunnel whose reader has heard nothing for the dead-peer timeout,
// and one that carried no data for the idle timeout.
func (c *Conn) keepalive() {
	c.kmu.Lock()
	defer c.kmu.Unlock()
	if c.closed.Load() || c.kTimer == nil {
		return
	}
	now := time.Now().UnixNano()
	if dead := c.cfg.deadPeer; c.cfg.keepAlive > 0 && dead > 0 && c.reading.Load() > 0 && now-c.lastRead.Load() > int64(dead) {
		c.expire(&timeoutError{fmt.Sprintf("no frame from the peer in %v: tunnel closed as dead", dead)}, closeGoingAway)
		return
	}
	if idle := c.cfg.idle; idle > 0 && now-c.lastData.Load() > int64(idle) {
		c.expire(&timeoutError{fmt.Sprintf("no data either way in %v: idle tunnel closed", idle)}, closeGoingAway)
		return
	}
	if c.cfg.keepAlive > 0 && now-c.lastWrite.Load() >= int64(c.cfg.keepAlive)*9/10 {
		c.queuePing()
	}
	c.kTimer.Reset(c.cfg.tick)
}

// expire closes the tunnel from the timer: reads and writes fail with err
// (a timeout), and the peer gets a close frame if one can be sent now.
func (c *Conn) expire(err *timeoutError, code int) {
	e := error(&net.OpError{Op: "read", Net: "websocket", Source: c.local, Addr: c.remote, Err: err})
	c.deadErr.Store(&e)
	c.queueClose(code, "")
	c.closed.Store(true)
	c.markPeerClosed()
	c.closeNC()
}

// closeNC closes the connection under the tunnel. Under TLS that the tunnel
// made, a gathered write under way, or bytes a timeout kept, would make
// crypto/tls's Close send its close_notify behind them and wait; the
// connection is closed at once instead, without the alert, as crypto/tls
// does when its own Write is in flight (its failed alert is then no error
// of the tunnel's).
func (c *Conn) closeNC() error {
	if c.cork != nil && c.cork.interrupt() {
		c.nc.Close()
		return nil
	}
	return c.nc.Close()
}

// stopKeepalive stops the timer and waits for a running tick to finish.
func (c *Conn) stopKeepalive() {
	c.kmu.Lock()
	if c.kTimer != nil {
		c.kTimer.Stop()
		c.kTimer = nil
	}
	c.kmu.Unlock()
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
