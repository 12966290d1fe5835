package websocket

import (
	"io"
	"net"
	"sync/atomic"

	"github.com/spriteproxy/spriteproxy/internal/pool"
	"github.com/spriteproxy/spriteproxy/internal/pump"
)

var (
	_ pump.CopierFrom = (*Conn)(nil)
	_ pump.CopierTo   = (*Conn)(nil)
	_ io.ReaderFrom   = (*Conn)(nil)
	_ io.WriterTo     = (*Conn)(nil)
)

// ReadFrom sends everything r yields until its end of stream, as with
// CopyFrom; it lets io.Copy take the fast path.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) { return c.CopyFrom(r, nil) }

// WriteTo writes the stream to w until its end (nil error at io.EOF), as
// with CopyTo; it lets io.Copy take the fast path.
func (c *Conn) WriteTo(w io.Writer) (int64, error) { return c.CopyTo(w, nil) }

// CopyFrom sends what r yields until r's end of stream, reading each chunk
// straight into a pooled frame buffer (no copy between read and send; the
// buffer is borrowed only once data is ready), and adds each chunk to count
// (which may be nil). It does not end the write side: see CloseWrite.
func (c *Conn) CopyFrom(r io.Reader, count *atomic.Int64) (int64, error) {
	var total int64
	for {
		bp, n, rerr := pool.Read(r)
		if n > 0 {
			c.wmu.Lock()
			err := c.writableLocked()
			if err == nil {
				_, err = c.sendBufLocked(opBinary, bp, n)
			}
			c.wmu.Unlock()
			c.flushControl()
			if err != nil {
				pool.Put(bp)
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
// adds each chunk to count (which may be nil). Between two TCP sockets an
// unmasked payload moves by splice, without entering user space; otherwise
// through a buffer borrowed only while a frame's payload is being read.
func (c *Conn) CopyTo(w io.Writer, count *atomic.Int64) (int64, error) {
	c.reading.Add(1)
	defer c.reading.Add(-1)
	tw, _ := w.(*net.TCPConn)
	var total int64
	for {
		c.rmu.Lock()
		err := c.awaitDataLocked()
		if err != nil {
			c.rmu.Unlock()
			if err == io.EOF {
				return total, nil
			}
			return total, c.readError(err)
		}
		r := &c.rd
		if tw != nil && c.tcp != nil && !r.h.masked && r.pos == r.end && len(r.pre) == 0 {
			want := r.left
			n, err := tw.ReadFrom(&io.LimitedReader{R: c.tcp, N: want})
			r.left -= n
			if r.left == 0 {
				r.mode = modeHeader
			}
			if err == nil && n < want {
				err = c.ioError(io.EOF)
			}
			c.rmu.Unlock()
			total += n
			if count != nil {
				count.Add(n)
			}
			if err != nil {
				return total, err
			}
			continue
		}
		bp := pool.Get()
		n, err := c.readPayloadLocked((*bp)[:min(r.left, int64(pool.Size))])
		c.rmu.Unlock()
		if n > 0 {
			var nw int
			nw, err = w.Write((*bp)[:n])
			total += int64(nw)
			if count != nil {
				count.Add(int64(nw))
			}
			if err == nil && nw < n {
				err = io.ErrShortWrite
			}
			pool.Put(bp)
			if err != nil {
				return total, err
			}
			continue
		}
		pool.Put(bp)
		if err != nil {
			return total, c.readError(err)
		}
	}
}
