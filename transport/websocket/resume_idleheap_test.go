package websocket

import (
	"io"
	"testing"
	"time"
)

// TestResumeUsedIdleTunnelLetsGo: a resumable tunnel that has carried
// 1 MiB each way (through the server's pump to an echo target) and gone
// idle holds, once all is acknowledged, no send chunk on either side. It
// held them: the send buffer's emptied slice kept pointers to the chunks
// it had given back, so that they stayed alive once the pool dropped
// them.
func TestResumeUsedIdleTunnelLetsGo(t *testing.T) {
	t.Parallel()
	srv := newServer()
	_, _, d, tg := resumeSetup(t, srv, echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc, ok := nc.(*ResumableConn)
	if !ok {
		t.Fatalf("tunnel is a %T, want a *ResumableConn", nc)
	}
	const n = 1 << 20
	wrote := make(chan error, 1)
	go func() {
		_, err := nc.Write(make([]byte, n))
		wrote <- err
	}()
	if _, err := io.ReadFull(nc, make([]byte, n)); err != nil {
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
}
