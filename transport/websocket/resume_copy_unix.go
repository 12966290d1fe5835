//go:build unix

package websocket

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// rawReadConn is src's raw socket when src is a TCP or Unix socket, which
// CopyFrom reads with fillPolled; nil for any other reader.
func rawReadConn(src io.Reader) syscall.RawConn {
	var rc syscall.RawConn
	var err error
	switch c := src.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	}
	if err != nil {
		return nil
	}
	return rc
}

// fillPolled is fill's read of a socket: it waits in the runtime's poller
// holding no chunk, then reads what the socket has into the send buffer
// with r.mu held (fillFromLocked). ready is false when the tunnel could
// not take the data when it came: the caller waits for it, and tries
// again.
func (r *ResumableConn) fillPolled(src io.Reader, rc syscall.RawConn) (f filled, ready bool) {
	read := func(fd uintptr) func(p []byte) (int, bool, error) {
		return func(p []byte) (int, bool, error) {
			for {
				n, err := syscall.Read(int(fd), p)
				switch {
				case err == syscall.EINTR:
					continue
				case err == syscall.EAGAIN:
					return 0, false, nil
				case err != nil:
					return 0, true, os.NewSyscallError("read", err)
				case n == 0:
					return 0, true, io.EOF
				}
				return n, true, nil
			}
		}
	}
	cerr := rc.Read(func(fd uintptr) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var again bool
		f, ready, again = r.fillFromLocked(read(fd))
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

// wrapRawReadError makes an error of the raw read look like the one the
// socket's Read returns.
func wrapRawReadError(c net.Conn, err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err // the raw path says "raw-read"; name it as Read would
	}
	return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
