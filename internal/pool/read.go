package pool

import (
	"errors"
	"io"
	"net"
)

// Read reads once from r into a borrowed buffer, at [Headroom:Headroom+n].
// The caller must Put the buffer, which is nil only when err is not nil and
// n is 0.
//
// On Unix, for a TCP or Unix socket the buffer is borrowed only once data is
// ready to read: while the socket is idle the goroutine waits in the
// runtime's poller holding no buffer. Any other reader (TLS, an in-process
// stack), and every reader on Windows, is read into a buffer borrowed for
// the whole Read.
func Read(r io.Reader) (bp *[]byte, n int, err error) {
	if bp, n, ok, err := readPolled(r); ok {
		return bp, n, err
	}
	bp = Get()
	n, err = r.Read((*bp)[Headroom:])
	if n == 0 && err != nil {
		Put(bp)
		bp = nil
	}
	return bp, n, err
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
