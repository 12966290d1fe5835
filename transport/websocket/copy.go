package websocket

import (
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pool"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// ErrClosedByPeer is what CopyTo returns when the stream ended because the
// peer closed the tunnel both ways (a close frame with half_close
// negotiated) rather than just ending its writing: the caller can stop
// copying the other way too. WriteTo reports it as a normal end (nil).
var ErrClosedByPeer = pump.ErrClosedByPeer

var (
	_ pump.CopierFrom = (*Conn)(nil)
	_ pump.CopierTo   = (*Conn)(nil)
	_ io.ReaderFrom   = (*Conn)(nil)
	_ io.WriterTo     = (*Conn)(nil)
)

// ReadFrom sends everything r yields until its end of stream, as with
// CopyFrom; it lets io.Copy take the fast path.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.CopyFrom(r, nil) }

// WriteTo writes the stream to w until its end (nil error at io.EOF, and
// when the peer closed the tunnel), as with CopyTo; it lets io.Copy take the
// fast path.
func (c *Conn) WriteTo(w io.Writer) (int64, error) {
	n, err := c.CopyTo(w, nil)
	if err == pump.ErrClosedByPeer {
		err = nil
	}
	return n, err
}

// CopyFrom sends what r yields until r's end of stream, reading each chunk
// straight into a pooled frame buffer (no copy between read and send; the
// buffer is borrowed only once data is ready), and adds each chunk to count
// (which may be nil). It does not end the write side: see CloseWrite.
func (c *Conn) CopyFrom(r io.Reader, count *atomic.Int64) (int64, error) {
	// (An optimistic tunnel whose reply is not in is framed: it offered
	// no raw_stream. Its chunks wait for the reply past the bound.)
	if !c.pending() {
		if err := c.await(); err != nil {
			return 0, err
		}
		if c.raw {
			return c.rawCopyFrom(r, count)
		}
	}
	var total int64
	for {
		bp, n, rerr := pool.Read(r)
		if n > 0 {
			if err := c.admitEarly(n); err != nil {
				pool.Put(bp)
				return total, err
			}
			c.wmu.Lock()
			err := c.writableLocked()
			if err == nil {
				_, err = c.sendBufLocked(opBinary, bp, n)
				c.lastData.Store(c.lastWrite.Load())
			}
			c.wmu.Unlock()
			c.flushControl()
			if err != nil {
				pool.Put(bp)
				if c.hs != nil && c.hs.failed() != nil {
					return total, c.hs.failed()
				}
				return total, c.writeError(err)
			}
			total += int64(n)
			if count != nil {
				count.Add(int64(n))
			}
		}
		if bp != nil {
			pool.Put(bp)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// CopyTo writes the stream to w until its end (nil error) or an error, and
// returns ErrClosedByPeer when the end was the peer closing the tunnel both
// ways (a close frame, with half_close negotiated), and
// adds each chunk to count (which may be nil). It reads as much as the
// socket holds into one pooled buffer (borrowed once data is ready: an idle
// tunnel holds none), unmasks the payloads in place, and hands them to w
// with one writev however many frames the read held.
func (c *Conn) CopyTo(w io.Writer, count *atomic.Int64) (int64, error) {
	if err := c.await(); err != nil {
		return 0, err
	}
	if c.raw {
		return c.rawCopyTo(w, count)
	}
	c.reading.Add(1)
	defer c.reading.Add(-1)
	if c.cork != nil {
		c.cork.StartBatch()
		defer c.cork.StopBatch()
	}
	var total int64
	var segs [][]byte
	defer c.waitFrom.Store(0) // a wait that copyChunkLocked left on
	for {
		c.rmu.Lock()
		n, err := c.copyChunkLocked(w, &segs)
		gone := c.state().has(peerBoth)
		c.unlockRead()
		total += n
		if count != nil && n > 0 {
			count.Add(n)
		}
		if err == io.EOF {
			if gone {
				// The peer closed the whole tunnel: whatever the other
				// direction still carries has no one to read it.
				return total, pump.ErrClosedByPeer
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// segmentsWriter is a writer that takes the payloads of one read at once
// (a ResumableConn's, which counts them and then writes them with one
// writev to a socket).
type segmentsWriter interface {
	writeSegments(b *net.Buffers) (int64, error)
}

// copyChunkLocked moves what one read brings (at least one payload byte,
// unless the stream ends) from the tunnel to w.
func (c *Conn) copyChunkLocked(w io.Writer, segsp *[][]byte) (int64, error) {
	r := &c.rd
	if r.err != nil {
		return 0, c.readError(r.err)
	}
	if c.state().in() == dirFin {
		return 0, io.EOF
	}
	// Waiting for data until the payloads go to w: time w takes is no
	// silence of the peer's (the linger). A wait that the previous call
	// left for control frames only goes on from where it began (their
	// peer is silent all the same).
	if c.waitFrom.Load() == 0 {
		c.waitFrom.Store(time.Now().UnixNano())
	}
	waiting := false
	defer func() {
		if !waiting {
			c.waitFrom.Store(0)
		}
	}()
	var bp *[]byte
	if r.pos == r.end && len(r.pre) == 0 {
		var n int
		var err error
		if c.gathersTLS() {
			// crypto/tls reads only into the caller's buffer: wait for
			// data in the Conn's own small one, so that an idle wss tunnel
			// holds no pooled buffer, then borrow one; gatherTLS takes the
			// rest of what TLS holds.
			n, err = c.nc.Read(r.buf[:])
			if n > 0 {
				bp = pool.Get()
				copy((*bp)[pool.Headroom:], r.buf[:n])
			}
		} else {
			bp, n, err = pool.Read(c.nc)
		}
		if n == 0 {
			return 0, c.readError(c.ioError(err))
		}
		r.win, r.pos, r.end = (*bp)[pool.Headroom:], 0, n
		c.gatherTLS()
	} else {
		bp = pool.Get()
		win := (*bp)[pool.Headroom:]
		r.end = copy(win, r.win[r.pos:r.end])
		r.win, r.pos = win, 0
	}
	c.pooledRead.Store(true)
	defer c.restoreWindow(bp)

	segs := (*segsp)[:0]
	defer func() { *segsp = segs[:0] }()
	for r.err == nil && c.state().in() != dirFin {
		var more bool
		var err error
		switch r.mode {
		case modeData:
			if avail := r.end - r.pos; avail > 0 {
				seg := r.win[r.pos : r.pos+int(min(int64(avail), r.left))]
				r.pos += len(seg)
				c.payloadRead(seg)
				segs = append(segs, seg)
			} else {
				more = true
			}
		case modeHeader:
			var ok bool
			ok, err = c.headerLocked()
			more = !ok
		case modeCollect:
			var done bool
			done, err = c.collectAvailLocked()
			more = !done
		}
		if err != nil && len(segs) == 0 {
			return 0, c.readError(err)
		}
		if err != nil || more && len(segs) > 0 {
			break
		}
		if more && r.pos == r.end && len(r.pre) == 0 {
			// The read held control frames only (a resume ack, a ping),
			// or ended on a frame's header: nothing of it is left to
			// parse, and the peer may now be silent for long. The buffer
			// goes back, and the next call waits for data holding none
			// (an idle tunnel whose peer's last word was an ack kept a
			// pooled buffer here for as long as it stayed idle). The wait
			// for data goes on, in CopyTo's next call.
			waiting = true
			return 0, nil
		}
		if more {
			// Part of a header or of a control frame: read on, in the
			// same buffer (the rest is on its way).
			if err := c.fill(); err != nil {
				return 0, c.readError(err)
			}
		}
	}
	c.waitFrom.Store(0)
	var n int64
	if len(segs) > 0 {
		// The Buffers live in the Conn: a local one would escape to the
		// heap through WriteTo's pointer receiver, once per read.
		c.rbufs = segs
		var err error
		if sw, ok := w.(segmentsWriter); ok {
			n, err = sw.writeSegments(&c.rbufs)
		} else {
			n, err = c.rbufs.WriteTo(w)
		}
		c.rbufs = nil
		if err != nil {
			return n, err
		}
	}
	if c.state().in() == dirFin {
		return n, io.EOF
	}
	return n, nil
}

// gatherTLS reads on while TLS holds whole records already received: a
// crypto/tls Read returns one record (16 KiB at most), and a writev per
// record would cost a syscall each. Records already buffered decrypt
// without I/O; a Read that would have to go to the network fails at once
// (crypto/tls keeps the partial record for the next Read). On a batching
// cork.Conn, which holds all the socket had at the last read, that is the
// cork's nowait; elsewhere a deadline in the past, which costs the error's
// allocations. Only when the caller has set no read deadline of its own,
// nor Close its drain's.
func (c *Conn) gatherTLS() {
	if !c.gathersTLS() {
		return
	}
	if k := c.cork; k != nil && k.Batchable() {
		k.SetNoWait(true)
		defer k.SetNoWait(false)
	} else {
		c.nc.SetReadDeadline(aLongTimeAgo)
		defer c.restoreReadDeadline()
	}
	r := &c.rd
	for len(r.win)-r.end > 17<<10 {
		n, err := c.nc.Read(r.win[r.end:])
		r.end += n
		if err != nil || n == 0 {
			break
		}
	}
}

// restoreReadDeadline ends gatherTLS's deadline in the past: the read
// deadline is none again, unless Close's drain set its own meanwhile
// (closeRead), which is put back; a Close that sets its own after this
// checks wins either way, as it stores closeRead before it sets it.
func (c *Conn) restoreReadDeadline() {
	c.nc.SetReadDeadline(time.Time{})
	if t := c.closeRead.Load(); t != 0 {
		c.nc.SetReadDeadline(time.Unix(0, t))
	}
}

// gathersTLS says whether CopyTo reads TLS records already received without
// waiting (gatherTLS): under TLS, unless the caller set a read deadline.
func (c *Conn) gathersTLS() bool {
	return c.tlsConn != nil && !c.readDeadline.Load() && c.closeRead.Load() == 0
}

// restoreWindow puts the reader back on its own small buffer, keeping any
// bytes not yet parsed, and returns the pooled one.
func (c *Conn) restoreWindow(bp *[]byte) {
	r := &c.rd
	left := r.win[r.pos:r.end]
	switch {
	case len(left) == 0:
		r.pos, r.end = 0, 0
	case len(left) <= len(r.buf) && len(r.pre) == 0:
		r.end = copy(r.buf[:], left)
		r.pos = 0
	default:
		r.pre = append(append([]byte(nil), left...), r.pre...)
		r.pos, r.end = 0, 0
	}
	r.win = r.buf[:]
	c.pooledRead.Store(false)
	pool.Put(bp)
}
