package websocket

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// TestResumeAcksBeforePeerBufferFills: each side acknowledges once a
// quarter of the smaller of the two resume buffers is unacknowledged, so a
// client with a small ResumeBuffer is not held to one buffer per ack timer
// (the server acked at a quarter of its own 4 MiB: a 64 KiB client then
// uploaded at 1.3 MB/s against 386 MB/s with 4 MiB).
func TestResumeAcksBeforePeerBufferFills(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.ResumeBuffer = 1 << 20
	done := make(chan int64, 1)
	first := make(chan struct{})
	_, _, d, tg := resumeSetup(t, srv, func(c net.Conn) {
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			done <- 0
			c.Close()
			return
		}
		close(first)
		n, _ := io.Copy(io.Discard, c)
		done <- n + 1
		c.Close()
	})
	d.ResumeBuffer = 64 << 10
	rc := dialResumable(t, d, tg)
	// The server registers the tunnel after its reply has gone out; a byte
	// at the target says that its pump runs, so it is registered.
	if _, err := rc.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first:
	case n := <-done:
		t.Fatalf("the target ended after %d bytes", n)
	}
	srv.mu.Lock()
	var sr *ResumableConn
	for _, r := range srv.resumable {
		sr = r
	}
	srv.mu.Unlock()
	if sr == nil {
		t.Fatal("no resumable tunnel on the server")
	}
	if sr.ackEvery != 16<<10 {
		t.Errorf("the server acks every %d bytes, want 16 KiB (a quarter of the client's 64 KiB)", sr.ackEvery)
	}
	if rc.ackEvery != 16<<10 {
		t.Errorf("the client acks every %d bytes, want 16 KiB (a quarter of its own 64 KiB, under the server's 1 MiB)", rc.ackEvery)
	}
	if _, err := rc.Write(make([]byte, 1<<20-1)); err != nil {
		t.Fatal(err)
	}
	rc.CloseWrite()
	if n := <-done; n != 1<<20 {
		t.Errorf("target read %d bytes, want 1 MiB", n)
	}
}

// TestResumeBufferOnTheWire: the request and the reply carry the resume
// buffer; a negative one is refused.
func TestResumeBufferOnTheWire(t *testing.T) {
	t.Parallel()
	d := &Dialer{ResumeBuffer: 12345}
	req, err := wire.ParseRequest(d.firstMessage("localhost", 7, false))
	if err != nil || req.Buffer != 12345 {
		t.Errorf("request: %+v, %v; want resume_buffer 12345", req, err)
	}
	d = &Dialer{DisableResume: true}
	if req, _ := wire.ParseRequest(d.firstMessage("localhost", 7, false)); req.Buffer != 0 {
		t.Errorf("resume off: request has resume_buffer %d", req.Buffer)
	}
	if _, err := wire.ParseRequest([]byte(`{"host":"localhost","port":7,"resume_buffer":-1}`)); err == nil {
		t.Error("a negative resume_buffer in a request was taken")
	}
	if _, err := wire.ParseReply([]byte(`{"status":"connected","resume_buffer":-1}`)); err == nil {
		t.Error("a negative resume_buffer in a reply was taken")
	}
}

// TestResumeGraceUnderAMillisecond: a server grace under 1 ms reaches the
// client as 1 ms, not as 0, which the client took for "not said" and
// replaced with the 60 s default.
func TestResumeGraceUnderAMillisecond(t *testing.T) {
	t.Parallel()
	if got := graceMillis(500 * time.Microsecond); got != 1 {
		t.Errorf("graceMillis(500µs) = %d, want 1", got)
	}
	if got := graceMillis(1500 * time.Millisecond); got != 1500 {
		t.Errorf("graceMillis(1.5s) = %d, want 1500", got)
	}
	srv := newServer()
	srv.ResumeGrace = 500 * time.Microsecond
	_, _, d, tg := resumeSetup(t, srv, echo)
	rc := dialResumable(t, d, tg)
	if rc.grace != time.Millisecond {
		t.Errorf("the client's grace is %v, want 1ms", rc.grace)
	}
}
