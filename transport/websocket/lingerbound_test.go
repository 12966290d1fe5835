package websocket

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// waitUntil waits, a bounded number of short steps, for cond: for states of
// the Conn that no channel announces (a Read blocked on the socket, a close
// waiting for the read side).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 2000 {
		if cond() {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s", what)
}

// TestLingerCountsOnlyTimeAReadWaits: after CloseWrite to a plain server,
// an application that pauses reading for longer than HalfCloseLinger,
// while the server's reply waits behind TCP backpressure, still gets the
// whole reply: the linger counts the server's silence only while a Read
// waits on the connection with nothing buffered. (It used to count from
// the last frame header parsed, so a paused reader looked like a silent
// server; the close frame went out and the plain server's answer cut the
// reply, which then read as a clean io.EOF.)
func TestLingerCountsOnlyTimeAReadWaits(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	reply := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	tg := startTarget(t, func(c net.Conn) {
		defer c.Close()
		var b [1]byte
		io.ReadFull(c, b[:]) // the request
		c.Write(reply)
	})
	url, _ := gorillaPlainServer(t, false)
	d := &Dialer{BaseURL: url, Token: testToken, HalfCloseLinger: 200 * time.Millisecond}
	c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the application is busy (five lingers); the server is not silent
	got, err := io.ReadAll(c)
	if err != nil || len(got) != size {
		t.Fatalf("read %d of %d bytes, err %v", len(got), size, err)
	}
	if !bytes.Equal(got, reply) {
		t.Fatal("reply corrupted")
	}
}
