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

var _ pump.CopierFrom = (*ResumableConn)(nil)

// CopyFrom is Conn.CopyFrom across reconnections (pump.CopierFrom): each
// read of src goes straight into the send buffer's last chunk, and is framed
// and sent from there, so that the bytes are copied once on their way in
// (the send buffer keeps them until the peer acknowledges them, and a
// resume sends them again from there), as Write would have them copied
// twice. A full send buffer, or a connection being replaced, stops the
// reading of src until acks or the new connection come (reading the acks
// itself when no Read is under way), as it stops a Write; the write
// deadline bounds that wait. From a TCP or Unix socket, the chunk is taken
// only once the socket has data: a tunnel whose source is idle holds none
// for it.
//
// It returns nil at src's end of stream, and src's error otherwise; it does
// not end the write side (see CloseWrite). Writes and CloseWrite wait
// while it runs. Each chunk is added to count (which may be nil) as it is
// sent.
func (r *ResumableConn) CopyFrom(src io.Reader, count *atomic.Int64) (int64, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	sock := isSocket(src)
	var total int64
	for {
		f, err := r.fill(src, sock)
		if err != nil {
			return total, err
		}
		if len(f.seg) > 0 {
			n, err := r.sendFilled(f)
			total += n
			if count != nil && n > 0 {
				count.Add(n)
			}
			if err != nil {
				return total, err
			}
		}
		switch {
		case f.rerr == io.EOF:
			return total, nil
		case f.rerr != nil:
			return total, f.rerr
		}
	}
}

// filled is what one read of CopyFrom's source put in the send buffer: seg
// (counted sent) is to go out on c, the connection of gen; rerr is the
// read's error.
type filled struct {
	seg  []byte
	c    *Conn
	gen  uint64
	rerr error
}

// fill waits for room in the send buffer and a connection to send on, then
// reads src once into the send buffer (by fillPolled if sock: src is a TCP
// or Unix socket). err is the tunnel's error (the read's is in the
// result).
func (r *ResumableConn) fill(src io.Reader, sock bool) (filled, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if err := r.writeErrLocked(); err != nil {
			return filled{}, err
		}
		c, gen := r.cur, r.gen
		room := r.bufMax - (r.sent - r.acked)
		if c == nil || room <= 0 {
			if rc := r.reading; rc != nil && r.rmu.TryLock() {
				r.readForWriterLocked(rc, gen, r.ackStep())
				r.rmu.Unlock()
				continue
			}
			if !r.waitLocked(r.wdl) {
				return filled{}, r.opError("write", os.ErrDeadlineExceeded)
			}
			continue
		}
		if sock {
			r.mu.Unlock()
			f, ready := r.fillPolled(src)
			r.mu.Lock()
			if !ready {
				continue // the tunnel changed while src had nothing
			}
			return f, nil
		}
		// Any other reader may block in Read: it reads into a chunk of its
		// own, which becomes the send buffer's next chunk where the buffer
		// ends on a chunk's end (no copy), else is copied into its last one.
		off := int((r.sent - r.base) % resumeChunk)
		limit := int(min(room, int64(resumeChunk-off)))
		r.mu.Unlock()
		own := chunkPool.Get().(*[]byte)
		n, rerr := src.Read((*own)[:limit])
		r.mu.Lock()
		f := filled{rerr: rerr}
		if n > 0 {
			// The bytes go in only while there is a connection to send them
			// on: a resend under way sends no bytes put in after it ends.
			if err := r.awaitConnLocked(); err != nil {
				chunkPool.Put(own)
				return filled{}, err
			}
			f.c, f.gen = r.cur, r.gen
			if (r.sent-r.base)%resumeChunk == 0 && (r.sent-r.base)/resumeChunk == int64(len(r.chunks)) {
				r.chunks = append(r.chunks, own)
				r.sent += int64(n)
				f.seg = (*own)[:n]
				own = nil
			} else {
				f.seg = r.appendLocked((*own)[:n]) // fits: limit was the room to the chunk's end
			}
		}
		if own != nil {
			chunkPool.Put(own)
		}
		return f, nil
	}
}

// awaitConnLocked waits for a connection to send on (as a Write does:
// reading the acks itself when no Read is under way), within the write
// deadline; the send buffer's room cannot shrink meanwhile.
func (r *ResumableConn) awaitConnLocked() error {
	for {
		if err := r.writeErrLocked(); err != nil {
			return err
		}
		if r.cur != nil {
			return nil
		}
		if rc := r.reading; rc != nil && r.rmu.TryLock() {
			r.readForWriterLocked(rc, r.gen, r.ackStep())
			r.rmu.Unlock()
			continue
		}
		if !r.waitLocked(r.wdl) {
			return r.opError("write", os.ErrDeadlineExceeded)
		}
	}
}

// sendFilled sends what fill put in the send buffer, and acts on a
// failure as Write does: a connection lost leaves the bytes to the resend.
func (r *ResumableConn) sendFilled(f filled) (int64, error) {
	n, err := f.c.Write(f.seg)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil && f.gen == r.gen {
		if isTimeout(err) && f.c.deadErr.Load() == nil {
			r.sent -= int64(len(f.seg) - n)
			return int64(n), err
		}
		if !r.isLoss(f.c, err) {
			r.failLocked(err)
			return 0, err
		}
		r.lostLocked(f.c, f.gen, err)
	}
	if r.rmu.TryLock() {
		r.rmu.Unlock()
		r.startAckReaderLocked()
	}
	return int64(len(f.seg)), nil
}
