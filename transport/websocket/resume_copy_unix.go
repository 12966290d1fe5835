//go:build unix

package websocket

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// isSocket says whether CopyFrom reads src with fillPolled.
func isSocket(src io.Reader) bool {
	switch src.(type) {
	case *net.TCPConn, *net.UnixConn:
		return true
	}
	return false
}

// fillPolled is fill's read of a TCP or Unix socket: it waits in the
// runtime's poller holding no chunk, then reads what the socket has into
// the send buffer with r.mu held (fillFromLocked). ready is false when the
// tunnel could not take the data when it came: the caller waits for it,
// and tries again.
func (r *ResumableConn) fillPolled(src io.Reader) (f filled, ready bool) {
	// The raw conn is taken here, per read, as internal/pool does: its
	// concrete type is then known and the callback does not escape (no
	// allocation per read).
	var rc syscall.RawConn
	var err error
	switch c := src.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	}
	if err != nil {
		return filled{rerr: err}, true
	}
	cerr := rc.Read(func(fd uintptr) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var again bool
		f, ready, again = r.fillFromLocked(int(fd))
		return !again
	})
	if cerr != nil {
		// The socket closed, or its read deadline passed, while it waited.
		f, ready = filled{rerr: cerr}, true
	}
	if f.rerr != nil && f.rerr != io.EOF {
		f.rerr = wrapRawReadError(src.(net.Conn), f.rerr)
	}
	return f, ready
}

// fillFromLocked reads from the socket fd, without waiting, into the end
// of the send buffer, a fresh chunk taken for it only if the buffer ends
// on a chunk's end. ready is false, nothing read, when the tunnel cannot
// take data now (no connection, no room, or over); again is true when the
// socket had nothing (EAGAIN: the chunk taken went back); else f is what
// was put in the buffer. r.mu is held throughout: the read does not wait,
// and nothing can give the chunk back meanwhile.
func (r *ResumableConn) fillFromLocked(fd int) (f filled, ready, again bool) {
	room := r.bufMax - (r.sent - r.acked)
	if r.writeErrLocked() != nil || r.cur == nil || room <= 0 {
		return filled{}, false, false
	}
	idx, off := (r.sent-r.base)/resumeChunk, int((r.sent-r.base)%resumeChunk)
	fresh := idx == int64(len(r.chunks))
	var b *[]byte
	if fresh {
		b = chunkPool.Get().(*[]byte)
	} else {
		b = r.chunks[idx]
	}
	limit := int(min(room, int64(resumeChunk-off)))
	var n int
	var err error
	for {
		n, err = syscall.Read(fd, (*b)[off:off+limit])
		if err != syscall.EINTR {
			break
		}
	}
	switch {
	case err == syscall.EAGAIN:
		if fresh {
			chunkPool.Put(b)
		}
		return filled{}, true, true
	case err != nil:
		n, err = 0, os.NewSyscallError("read", err)
	case n == 0:
		err = io.EOF
	}
	f = filled{rerr: err, c: r.cur, gen: r.gen}
	if n > 0 {
		if fresh {
			r.chunks = append(r.chunks, b)
		}
		r.sent += int64(n)
		f.seg = (*b)[off : off+n]
	} else if fresh {
		chunkPool.Put(b)
	}
	return f, true, false
}

// wrapRawReadError makes an error of the raw read look like the one the
// socket's Read returns.
func wrapRawReadError(c net.Conn, err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err // the raw path says "raw-read"; name it as Read would
	}
	return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
