package websocket

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pool"
)

const (
	// maxTLSRecord is the most plaintext one TLS record carries.
	maxTLSRecord = 16 << 10
	// corkChunk is the most one gathered write takes: a whole frame of the
	// largest size the tunnel sends.
	corkChunk = pool.Headroom + pool.Size
	// corkSize holds corkChunk's records: each adds a header, a tag and
	// (TLS 1.2 CBC suites) a MAC and padding, well under 80 bytes.
	corkSize = corkChunk + (corkChunk/maxTLSRecord+2)*80
)

// corkBuffers hold gathered records, borrowed only while a write is under
// way (or a timeout cut one).
var corkBuffers = sync.Pool{New: func() any {
	b := make([]byte, corkSize)
	return &b
}}

// corkConn sits under a crypto/tls Conn that the tunnel made, for three
// reasons (the third, batched reads, is described at Read).
//
// Speed: crypto/tls writes each 16 KiB record with a syscall of its own.
// Between begin and end, the records crypto/tls writes are gathered in a
// pooled buffer, and end sends them with one write.
//
// Deadlines: crypto/tls fails for good once a write to the connection under
// it fails, timeouts included, where a net.Conn may be written again after
// a timeout. So no write fails here with a timeout. A gathered write always
// lands in the buffer. When a flush is cut by the write deadline, end
// returns the timeout to the tunnel and keeps the rest, for the next write
// to send first. A write that is not gathered keeps what the deadline cut,
// too: crypto/tls's own writes, outside the tunnel's, such as a KeyUpdate
// answered by a Read or a close_notify. And begin fails, having sent
// nothing, when the write deadline has already passed. The tunnel's rule
// (a frame cut by a timeout is finished by the next Write) thus holds under
// TLS as over TCP.
//
// crypto/tls serializes its own writes (its out lock), and gathers are
// serialized by gmu; mu keeps every write, and the bytes' order, whole.
type corkConn struct {
	net.Conn

	wdl  atomic.Int64 // the write deadline (Unix ns), 0 for none
	busy atomic.Bool  // a gathered write is under way
	held atomic.Bool  // bytes are held (len(buf) > 0)
	stop atomic.Bool  // interrupt has begun: no gather may start

	gmu sync.Mutex // held from begin to end

	mu     sync.Mutex
	corked bool
	bp     *[]byte // from corkBuffers, while it holds bytes or is corked
	buf    []byte  // the bytes held: a prefix of *bp, or of a larger slice
	err    error   // a write failed for good, or Close

	closing atomic.Bool

	// Reads: crypto/tls reads from the socket as much as its own buffer
	// has room for, a record or two. While a stream is being copied
	// (CopyTo), a read takes all the socket holds into a pooled buffer
	// instead, and crypto/tls takes the records that follow from it,
	// which saves the syscalls and the wakeups of the slowest stage of a
	// wss tunnel. Only crypto/tls reads, under its own lock.
	batchable bool         // the socket is one that pool.Read waits on with no buffer held
	batching  atomic.Int32 // CopyTo calls moving the stream
	rmu       sync.Mutex   // guards rbp and rbuf (crypto/tls's reads, unbatch)
	rbp       *[]byte      // pooled, while it holds bytes not yet read
	rbuf      []byte       // the bytes not yet read
	// nowait, set while CopyTo gathers the records already received,
	// makes a read that would go to the socket fail at once with
	// errNoWait instead: what the last batched read left is all there is
	// to gather.
	nowait atomic.Bool
}

// errNoWait is what Read returns under nowait when it has nothing left.
// crypto/tls takes it as it takes a timeout (Temporary): it keeps a
// partial record for the next Read, and the connection stays usable.
var errNoWait net.Error = noWaitError{}

type noWaitError struct{}

func (noWaitError) Error() string   { return "websocket: no TLS record received yet" }
func (noWaitError) Timeout() bool   { return true }
func (noWaitError) Temporary() bool { return true }

// batchBelow is the read size under which reads are batched.
const batchBelow = 64 << 10

// Read hands out what a batched read left first. Then, while batching, it
// reads all the socket holds: pool.Read borrows a buffer only once there
// is data, so a tunnel waiting for data holds none, and one that has read
// everything gives it back.
func (c *corkConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if len(c.rbuf) > 0 {
		n := copy(p, c.rbuf)
		c.rbuf = c.rbuf[n:]
		if len(c.rbuf) == 0 {
			c.dropBatchLocked()
		}
		return n, nil
	}
	if c.nowait.Load() {
		return 0, errNoWait
	}
	if !c.batchable || len(p) == 0 || len(p) >= batchBelow || c.batching.Load() <= 0 {
		return c.Conn.Read(p)
	}
	bp, n, err := pool.Read(c.Conn)
	if n == 0 {
		return 0, err
	}
	got := (*bp)[pool.Headroom : pool.Headroom+n]
	m := copy(p, got)
	if m < n {
		c.rbp, c.rbuf = bp, got[m:]
	} else {
		pool.Put(bp)
	}
	return m, err
}

// dropBatchLocked gives the batch buffer back, if it is a pooled one.
func (c *corkConn) dropBatchLocked() {
	if c.rbp != nil {
		pool.Put(c.rbp)
	}
	c.rbp, c.rbuf = nil, nil
}

// unbatch, when CopyTo stops, moves what a batched read left over (frames
// after the peer's end of stream, say) out of the pooled buffer, so that a
// tunnel that only writes from now on does not keep it.
func (c *corkConn) unbatch() {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rbp == nil {
		return
	}
	left := append([]byte(nil), c.rbuf...)
	c.dropBatchLocked()
	if len(left) > 0 {
		c.rbuf = left
	}
}

func newCorkConn(nc net.Conn) *corkConn {
	c := &corkConn{Conn: nc}
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.batchable = true
	}
	return c
}

// begin starts gathering writes, once anything held from a cut write is
// sent. It fails, gathering nothing, if that cannot be done or the write
// deadline has passed. A successful begin must be followed by end.
func (c *corkConn) begin() error {
	c.gmu.Lock()
	c.mu.Lock()
	err := c.flushLocked()
	if d := c.wdl.Load(); err == nil && d != 0 && time.Now().UnixNano() >= d {
		err = &net.OpError{Op: "write", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.ErrDeadlineExceeded}
	}
	if err != nil {
		c.mu.Unlock()
		c.gmu.Unlock()
		return err
	}
	c.corked = true
	c.busy.Store(true)
	if c.stop.Load() {
		// interrupt has begun: it may not have seen busy.
		c.corked = false
		c.busy.Store(false)
		c.mu.Unlock()
		c.gmu.Unlock()
		return net.ErrClosed
	}
	c.mu.Unlock()
	return nil
}

// flushHeld sends what a write deadline kept, if anything, as a gather
// with nothing in it.
func (c *corkConn) flushHeld() error {
	if !c.held.Load() {
		return nil
	}
	if err := c.begin(); err != nil {
		return err
	}
	return c.end()
}

// end sends what was gathered, with one write, and lets later writes
// through. On a timeout the rest is kept for the next write.
func (c *corkConn) end() error {
	c.mu.Lock()
	c.corked = false
	err := c.flushLocked()
	c.busy.Store(false)
	c.mu.Unlock()
	c.gmu.Unlock()
	return err
}

// Write gathers p while corked, and otherwise sends it after anything
// held. It never returns a timeout: what a deadline keeps from going out is
// held for the next write.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.corked {
		c.holdLocked(p)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		if !isTimeout(err) {
			return 0, err
		}
		c.holdLocked(p)
		return len(p), nil
	}
	n, err := c.Conn.Write(p)
	if err != nil {
		if !isTimeout(err) {
			c.failLocked(err)
			return n, err
		}
		c.holdLocked(p[n:])
	}
	return len(p), nil
}

// holdLocked appends p to the bytes held.
func (c *corkConn) holdLocked(p []byte) {
	if len(p) == 0 {
		return
	}
	if c.buf == nil {
		c.bp = corkBuffers.Get().(*[]byte)
		c.buf = (*c.bp)[:0]
	}
	if len(c.buf)+len(p) > cap(c.buf) {
		// More than a frame's records (a KeyUpdate gathered with one, or
		// writes held behind a cut one): a buffer of its own.
		buf := append(make([]byte, 0, len(c.buf)+len(p)+corkSize/4), c.buf...)
		c.releaseLocked()
		c.buf = buf
	}
	c.buf = append(c.buf, p...)
	c.held.Store(true)
}

// flushLocked sends the bytes held and, once they are all sent, gives the
// buffer back.
func (c *corkConn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	n, err := c.Conn.Write(c.buf)
	if err != nil {
		if !isTimeout(err) {
			c.failLocked(err)
			return err
		}
		c.buf = c.buf[:copy(c.buf, c.buf[n:])]
		return err
	}
	c.releaseLocked()
	return nil
}

// releaseLocked drops the bytes held and gives a pooled buffer back.
func (c *corkConn) releaseLocked() {
	if c.bp != nil {
		corkBuffers.Put(c.bp)
	}
	c.bp, c.buf = nil, nil
	c.held.Store(false)
}

// failLocked makes err final: nothing can follow the bytes held.
func (c *corkConn) failLocked(err error) {
	c.err = err
	c.releaseLocked()
}

// interrupt closes the connection at once, and reports so, when a gathered
// write is under way or bytes are held. crypto/tls's Close would otherwise
// send its close_notify behind them, waiting up to its 5 s alert deadline;
// with its own Write in flight, crypto/tls closes at once, without the
// alert, and this does the same.
func (c *corkConn) interrupt() bool {
	// stop before the checks, busy before begin's check of stop: one of
	// the two sees the other.
	c.stop.Store(true)
	if !c.busy.Load() && !c.held.Load() {
		return false
	}
	c.Close()
	return true
}

// Close closes the connection first, which ends a write blocked under mu,
// and then drops what is held. Later calls return nil.
func (c *corkConn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	err := c.Conn.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.releaseLocked()
	c.mu.Unlock()
	return err
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
