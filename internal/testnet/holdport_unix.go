//go:build unix

package testnet

import (
	"net"
	"syscall"
	"testing"
)

// HoldPort binds a socket to the loopback port and never listens on it,
// until the test ends: connections to it are refused, and no parallel
// test can listen there meanwhile, as one could on a port merely closed
// (the OS hands it out again). port 0 picks one.
func HoldPort(t testing.TB, port int) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	// (past the TIME_WAIT of connections a listener on it accepted)
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		t.Fatalf("holding port %d: %v", port, err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

// CloseRefusing closes ln and holds its port, so that connections to it
// are refused for the rest of the test.
func CloseRefusing(t testing.TB, ln net.Listener) {
	t.Helper()
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	HoldPort(t, port)
}
