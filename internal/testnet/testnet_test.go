package testnet

import (
	"io"
	"net"
	"testing"
)

func TestPairAndServe(t *testing.T) {
	a, b := TCPPair(t)
	a.Write([]byte("x"))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(b, buf); err != nil || buf[0] != 'x' {
		t.Fatalf("pair: %q, %v", buf, err)
	}
	port := Listen(t, func(c net.Conn) { io.Copy(c, c) })
	c, err := net.Dial("tcp", (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("y"))
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 'y' {
		t.Fatalf("serve: %q, %v", buf, err)
	}
	// The handler still runs; cleanup must close it and wait.
}
