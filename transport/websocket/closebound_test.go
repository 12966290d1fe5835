package websocket

import (
	"crypto/tls"
	"io"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testcert"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// readSideHeld reports whether someone holds c's read side.
func readSideHeld(c *Conn) bool {
	if c.rmu.TryLock() {
		c.rmu.Unlock()
		return false
	}
	return true
}

// closeWaitsForReader reports whether a close is waiting for the read side
// (lockReadBy).
func closeWaitsForReader(c *Conn) func() bool {
	return func() bool { return c.readLeft.Load() != nil }
}

// TestCloseBoundedAfterTLSGather: a server-side Conn over TLS that the
// tunnel did not make (ServeHTTP behind an http.Server with TLS: no
// cork.Conn), CopyTo running. Close sets its deadline as the read deadline
// and waits for the read side; CopyTo's TLS gathering used to reset the
// read deadline to none on its way out, so that Close's drain, once CopyTo
// returned at the peer's eof, read with no deadline: a client that never
// answers the close frame held Close for ever.
func TestCloseBoundedAfterTLSGather(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	pair, err := testcert.New()
	if err != nil {
		t.Fatal(err)
	}
	a, b := testnet.TCPPair(t)
	ccfg := pair.ClientConfig()
	ccfg.ServerName = "localhost"
	ta, tb := tls.Client(a, ccfg), tls.Server(b, pair.ServerConfig())
	go ta.Handshake()
	if err := tb.Handshake(); err != nil {
		t.Fatal(err)
	}
	cfg, err := Tuning{CloseTimeout: timeout}.config()
	if err != nil {
		t.Fatal(err)
	}
	client, server := newConn(ta, true, cfg, nil), newConn(tb, false, cfg, nil)
	client.halfClose, server.halfClose = true, true
	defer a.Close()
	defer b.Close()

	copied := make(chan error, 1)
	go func() { _, err := server.CopyTo(io.Discard, nil); copied <- err }()
	waitUntil(t, "CopyTo reads", func() bool { return server.reading.Load() > 0 && readSideHeld(server) })
	closed := make(chan struct{})
	start := time.Now()
	go func() { server.Close(); close(closed) }()
	waitUntil(t, "Close waits for the read side", closeWaitsForReader(server))
	client.Write([]byte("data")) // the client's last data and eof; it never reads, so never answers the close frame
	client.CloseWrite()
	<-copied
	select {
	case <-closed:
		t.Logf("Close returned after %v", time.Since(start))
	case <-time.After(timeout + time.Second):
		t.Fatalf("Close still running %v after it began, close timeout %v", time.Since(start), timeout)
	}
}
