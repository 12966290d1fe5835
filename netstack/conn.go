package netstack

import (
	"bytes"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/waiter"
)

// conn is a connected TCP endpoint as a net.Conn; it behaves as *net.TCPConn
// does:
//   - Read returns io.EOF once the peer has sent a FIN and every byte before
//     it was read; CloseWrite sends a FIN (half-close) and CloseRead stops
//     reading, both keeping the other direction open.
//   - Deadlines fail Read and Write with an error matching
//     os.ErrDeadlineExceeded (a net.Error whose Timeout reports true), and
//     may be changed while a call is blocked.
//   - After Close, every method fails with an error matching net.ErrClosed,
//     and blocked calls return.
//   - Errors are *net.OpError values; a reset reads as syscall.ECONNRESET,
//     a write after CloseWrite as syscall.EPIPE.
type conn struct {
	host   *Host
	ep     tcpip.Endpoint
	wq     *waiter.Queue
	local  net.Addr
	remote net.Addr

	rd, wd deadline

	rmu    sync.Mutex        // serialises reads, guards the fields below
	rbuf   tcpip.SliceWriter // the caller's buffer during ep.Read
	rentry waiter.Entry      // registered while a Read waits
	rready <-chan struct{}   // rentry's channel

	wmu    sync.Mutex      // serialises writes, guards the fields below
	wbuf   bytes.Reader    // the caller's bytes during ep.Write
	wentry waiter.Entry    // registered while a Write waits
	wready <-chan struct{} // wentry's channel

	done      chan struct{} // closed by Close
	closeOnce sync.Once
}

var (
	_ net.Conn          = (*conn)(nil)
	_ dialer.HalfCloser = (*conn)(nil)
)

func newConn(h *Host, ep tcpip.Endpoint, wq *waiter.Queue) *conn {
	c := &conn{host: h, ep: ep, wq: wq, done: make(chan struct{})}
	// A connection reset (Cut) before it got here no longer answers
	// GetRemoteAddress; its endpoint's ID still names both ends, and a
	// net.Conn's addresses are never nil.
	if ti, ok := ep.Info().(*stack.TransportEndpointInfo); ok {
		c.local = tcpAddr(tcpip.FullAddress{Addr: ti.ID.LocalAddress, Port: ti.ID.LocalPort})
		c.remote = tcpAddr(tcpip.FullAddress{Addr: ti.ID.RemoteAddress, Port: ti.ID.RemotePort})
	}
	if a, err := ep.GetLocalAddress(); err == nil {
		c.local = tcpAddr(a)
	}
	if a, err := ep.GetRemoteAddress(); err == nil {
		c.remote = tcpAddr(a)
	}
	c.rd.init()
	c.wd.init()
	c.rentry, c.rready = waiter.NewChannelEntry(waiter.ReadableEvents | waiter.EventHUp | waiter.EventErr)
	c.wentry, c.wready = waiter.NewChannelEntry(waiter.WritableEvents | waiter.EventHUp | waiter.EventErr)
	return c
}

// Read reads data the peer sent; see the type's doc.
func (c *conn) Read(b []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.isClosed() {
		return 0, c.opError("read", net.ErrClosed)
	}
	expired := c.rd.channel()
	select {
	case <-expired:
		return 0, c.opError("read", os.ErrDeadlineExceeded)
	default:
	}
	if len(b) == 0 {
		return 0, nil
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.rentry)
		}
	}()
	for {
		c.rbuf = b
		res, terr := c.ep.Read(&c.rbuf, tcpip.ReadOptions{})
		c.rbuf = nil
		switch terr.(type) {
		case nil:
			c.ep.ModerateRecvBuf(res.Count) // lets the receive buffer grow
			return res.Count, nil
		case *tcpip.ErrWouldBlock:
		case *tcpip.ErrClosedForReceive:
			if c.isClosed() {
				return 0, c.opError("read", net.ErrClosed)
			}
			return 0, io.EOF
		default:
			if c.isClosed() {
				return 0, c.opError("read", net.ErrClosed)
			}
			return 0, c.opError("read", c.sysError("read", terr))
		}
		if !registered {
			// Register, then try again: data may have come in between.
			c.wq.EventRegister(&c.rentry)
			registered = true
			continue
		}
		select {
		case <-c.rready:
		case <-expired:
			return 0, c.opError("read", os.ErrDeadlineExceeded)
		case <-c.done:
			return 0, c.opError("read", net.ErrClosed)
		}
	}
}

// Write writes all of b unless an error (a deadline, a reset, Close) stops
// it; see the type's doc.
func (c *conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.isClosed() {
		return 0, c.opError("write", net.ErrClosed)
	}
	expired := c.wd.channel()
	select {
	case <-expired:
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	default:
	}
	registered := false
	defer func() {
		if registered {
			c.wq.EventUnregister(&c.wentry)
		}
	}()
	n := 0
	for n < len(b) {
		c.wbuf.Reset(b[n:])
		k, terr := c.ep.Write(&c.wbuf, tcpip.WriteOptions{})
		c.wbuf.Reset(nil)
		n += int(k)
		switch terr.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
		default:
			if c.isClosed() {
				return n, c.opError("write", net.ErrClosed)
			}
			return n, c.opError("write", c.sysError("write", terr))
		}
		if !registered {
			// Register, then try again: room may have come in between.
			c.wq.EventRegister(&c.wentry)
			registered = true
			continue
		}
		select {
		case <-c.wready:
		case <-expired:
			return n, c.opError("write", os.ErrDeadlineExceeded)
		case <-c.done:
			return n, c.opError("write", net.ErrClosed)
		}
	}
	return n, nil
}

// Close closes the connection: blocked calls return, unread received data
// makes the peer see a reset, otherwise the peer reads io.EOF after the data
// already written. A second Close returns an error matching net.ErrClosed.
func (c *conn) Close() error {
	first := false
	c.closeOnce.Do(func() {
		first = true
		close(c.done)
		c.rd.stop()
		c.wd.stop()
		c.ep.Close()
		c.host.forget(c.ep)
	})
	if !first {
		return c.opError("close", net.ErrClosed)
	}
	return nil
}

// CloseWrite sends a FIN: the peer reads io.EOF once it has read the data
// written so far, and may still send data that c reads.
func (c *conn) CloseWrite() error {
	return c.shutdown(tcpip.ShutdownWrite)
}

// CloseRead stops reading: Read returns io.EOF, data still arriving is
// discarded. Writing still works.
func (c *conn) CloseRead() error {
	return c.shutdown(tcpip.ShutdownRead)
}

func (c *conn) shutdown(how tcpip.ShutdownFlags) error {
	if c.isClosed() {
		return c.opError("close", net.ErrClosed)
	}
	if terr := c.ep.Shutdown(how); terr != nil {
		return c.opError("close", sysError("shutdown", terr))
	}
	return nil
}

// SetLinger sets what Close does with data not yet sent, as
// (*net.TCPConn).SetLinger does: with sec == 0 Close discards it and resets
// the connection, so that the peer sees syscall.ECONNRESET instead of an
// end of stream (a relay uses it to pass a broken stream on as broken);
// with sec < 0 (the default) or sec > 0 Close sends the data in the
// background and then a FIN, and returns at once.
func (c *conn) SetLinger(sec int) error {
	if c.isClosed() {
		return c.opError("set", net.ErrClosed)
	}
	c.ep.SocketOptions().SetLinger(tcpip.LingerOption{Enabled: sec == 0})
	return nil
}

// LocalAddr returns the local address, a *net.TCPAddr.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the peer's address, a *net.TCPAddr.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and the write deadline.
func (c *conn) SetDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opError("set", net.ErrClosed)
	}
	c.rd.set(t)
	c.wd.set(t)
	return nil
}

// SetReadDeadline sets the read deadline; zero means none.
func (c *conn) SetReadDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opError("set", net.ErrClosed)
	}
	c.rd.set(t)
	return nil
}

// SetWriteDeadline sets the write deadline; zero means none.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if c.isClosed() {
		return c.opError("set", net.ErrClosed)
	}
	c.wd.set(t)
	return nil
}

func (c *conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// sysError is sysError for c's endpoint: an abort by Host.Cut is the reset
// that Cut stands for.
func (c *conn) sysError(call string, terr tcpip.Error) error {
	if _, ok := terr.(*tcpip.ErrAborted); ok && c.host.wasCut(c.ep) {
		return os.NewSyscallError(call, syscall.ECONNRESET)
	}
	return sysError(call, terr)
}

func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// deadline is one direction's deadline: a channel closed when it passes.
// Moving the deadline while a call waits on the channel works: an unfired
// timer is stopped and the same channel rearmed.
type deadline struct {
	mu    sync.Mutex
	timer *time.Timer   // pending expiry, or nil
	ch    chan struct{} // closed once the deadline has passed
}

func (d *deadline) init() { d.ch = make(chan struct{}) }

// channel returns the channel a waiting call selects on.
func (d *deadline) channel() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ch
}

// set moves the deadline to t; zero means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		d.ch = make(chan struct{}) // the timer has closed (or is closing) the old one
	} else {
		select {
		case <-d.ch:
			d.ch = make(chan struct{}) // passed already
		default:
		}
	}
	d.timer = nil
	if t.IsZero() {
		return
	}
	wait := time.Until(t)
	if wait <= 0 {
		close(d.ch)
		return
	}
	ch := d.ch
	d.timer = time.AfterFunc(wait, func() { close(ch) })
}

// stop drops a pending timer, on Close.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}
