package pool

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Read reads once from r into a borrowed buffer, at [Headroom:Headroom+n].
// The caller must Put the buffer, which is nil only when err is not nil and
// n is 0.
//
// For a TCP or Unix socket the buffer is borrowed only once data is ready
// to read: while the socket is idle the goroutine waits in the runtime's
// poller holding no buffer. Any other reader (TLS, an in-process stack) is
// read into a buffer borrowed for the whole Read.
func Read(r io.Reader) (bp *[]byte, n int, err error) {
	var rc syscall.RawConn
	switch c := r.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	}
	if rc == nil || err != nil {
		bp = Get()
		n, err = r.Read((*bp)[Headroom:])
		if n == 0 && err != nil {
			Put(bp)
			bp = nil
		}
		return bp, n, err
	}
	var rerr error
	cerr := rc.Read(func(fd uintptr) bool {
		if bp == nil {
			bp = Get()
		}
		for {
			n, rerr = syscall.Read(int(fd), (*bp)[Headroom:])
			if rerr != syscall.EINTR {
				break
			}
		}
		if rerr == syscall.EAGAIN {
			// Not ready: give the buffer back while the poller waits.
			Put(bp)
			bp = nil
			return false
		}
		return true
	})
	if cerr == nil && rerr == nil && n == 0 {
		cerr = io.EOF
	}
	if cerr == nil && rerr != nil {
		n = 0
		cerr = os.NewSyscallError("read", rerr)
	}
	if cerr != nil {
		if bp != nil {
			Put(bp)
			bp = nil
		}
		if cerr != io.EOF {
			cerr = wrapReadError(r.(net.Conn), cerr)
		}
		return nil, 0, cerr
	}
	return bp, n, nil
}

// wrapReadError makes an error of the raw read path look like the one
// net.Conn.Read returns.
func wrapReadError(c net.Conn, err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err // the raw path says "raw-read"; name it as Read would
	}
	return &net.OpError{Op: "read", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
