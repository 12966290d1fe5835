//go:build !unix

package testnet

import (
	"net"
	"testing"
)

// HoldPort returns port, or with 0 one that nothing listens on now
// (without a socket to hold it, a parallel test may take it).
func HoldPort(t testing.TB, port int) int {
	t.Helper()
	if port != 0 {
		return port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// CloseRefusing closes ln.
func CloseRefusing(t testing.TB, ln net.Listener) { ln.Close() }
