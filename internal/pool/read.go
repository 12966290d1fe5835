package pool

import "io"

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
