package websocket

import (
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/pump"
)

// A tunnel in raw mode (the raw_stream extension, PROTOCOL.md §6) carries
// the byte stream with no WebSocket framing once the handshake is done: the
// connection underneath is the stream, as after an HTTP CONNECT. Nothing is
// masked or framed, end of stream is the connection's own half-close, and
// between two TCP sockets the bytes move by splice without entering user
// space. The methods below are what Conn's methods do in that mode.

// rawBuffered hands out the bytes the handshake read past the server's
// reply: they are the stream's first bytes.
func (c *Conn) rawBuffered(p []byte) int {
	r := &c.rd
	if r.pos < r.end {
		n := copy(p, r.win[r.pos:r.end])
		r.pos += n
		return n
	}
	if len(r.pre) > 0 {
		n := copy(p, r.pre)
		r.pre = r.pre[n:]
		return n
	}
	return 0
}

func (c *Conn) rawRead(p []byte) (int, error) {
	c.rmu.Lock()
	n := c.rawBuffered(p)
	c.rmu.Unlock()
	if n > 0 || len(p) == 0 {
		return n, nil
	}
	n, err := c.nc.Read(p)
	if err != nil && err != io.EOF {
		err = c.readError(err)
	}
	return n, err
}

func (c *Conn) rawWrite(p []byte) (int, error) {
	n, err := c.ncWrite(p)
	if err != nil {
		err = c.writeError(err)
	}
	return n, err
}

func (c *Conn) rawCloseWrite() error {
	hc, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		return c.nc.Close()
	}
	if c.cork == nil {
		return hc.CloseWrite()
	}
	// Under TLS: what a write deadline kept goes first (or the half-close
	// fails, to be tried again), then close_notify, which must not be left
	// in the cork: crypto/tls writes nothing after it.
	if err := c.cork.FlushHeld(); err != nil {
		return c.writeError(err)
	}
	if err := hc.CloseWrite(); err != nil {
		return err
	}
	if c.cork.Held() {
		return c.opError("close", os.ErrDeadlineExceeded)
	}
	return nil
}

func (c *Conn) rawClose() error {
	c.closeOnce.Do(func() {
		c.beginClose()
		if c.cork != nil && !c.cork.Busy() && c.cork.Held() {
			// Bytes a write deadline kept were counted as written: give
			// them the close timeout to go out, as a framed Close does.
			c.nc.SetWriteDeadline(time.Now().Add(c.cfg.closeTimeout))
			c.cork.FlushHeld()
		}
		c.ended()
		c.closeErr = c.closeNC()
	})
	return c.closeErr
}

// rawCopyTo drains the handshake's leftovers into w, then the stream: by
// splice when both are TCP sockets.
func (c *Conn) rawCopyTo(w io.Writer, count *atomic.Int64) (int64, error) {
	var total int64
	for {
		var buf [readBufSize]byte
		c.rmu.Lock()
		n := c.rawBuffered(buf[:])
		c.rmu.Unlock()
		if n == 0 {
			break
		}
		nw, err := w.Write(buf[:n])
		total += int64(nw)
		if count != nil {
			count.Add(int64(nw))
		}
		if err != nil {
			return total, err
		}
	}
	n, err := pump.Copy(w, c.nc, count)
	return total + n, err
}

// rawCopyFrom sends what r yields, by splice when both are TCP sockets.
func (c *Conn) rawCopyFrom(r io.Reader, count *atomic.Int64) (int64, error) {
	if c.cork != nil {
		// Under TLS, through rawWrite: records gathered, timeouts kept.
		return pump.Copy(rawWriter{c}, r, count)
	}
	return pump.Copy(c.nc, r, count)
}

// rawWriter writes a raw stream through its Conn.
type rawWriter struct{ c *Conn }

func (w rawWriter) Write(p []byte) (int, error) { return w.c.rawWrite(p) }
