// Package testnet holds the loopback plumbing that tests of several
// packages share: a connected TCP pair, a service that runs a handler
// per connection and is torn down, goroutines and all, by the test's
// cleanup, and a port held so that it refuses connections (HoldPort).
package testnet

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TCPPair returns the two ends of a loopback TCP connection; cleanup
// closes both.
func TCPPair(t testing.TB) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if b = <-accepted; b == nil {
		a.Close()
		t.Fatal("testnet: accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// Serve runs handle, in a goroutine of its own, for every connection
// accepted on ln. Cleanup closes ln and every connection still open, and
// waits for the handlers. A handler need not close its connection.
func Serve(t testing.TB, ln net.Listener, handle func(net.Conn)) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[net.Conn]struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// Listen listens on 127.0.0.1:0 and serves handle there; it returns the
// port.
func Listen(t testing.TB, handle func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	Serve(t, ln, handle)
	return ln.Addr().(*net.TCPAddr).Port
}

// AssertReset dials addr and fails the test unless the connection is reset:
// at connect already, if the reset beats the connect's completion, or at
// the first read. It is what a client of a forwarded port sees when its
// stream could not be opened.
func AssertReset(t testing.TB, network, addr string) {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want a reset or success", err)
		}
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read from a failed stream: %d bytes, %v; want a reset", n, err)
	}
}
