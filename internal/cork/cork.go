// Package cork is the net.Conn that spriteproxy puts under a crypto/tls
// Conn it makes: it gathers the TLS records of one tunnel write into one
// socket write, keeps a write cut by a deadline for the next write instead
// of failing crypto/tls for good, and batches reads while a stream is
// copied. See Conn.
package cork

import (
	"errors"
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
	// Chunk is the most one gathered write (Begin to End) should take: a
	// whole frame of the largest size a tunnel sends. A larger gather still
	// goes out whole, in a buffer of its own.
	Chunk = pool.Headroom + pool.Size
	// corkSize holds Chunk's records: each adds a header, a tag and
	// (TLS 1.2 CBC suites) a MAC and padding, well under 80 bytes.
	corkSize = Chunk + (Chunk/maxTLSRecord+2)*80
)

// corkBuffers hold gathered records, borrowed only while a write is under
// way (or a timeout cut one).
var corkBuffers = sync.Pool{New: func() any {
	b := make([]byte, corkSize)
	return &b
}}

// Conn sits under a crypto/tls Conn that a tunnel made, for three reasons
// (the third, batched reads, is described at Read).
//
// Speed: crypto/tls writes each 16 KiB record with a syscall of its own.
// Between Begin and End, the records crypto/tls writes are gathered in a
// pooled buffer, and End sends them with one write.
//
// Deadlines: crypto/tls fails for good once a write to the connection under
// it fails, timeouts included, where a net.Conn may be written again after
// a timeout. So no write fails here with a timeout. A gathered write always
// lands in the buffer. When a flush is cut by the write deadline, End
// returns the timeout to the tunnel and keeps the rest, for the next write
// to send first. A write that is not gathered keeps what the deadline cut,
// too: crypto/tls's own writes, outside the tunnel's, such as a KeyUpdate
// answered by a Read or a close_notify. And Begin fails, having sent
// nothing, when the write deadline has already passed. The tunnel's rule
// (a frame cut by a timeout is finished by the next Write) thus holds under
// TLS as over TCP.
//
// crypto/tls serializes its own writes (its out lock), and gathers are
// serialized by gmu; mu keeps every write, and the bytes' order, whole.
type Conn struct {
	nc net.Conn

	wdl  atomic.Int64 // the write deadline (Unix ns), 0 for none
	busy atomic.Bool  // a gathered write is under way
	held atomic.Bool  // bytes are held (len(buf) > 0)
	stop atomic.Bool  // Interrupt has begun: no gather may start

	gmu sync.Mutex // held from Begin to End

	mu     sync.Mutex
	corked bool
	bp     *[]byte // from corkBuffers, while it holds bytes or is corked
	buf    []byte  // the bytes held: a prefix of *bp, or of a larger slice
	err    error   // a write failed for good, or Close

	closing atomic.Bool

	// Reads: crypto/tls reads from the socket as much as its own buffer
	// has room for, a record or two. While a stream is being copied
	// (StartBatch), a read takes all the socket holds into a pooled buffer
	// instead, and crypto/tls takes the records that follow from it,
	// which saves the syscalls and the wakeups of the slowest stage of a
	// wss tunnel. Only crypto/tls reads, under its own lock.
	batchable bool         // the socket is one that pool.Read waits on with no buffer held
	batching  atomic.Int32 // StartBatch calls not yet stopped
	rmu       sync.Mutex   // guards rbp and rbuf (crypto/tls's reads, unbatch)
	rbp       *[]byte      // pooled, while it holds bytes not yet read
	rbuf      []byte       // the bytes not yet read
	// nowait, set while the tunnel gathers the records already received,
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

func (noWaitError) Error() string   { return "cork: no TLS record received yet" }
func (noWaitError) Timeout() bool   { return true }
func (noWaitError) Temporary() bool { return true }

// batchBelow is the read size under which reads are batched.
const batchBelow = 64 << 10

// Read hands out what a batched read left first. Then, while batching, it
// reads all the socket holds: pool.Read borrows a buffer only once there
// is data, so a tunnel waiting for data holds none, and one that has read
// everything gives it back.
func (c *Conn) Read(p []byte) (int, error) {
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
		return c.nc.Read(p)
	}
	bp, n, err := pool.Read(c.nc)
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
func (c *Conn) dropBatchLocked() {
	if c.rbp != nil {
		pool.Put(c.rbp)
	}
	c.rbp, c.rbuf = nil, nil
}

// unbatch, when the last batch stops, moves what a batched read left over (frames
// after the peer's end of stream, say) out of the pooled buffer, so that a
// tunnel that only writes from now on does not keep it.
func (c *Conn) unbatch() {
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

// New puts a Conn on nc, which it then owns: nc is read, written and
// closed through it.
func New(nc net.Conn) *Conn {
	c := &Conn{nc: nc}
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
		c.batchable = true
	}
	return c
}

// Begin starts gathering writes, once anything held from a cut write is
// sent. It fails, gathering nothing, if that cannot be done or the write
// deadline has passed. A successful Begin must be followed by End; Begin
// waits for the End of a gather under way.
func (c *Conn) Begin() error {
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
		// Interrupt has begun: it may not have seen busy.
		c.corked = false
		c.busy.Store(false)
		c.mu.Unlock()
		c.gmu.Unlock()
		return net.ErrClosed
	}
	c.mu.Unlock()
	return nil
}

// FlushHeld sends what a write deadline kept, if anything, as a gather
// with nothing in it. On a timeout the rest is still held.
func (c *Conn) FlushHeld() error {
	if !c.held.Load() {
		return nil
	}
	if err := c.Begin(); err != nil {
		return err
	}
	return c.End()
}

// Held reports whether bytes are held: counted as written, not yet sent,
// because a write deadline cut their write.
func (c *Conn) Held() bool { return c.held.Load() }

// Busy reports whether a gather is under way (between Begin and End).
func (c *Conn) Busy() bool { return c.busy.Load() }

// End sends what was gathered, with one write, and lets later writes
// through. On a timeout it returns the timeout and keeps the rest for the
// next write.
func (c *Conn) End() error {
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
func (c *Conn) Write(p []byte) (int, error) {
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
	n, err := c.nc.Write(p)
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
func (c *Conn) holdLocked(p []byte) {
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
func (c *Conn) flushLocked() error {
	if c.err != nil {
		return c.err
	}
	if len(c.buf) == 0 {
		return nil
	}
	n, err := c.nc.Write(c.buf)
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
func (c *Conn) releaseLocked() {
	if c.bp != nil {
		corkBuffers.Put(c.bp)
	}
	c.bp, c.buf = nil, nil
	c.held.Store(false)
}

// failLocked makes err final: nothing can follow the bytes held.
func (c *Conn) failLocked(err error) {
	c.err = err
	c.releaseLocked()
}

// Interrupt closes the connection at once, and reports so, when a gathered
// write is under way or bytes are held. crypto/tls's Close would otherwise
// send its close_notify behind them, waiting up to its 5 s alert deadline;
// with its own Write in flight, crypto/tls closes at once, without the
// alert, and this does the same. Once Interrupt has been called, Begin
// fails with net.ErrClosed; writes that are not gathered still go out.
func (c *Conn) Interrupt() bool {
	// stop before the checks, busy before Begin's check of stop: one of
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
func (c *Conn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return nil
	}
	err := c.nc.Close()
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.releaseLocked()
	c.mu.Unlock()
	return err
}

// SetDeadline sets the connection's deadlines; Begin checks the write one.
func (c *Conn) SetDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.nc.SetDeadline(t)
}

// SetReadDeadline sets the connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline sets the connection's write deadline; Begin checks it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	c.storeWriteDeadline(t)
	return c.nc.SetWriteDeadline(t)
}

// LocalAddr returns the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr returns the connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// NetConn returns the connection under c. Writing to it or closing it
// directly bypasses what c holds.
func (c *Conn) NetConn() net.Conn { return c.nc }

func (c *Conn) storeWriteDeadline(t time.Time) {
	if t.IsZero() {
		c.wdl.Store(0)
	} else {
		c.wdl.Store(t.UnixNano())
	}
}

// StartBatch makes reads batched (see Read) until the matching StopBatch:
// a tunnel calls it while it copies a stream. Calls nest.
func (c *Conn) StartBatch() { c.batching.Add(1) }

// StopBatch ends what StartBatch began. When no batch is left, the bytes a
// batched read took beyond what was read move out of the pooled buffer.
func (c *Conn) StopBatch() {
	if c.batching.Add(-1) <= 0 {
		c.unbatch()
	}
}

// Batchable reports whether reads can be batched: the connection is a
// socket that a read waits on with no buffer held (TCP, Unix). Elsewhere
// StartBatch changes nothing.
func (c *Conn) Batchable() bool { return c.batchable }

// SetNoWait, while on, makes a read that would go to the connection fail
// at once with a temporary timeout (which crypto/tls takes as it takes a
// timeout: it keeps a partial record for the next Read, and stays usable).
// What a batched read left is still handed out. A tunnel sets it while it
// takes the TLS records already received without waiting for more.
func (c *Conn) SetNoWait(on bool) { c.nowait.Store(on) }

// isTimeout reports whether err is a timeout.
func isTimeout(err error) bool {
	if err == nil {
		return false // without allocating ne (errors.As makes it escape)
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
