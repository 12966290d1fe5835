package websocket

import (
	"context"
	"errors"
	"net"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// The optimistic extension (PROTOCOL.md §8): with Dialer.Optimistic, a
// client that knows the server takes it returns the tunnel as soon as its
// first message is out, and the application's first bytes follow that
// message without waiting for the reply. A goroutine of the tunnel's own
// (the reply's) reads the upgrade response and the reply meanwhile; until
// it has, writes go out bounded (optimisticLimit) and everything else
// waits for it.

// optimisticLimit is how many bytes of data a client sends before the
// server's reply; a Write past it waits for the reply.
const optimisticLimit = 64 << 10

// optimisticReplyWait bounds the wait for the reply when the dial's ctx
// has no deadline.
const optimisticReplyWait = 30 * time.Second

// pendingReply is an optimistic tunnel's reply still on its way.
type pendingReply struct {
	done chan struct{}         // closed once the reply is in and acted on (on an error, the connection closed)
	err  atomic.Pointer[error] // the dial's error, set before the connection is closed
	sent atomic.Int64          // data bytes sent before the reply
	// cause is the dial's error as finish returned it (unwrapped), for
	// the dial itself; set before done is closed.
	cause error
	wrap  func(error) error // makes the dial's error what DialSprite would have returned
}

func newPendingReply(wrap func(error) error) *pendingReply {
	return &pendingReply{done: make(chan struct{}), wrap: wrap}
}

// settled reports whether the reply has been acted on.
func (h *pendingReply) settled() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// failed is the dial's error, once the reply (or its absence) has said so.
func (h *pendingReply) failed() error {
	if p := h.err.Load(); p != nil {
		return *p
	}
	return nil
}

// fail records the dial's error; the first one stays.
func (h *pendingReply) fail(err error) {
	err = h.wrap(err)
	h.err.CompareAndSwap(nil, &err)
}

// reserve takes n bytes of the bound, all or none.
func (h *pendingReply) reserve(n int) bool {
	for {
		s := h.sent.Load()
		if s+int64(n) > optimisticLimit {
			return false
		}
		if h.sent.CompareAndSwap(s, s+int64(n)) {
			return true
		}
	}
}

// await waits for an optimistic tunnel's reply and returns the dial's error
// if it failed; it returns nil at once for any other tunnel.
func (c *Conn) await() error {
	h := c.hs
	if h == nil {
		return nil
	}
	<-h.done
	return h.failed()
}

// pending reports whether c is an optimistic tunnel whose reply is not in.
func (c *Conn) pending() bool { return c.hs != nil && !c.hs.settled() }

// failPending records err as the dial's error of an optimistic tunnel,
// before the connection is closed, so that the application's next Read or
// Write returns it.
func (c *Conn) failPending(err error) error {
	if c.hs != nil {
		c.hs.fail(err)
	}
	return err
}

// writeEarly is Write before the reply: up to optimisticLimit bytes go out
// at once, the rest once the reply is in.
func (c *Conn) writeEarly(h *pendingReply, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if err := h.failed(); err != nil {
			return n, err
		}
		if h.settled() {
			m, err := c.Write(p[n:])
			return n + m, err
		}
		q := p[n:min(len(p), n+int(optimisticLimit-h.sent.Load()))]
		if len(q) == 0 || !h.reserve(len(q)) {
			<-h.done
			continue
		}
		c.wmu.Lock()
		m, err := c.writeLocked(q)
		c.wmu.Unlock()
		c.flushControl()
		n += m
		if err != nil {
			if e := h.failed(); e != nil {
				return n, e
			}
			return n, c.writeError(err)
		}
	}
	return n, nil
}

// admitEarly says whether a chunk of n bytes (CopyFrom's) may go out: at
// once before the reply while the bound allows it, or once the reply is
// in and said connected.
func (c *Conn) admitEarly(n int) error {
	h := c.hs
	if h == nil {
		return nil
	}
	if !h.settled() && !h.reserve(n) {
		<-h.done
	}
	return h.failed()
}

// replyDeadline is how long an optimistic tunnel waits for its reply.
func replyDeadline(ctx context.Context) time.Time {
	if dl, ok := ctx.Deadline(); ok {
		return dl
	}
	return time.Now().Add(optimisticReplyWait)
}

// startPending runs finish, which reads the reply of c's first message,
// on the tunnel's own goroutine; it ends once the reply is acted on, and
// Close, CloseNow and every Read wait for it. On an error finish has
// recorded it (failPending) and closed the connection.
func (c *Conn) startPending(finish func() error) {
	h := c.hs
	go func() {
		defer close(h.done)
		if err := finish(); err != nil {
			h.cause = err
			c.failPending(err)
			return
		}
		c.nc.SetReadDeadline(time.Time{})
		c.startKeepalive()
	}()
}

// abortPending cuts an optimistic tunnel's wait for its reply short (for
// CloseNow) and waits for its goroutine.
func (c *Conn) abortPending() {
	if !c.pending() {
		return
	}
	c.failPending(net.ErrClosed)
	c.nc.SetReadDeadline(aLongTimeAgo)
	<-c.hs.done
}

// dialReusedEarly asks for host:port on an idle link whose server
// announced optimistic, and returns the tunnel once the request is out.
// retry says that the request could not be written: the caller should try
// another connection.
func (d *Dialer) dialReusedEarly(ctx context.Context, l *link, sprite, host string, port int, wrap func(error) error) (c *Conn, retry bool, err error) {
	nc := l.nc
	c = newConn(nc, true, d.cfg, l.pre)
	c.announced = true
	c.remote = targetAddr("", host, port)
	first := d.firstMessage(host, port, true)
	dl, _ := ctx.Deadline()
	nc.SetWriteDeadline(dl) // zero without one
	if err := c.writeMessage(first); err != nil {
		c.closeNow()
		if isTimeout(err) || ctx.Err() != nil {
			return nil, false, err
		}
		return nil, true, err
	}
	c.hs = newPendingReply(wrap)
	nc.SetWriteDeadline(time.Time{})
	nc.SetReadDeadline(replyDeadline(ctx))
	c.startPending(func() error {
		kept, _, err := d.request(c, first, true, sprite, host, port)
		if kept != nil {
			kept.nc.Close() // a server that kept it against §8
		}
		return err
	})
	return c, false, nil
}

// handshakeEarly upgrades nc to a WebSocket at u with the first message
// (asking for host:port, optimistic) in the same write as the upgrade
// request, and returns the tunnel once that write is done: the tunnel's
// goroutine reads the upgrade response and the reply. stop ends ctx's hold
// on nc's deadline, as in dial.
func (d *Dialer) handshakeEarly(ctx context.Context, nc net.Conn, stop func() bool, u *url.URL, sprite, host string, port int, wrap func(error) error) (*Conn, error) {
	first := d.firstMessage(host, port, true)
	ec := &earlyConn{
		earlyWriter: earlyWriter{Conn: nc, frame: maskedTextFrame(first)},
		written:     make(chan error, 1),
		start:       make(chan struct{}),
	}
	c := newConn(nc, true, d.cfg, nil)
	c.announced = true
	c.hs = newPendingReply(wrap)
	c.remote = targetAddr("", host, port)
	c.startPending(func() error {
		br, announced, err := d.upgrade(nc, ec, u)
		select {
		case ec.written <- errNotWritten: // (the request never went out)
		default:
		}
		if err != nil {
			c.failPending(err)
			c.closeNow()
			return err
		}
		if br != nil {
			if n := br.Buffered(); n > 0 {
				pre, _ := br.Peek(n)
				c.rmu.Lock()
				c.rd.pre = append([]byte(nil), pre...)
				c.rmu.Unlock()
			}
			ws.PutReader(br)
		}
		c.announced = announced
		kept, _, err := d.request(c, first, true, sprite, host, port)
		if kept != nil {
			kept.nc.Close()
		}
		return err
	})
	werr := <-ec.written
	if !stop() || ctx.Err() != nil || werr != nil {
		// ctx ended, or the request could not be sent.
		close(ec.start)
		c.CloseNow()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if c.hs.cause != nil {
			return nil, c.hs.cause
		}
		return nil, werr
	}
	nc.SetWriteDeadline(time.Time{})
	nc.SetReadDeadline(replyDeadline(ctx))
	close(ec.start)
	return c, nil
}

// errNotWritten: the upgrade failed before its request was written.
var errNotWritten = errors.New("websocket: upgrade request not sent")

// earlyConn is the connection under an optimistic upgrade: its first
// Write (the upgrade request, with the first message) says when it is
// done, and its Reads wait until the dial lets them start, once it has
// set the reply's deadline.
type earlyConn struct {
	earlyWriter
	written chan error
	start   chan struct{}
	sent    bool
}

func (e *earlyConn) Write(p []byte) (int, error) {
	n, err := e.earlyWriter.Write(p)
	if !e.sent {
		e.sent = true
		e.written <- err
	}
	return n, err
}

func (e *earlyConn) Read(p []byte) (int, error) {
	<-e.start
	return e.Conn.Read(p)
}
