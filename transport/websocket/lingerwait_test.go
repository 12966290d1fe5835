package websocket

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestLingerCloseFrameBoundedByCloseTimeout: the close frame the linger
// sends waits for the plain server's answer at most the close timeout. A
// server that neither answers nor closes its socket (a plain peer has no
// dead-peer rule, and the kernel answers TCP keep-alive) used to hold the
// reader for ever; now the connection is closed and the Read ends with a
// timeout error, not io.EOF: what the server meant to send may be cut.
func TestLingerCloseFrameBoundedByCloseTimeout(t *testing.T) {
	t.Parallel()
	const linger, timeout = 100 * time.Millisecond, 300 * time.Millisecond
	url := rawUpgraded(t, `{"status":"connected","target":"127.0.0.1:9"}`, func(conn net.Conn) {
		for {
			h, err := ws.ReadHeader(conn) // no answer to anything
			if err != nil {
				return
			}
			if _, err := io.CopyN(io.Discard, conn, h.Length); err != nil {
				return
			}
		}
	})
	d := &Dialer{BaseURL: url, Token: testToken, HalfCloseLinger: linger,
		Tuning: Tuning{CloseTimeout: timeout}}
	c, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:9")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*Conn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	end := make(chan error, 1)
	go func() { _, err := io.ReadAll(c); end <- err }()
	select {
	case err := <-end:
		if err == nil || errors.Is(err, io.EOF) {
			t.Fatalf("unanswered close frame read as a clean end: %v", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read ended with %v (%T), want a timeout", err, err)
		}
		t.Logf("read ended after %v: %v", time.Since(start), err)
	case <-time.After(linger + timeout + time.Second):
		t.Fatalf("%v after CloseWrite the read still waits for the answer (linger %v, close timeout %v)",
			time.Since(start), linger, timeout)
	}
}
