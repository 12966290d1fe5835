package pump

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// wasReset reports whether the TCP socket under c, whose read just returned
// end of stream while its own write side is still open, was in fact reset
// by its peer. Linux reports a reset to one call only: when the other
// direction's write to the same socket took the ECONNRESET, the next read
// returns 0 as for a FIN. The state tells them apart: a FIN leaves an open
// write side in CLOSE_WAIT, a reset leaves it CLOSED.
func wasReset(c any) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var reset bool
	rc.Control(func(fd uintptr) {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		reset = err == nil && info.State == tcpClose
	})
	return reset
}

// tcpClose is TCP_CLOSE in the kernel's tcp_states.h.
const tcpClose = 7
