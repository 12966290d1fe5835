//go:build unix

package main

import (
	"syscall"
	"testing"
)

// deadPort returns a loopback port that refuses connections for the whole
// test: a socket is bound to it and never listens, so that no parallel
// test (or outgoing connection) can take it meanwhile, as they could a
// port that was picked and released (freePort).
func deadPort(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}
