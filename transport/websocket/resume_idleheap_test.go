package websocket

import (
	"io"
	"testing"
	"time"
)

// TestResumeUsedIdleTunnelLetsGo: a resumable tunnel that has carried
// 1 MiB each way (through the server's pump to an echo target) and gone
// idle holds, once all is acknowledged, neither a send chunk (on either
// side) nor, at the server, a pooled read buffer. It held both: the send
// buffer's emptied slice kept pointers to the chunks it had given back
// (so they stayed alive), and the server's CopyTo, whose last read from
// the client had been an ack, waited for the next frame in the 256 KiB
// pooled buffer that read had borrowed (BenchmarkIdleTunnel/ours-resume:
// about 270 KiB per used idle server tunnel).
func TestResumeUsedIdleTunnelLetsGo(t *testing.T) {
	t.Parallel()
	srv := newServer()
	_, _, d, tg := resumeSetup(t, srv, echo)
	rc := dialResumable(t, d, tg)
	const n = 1 << 20
	wrote := make(chan error, 1)
	go func() {
		_, err := rc.Write(make([]byte, n))
		wrote <- err
	}()
	if _, err := io.ReadFull(rc, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	// The echo came back, so the server's pump runs and has registered
	// the tunnel.
	srv.mu.Lock()
	var sr *ResumableConn
	for _, r := range srv.resumable {
		sr = r
	}
	srv.mu.Unlock()
	if sr == nil {
		t.Fatal("no resumable tunnel on the server")
	}

	deadline := time.Now().Add(10 * time.Second)
	for _, side := range []struct {
		name string
		r    *ResumableConn
	}{{"client", rc}, {"server", sr}} {
		r := side.r
		r.mu.Lock()
		// Each ack that moves acked broadcasts; the peer's ack timer sends
		// the last one.
		for r.acked < r.sent && r.waitLocked(deadline) {
		}
		if r.acked != r.sent || r.sent != n {
			t.Errorf("%s: %d of %d bytes sent acknowledged, want all of %d", side.name, r.acked, r.sent, n)
		}
		if len(r.chunks) != 0 {
			t.Errorf("%s: all acknowledged, and the send buffer holds %d chunks", side.name, len(r.chunks))
		}
		held := 0
		for _, b := range r.chunks[:cap(r.chunks)] {
			if b != nil {
				held++
			}
		}
		if held > 0 {
			t.Errorf("%s: the emptied send buffer still points at %d chunks given back", side.name, held)
		}
		r.mu.Unlock()
	}

	// The server's CopyTo took the last ack and waits for the next frame:
	// with no pooled buffer. Nothing tells when it is back in its wait, so
	// this looks until then.
	sr.mu.Lock()
	sc := sr.reading
	sr.mu.Unlock()
	if sc == nil {
		t.Fatal("the server's tunnel has no connection")
	}
	for sc.pooledRead.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if sc.pooledRead.Load() {
		t.Error("the idle server tunnel's CopyTo holds a pooled read buffer")
	}
}
