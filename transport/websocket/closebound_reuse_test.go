package websocket

import (
	"bytes"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

type slowWriter struct{ d time.Duration }

func (w slowWriter) Write(p []byte) (int, error) { time.Sleep(w.d); return len(p), nil }

// TestCloseUnderReuseOneDeadline: Close under reuse, while CopyTo holds the
// read side writing to a slow destination. The peer's data and end arrive
// in one read shortly before the close deadline: the drain stops (the
// peer's end is in), and the hand-over used to wait a second, fresh close
// timeout for the same reader. One deadline bounds the whole Close.
func TestCloseUnderReuseOneDeadline(t *testing.T) {
	t.Parallel()
	// Longer than the slack, so that twice the timeout exceeds it.
	const timeout = 1500 * time.Millisecond
	client, server := connPair(t, true, Tuning{CloseTimeout: timeout})
	client.reuse, server.reuse = true, true
	client.onReuse = func(l *link) { l.nc.Close() }
	go client.CopyTo(slowWriter{4 * timeout}, nil)
	waitUntil(t, "CopyTo reads", func() bool { return client.reading.Load() > 0 && readSideHeld(client) })
	start := time.Now()
	done := make(chan struct{})
	go func() { client.Close(); close(done) }()
	waitUntil(t, "Close waits for the read side", closeWaitsForReader(client))
	time.Sleep(timeout - 200*time.Millisecond) // the peer's end comes just before the deadline
	var buf bytes.Buffer
	ws.WriteFrame(&buf, ws.NewBinaryFrame([]byte("last bytes")))
	ws.WriteFrame(&buf, ws.NewTextFrame(wire.EndMessage))
	server.nc.Write(buf.Bytes()) // data and end in one segment
	<-done
	if el := time.Since(start); el > timeout+time.Second {
		t.Fatalf("Close under reuse took %v, close timeout %v", el, timeout)
	}
}

// TestCloseUnderReuseBehindWriteOneDeadline: Close under reuse while a
// Write to a peer that does not read holds the write side until Close's
// deadline. Close used to fall back to a plain close with a fresh close
// timeout, which spent it flushing the same stalled frame: about twice the
// timeout in all. One deadline bounds the whole Close.
func TestCloseUnderReuseBehindWriteOneDeadline(t *testing.T) {
	t.Parallel()
	const timeout = 1500 * time.Millisecond // longer than the slack
	client, server := connPair(t, true, Tuning{CloseTimeout: timeout})
	client.reuse, server.reuse = true, true
	client.onReuse = func(l *link) { l.nc.Close() }
	wrote := make(chan error, 1)
	go func() { _, err := client.Write(make([]byte, 64<<20)); wrote <- err }() // the server reads nothing
	waitUntil(t, "the Write holds the write side", func() bool {
		if client.wmu.TryLock() {
			client.wmu.Unlock()
			return false
		}
		return true
	})
	start := time.Now()
	client.Close()
	if el := time.Since(start); el > timeout+time.Second {
		t.Fatalf("Close under reuse behind a stalled Write took %v, close timeout %v", el, timeout)
	}
	if err := <-wrote; err == nil {
		t.Fatal("a 64 MiB Write to a peer that reads nothing succeeded")
	}
}
