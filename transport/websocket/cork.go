package websocket

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pool"
)

// maxTLSRecord is the most plaintext one TLS record carries. crypto/tls
// writes each record with a syscall of its own, so a frame longer than this
// costs a write per 16 KiB (and one more for the few header bytes that
// spill into a record of their own) unless the records are gathered.
const maxTLSRecord = 16 << 10

// corkConn sits under a crypto/tls Conn and lets the tunnel gather the
// records of one frame into one write: between cork and uncork, the records
// crypto/tls writes are copied into a pooled buffer (borrowed only then),
// and uncork sends them with one syscall. Uncorked, a write goes straight
// through.
//
// crypto/tls serializes its own writes, but it also writes from a reading
// goroutine (a KeyUpdate answered, say) and from Close, outside the
// tunnel's write lock; mu keeps every write, and the bytes' order, whole.
//
// It also keeps crypto/tls whole across write timeouts. crypto/tls fails
// for good once a write to the connection under it fails, timeouts
// included; the records of a tunnel's frame are written into the buffer,
// which never fails, and a flush cut by a timeout keeps what it did not
// send, for the next write to send first. So the tunnel's own rule (a frame
// cut by a timeout is finished by the next Write) holds under TLS too, and
// a write whose deadline has already passed fails before crypto/tls sees
// it, having sent nothing.
type corkConn struct {
	net.Conn

	wdl atomic.Int64 // the write deadline (Unix ns), 0 for none

	mu     sync.Mutex
	corked bool
	bp     *[]byte // borrowed while it holds bytes, or while corked
	buf    []byte  // the bytes held, a prefix of *bp
	err    error   // a write failed for good
}

func newCorkConn(nc net.Conn) *corkConn { return &corkConn{Conn: nc} }

// begin starts gathering writes, once anything held from a cut flush is
// sent; it fails, and gathers nothing, if that cannot be done or the write
// deadline has passed.
func (c *corkConn) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.flushLocked(); err != nil {
		return err
	}
	if d := c.wdl.Load(); d != 0 && time.Now().UnixNano() >= d {
		return &net.OpError{Op: "write", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
	c.corked = true
	return nil
}

// end sends what was gathered (with one write) and lets later writes
// through.
func (c *corkConn) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	return c.flushLocked()
}

// SetDeadline sets the connection's deadlines; begin checks the write one.
func (c *corkConn) SetDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.Conn.SetDeadline(t)
}

// SetWriteDeadline sets the connection's write deadline; begin checks it.
func (c *corkConn) SetWriteDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *corkConn) storeWriteDeadline(t time.Time) {
	if t.IsZero() {
		c.wdl.Store(0)
	} else {
		c.wdl.Store(t.UnixNano())
	}
}

// Write gathers p while corked and otherwise sends it (after anything held).
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Write(p)
		c.failLocked(err)
		return n, err
	}
	n := 0
	for n < len(p) {
		if c.bp == nil {
			c.bp = pool.Get()
			c.buf = (*c.bp)[:0]
		}
		if len(c.buf) == cap(c.buf) {
			if err := c.flushLocked(); err != nil {
				return n, err
			}
			continue
		}
		m := min(len(p)-n, cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[n:n+m]...)
		n += m
	}
	return n, nil
}

// flushLocked sends the bytes held, and gives the buffer back once they
// are all sent (unless corked: more are coming).
func (c *corkConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) > 0 {
		n, err := c.Conn.Write(c.buf)
		c.buf = c.buf[:copy(c.buf, c.buf[n:])]
		if err != nil {
			c.failLocked(err)
			return err
		}
	}
	if !c.corked && c.bp != nil {
		pool.Put(c.bp)
		c.bp, c.buf = nil, nil
	}
	return nil
}

// failLocked makes any write error but a timeout final, and drops the
// bytes held: nothing can follow them.
func (c *corkConn) failLocked(err error) {
	if err == nil || isTimeout(err) {
		return
	}
	c.err = err
	if c.bp != nil {
		pool.Put(c.bp)
		c.bp, c.buf = nil, nil
	}
}

// Close closes the connection first, which ends a write blocked under mu,
// and then gives the buffer back.
func (c *corkConn) Close() error {
	err := c.Conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	if c.bp != nil {
		pool.Put(c.bp)
		c.bp, c.buf = nil, nil
	}
	c.mu.Unlock()
	return err
}
