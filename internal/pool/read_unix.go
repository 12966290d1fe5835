//go:build unix

package pool

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// readPolled is Read for a TCP or Unix socket: it waits in the runtime's
// poller with no buffer borrowed, and borrows one only when a read(2) is
// about to succeed. ok is false for any other reader, which Read then reads
// the portable way.
func readPolled(r io.Reader) (bp *[]byte, n int, ok bool, err error) {
	var rc syscall.RawConn
	switch c := r.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *net.UnixConn:
		rc, err = c.SyscallConn()
	}
	if rc == nil || err != nil {
		return nil, 0, false, nil
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
		return nil, 0, true, cerr
	}
	return bp, n, true, nil
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
