package websocket

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"

	"github.com/spriteproxy/spriteproxy/internal/pump"
)

var _ pump.CopierTo = (*ResumableConn)(nil)

// errStaleConn stops a Conn's CopyTo whose connection was dropped while
// it copied: what it still held is the peer's to send again.
var errStaleConn = errors.New("websocket: connection replaced by a resume")

// CopyTo is Conn.CopyTo across reconnections (pump.CopierTo): what a
// waiting Write read first, then each connection's frames straight into
// w, many frames per read and, to a socket, one writev for them, as
// without resume. It returns nil at the peer's end of stream and
// pump.ErrClosedByPeer when the peer closed both ways; bytes are counted
// as received (and acknowledged) before they go to w, as Read counts them
// before it returns them, so that a resume never has them sent twice.
func (r *ResumableConn) CopyTo(w io.Writer, count *atomic.Int64) (int64, error) {
	r.rmu.Lock()
	defer r.readDone()
	var total int64
	r.mu.Lock()
	for {
		if len(r.pending) > 0 {
			p := r.pending
			r.pending = nil
			c, a := r.deliveredLocked(len(p))
			r.mu.Unlock()
			if c != nil {
				c.queueAck(a)
			}
			n, err := w.Write(p)
			total += int64(n)
			if count != nil && n > 0 {
				count.Add(int64(n))
			}
			if err != nil {
				return total, err
			}
			r.mu.Lock()
			continue
		}
		if r.peerEOF {
			closed := r.peerClosed
			r.mu.Unlock()
			if closed {
				return total, pump.ErrClosedByPeer
			}
			return total, nil
		}
		if err := r.endErrLocked("read"); err != nil {
			r.mu.Unlock()
			return total, err
		}
		c, gen := r.reading, r.gen
		if c == nil {
			if !r.waitLocked(r.rdl) {
				r.mu.Unlock()
				return total, r.opError("read", os.ErrDeadlineExceeded)
			}
			continue
		}
		r.mu.Unlock()
		s := resumeSink{r: r, gen: gen, w: w, count: count}
		_, err := c.CopyTo(&s, nil)
		total += s.n
		r.mu.Lock()
		switch {
		case s.stale:
			continue // the rest comes again on the next connection
		case s.werr != nil:
			r.mu.Unlock()
			return total, s.werr
		case err == nil || err == pump.ErrClosedByPeer:
			err = io.EOF // readFailedLocked tells the two apart
		}
		if done, err := r.readFailedLocked(c, gen, err); done && err != io.EOF {
			r.mu.Unlock()
			return total, err
		}
	}
}

// resumeSink is the writer a ResumableConn's CopyTo gives each Conn's
// CopyTo: it counts what it takes from the connection of gen, and stops
// the copy once a resume replaced that connection.
type resumeSink struct {
	r     *ResumableConn
	gen   uint64
	w     io.Writer
	count *atomic.Int64
	n     int64 // bytes written to w
	stale bool  // the connection was replaced: nothing was taken
	werr  error // w failed
}

// take counts n bytes received and delivered, unless the connection is no
// longer the tunnel's.
func (s *resumeSink) take(n int) bool {
	r := s.r
	r.mu.Lock()
	if s.gen != r.gen {
		s.stale = true
		r.mu.Unlock()
		return false
	}
	r.recvd += int64(n)
	r.confirmedLocked()
	c, a := r.deliveredLocked(n)
	r.mu.Unlock()
	if c != nil {
		c.queueAck(a)
	}
	return true
}

func (s *resumeSink) wrote(n int64, err error) {
	s.n += n
	if s.count != nil && n > 0 {
		s.count.Add(n)
	}
	if err != nil {
		s.werr = err
	}
}

// Write writes one payload.
func (s *resumeSink) Write(p []byte) (int, error) {
	if !s.take(len(p)) {
		return 0, errStaleConn
	}
	n, err := s.w.Write(p)
	s.wrote(int64(n), err)
	return n, err
}

// writeSegments writes the payloads of one read at once (a writev to a
// socket), as Conn.CopyTo does to a plain writer.
func (s *resumeSink) writeSegments(b *net.Buffers) (int64, error) {
	var size int
	for _, p := range *b {
		size += len(p)
	}
	if !s.take(size) {
		return 0, errStaleConn
	}
	n, err := b.WriteTo(s.w)
	s.wrote(n, err)
	return n, err
}
