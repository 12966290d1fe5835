//go:build linux

package websocket

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// canCountSockets says whether caseSockets works here.
const canCountSockets = true

// caseSockets counts this process's descriptors that are TCP sockets of
// a matrix case: not listening, with a local or peer port among ports
// (the case's listeners). Descriptors are listed from /proc/self/fd and
// asked for their addresses; the kernel's own tables (/proc/net/tcp) take
// tens of milliseconds to read on a busy machine.
func caseSockets(ports []int) (int, error) {
	want := make(map[int]bool, len(ports))
	for _, p := range ports {
		want[p] = true
	}
	port := func(sa syscall.Sockaddr) int {
		switch a := sa.(type) {
		case *syscall.SockaddrInet4:
			return a.Port
		case *syscall.SockaddrInet6:
			return a.Port
		}
		return 0
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range fds {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// (A descriptor closed meanwhile, or reused, fails one of these
		// or is another socket: the caller polls.)
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || !strings.HasPrefix(l, "socket:") {
			continue
		}
		if listening, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || listening != 0 {
			continue
		}
		if sa, err := syscall.Getsockname(fd); err == nil && want[port(sa)] {
			n++
		} else if sa, err := syscall.Getpeername(fd); err == nil && want[port(sa)] {
			n++
		}
	}
	return n, nil
}
