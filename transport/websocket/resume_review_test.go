package websocket

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// Tests of the resume layer's review findings. Most drive a ResumableConn
// over net.Pipe connections (a write blocks until the peer reads), so that
// a resend or a Write can be held at a chosen point; the loss of a
// connection is simulated by detaching it (reviewLose), with no
// reconnection started.

// reviewPipe is a client and a server *Conn over a net.Pipe, with
// half_close and resume, no keep-alive.
func reviewPipe(t *testing.T) (cl, sv *Conn) {
	t.Helper()
	cfg, err := Tuning{KeepAlive: -1}.config()
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cl, sv = newConn(a, true, cfg, nil), newConn(b, false, cfg, nil)
	cl.halfClose, sv.halfClose = true, true
	cl.resume, sv.resume = true, true
	return cl, sv
}

// reviewLose detaches r from its connection as a loss does, without the
// reconnection (the test attaches the next connection itself).
func reviewLose(r *ResumableConn) {
	r.mu.Lock()
	rel := r.detachLocked()
	r.mu.Unlock()
	if rel != nil {
		close(rel)
	}
}

// reviewDetached is a client's resumable tunnel whose connection was lost
// before it sent anything.
func reviewDetached(t *testing.T) *ResumableConn {
	c1, _ := reviewPipe(t)
	r := newResumable(c1, true, 1<<20, time.Minute)
	reviewLose(r)
	c1.CloseNow()
	return r
}

// reviewWroteThenLost is a client's resumable tunnel that wrote data (its
// peer read it all, acknowledging none) and then lost its connection.
func reviewWroteThenLost(t *testing.T, data []byte) *ResumableConn {
	c1, s1 := reviewPipe(t)
	r := newResumable(c1, true, 1<<20, time.Minute)
	drained := reviewGo(func() { io.Copy(io.Discard, s1) })
	if _, err := r.Write(data); err != nil {
		t.Fatal(err)
	}
	reviewLose(r)
	c1.CloseNow()
	drained()
	return r
}

// reviewGo runs f in a goroutine; wait waits for its end.
func reviewGo(f func()) (wait func()) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f()
	}()
	return wg.Wait
}

// reviewHas waits (bounded) for cond, checked with r.mu held.
func reviewHas(t *testing.T, r *ResumableConn, what string, cond func() bool) {
	t.Helper()
	waitFor(t, what, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return cond()
	})
}

// TestResumeReviewCloseWriteDuringResend: a CloseWrite that lands while
// the resend after a reconnection is under way reaches the peer as its
// eof (attach took the eof into account once, before the resend, and the
// CloseWrite, finding no connection to write to, left it to the resend).
func TestResumeReviewCloseWriteDuringResend(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("resend "), 20<<10)
	r := reviewWroteThenLost(t, data)

	// The next connection: its peer reads nothing yet, so the resend of
	// all of data waits on the pipe.
	c2, s2 := reviewPipe(t)
	var attachErr error
	attached := reviewGo(func() { attachErr = r.attach(c2, 0, nil) })
	reviewHas(t, r, "the resend under way", func() bool { return r.reading == c2 && r.cur == nil })
	if err := r.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s2)
	attached()
	if attachErr != nil {
		t.Fatal(attachErr)
	}
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the peer read %d of %d bytes, then %v; want all, then io.EOF", len(got), len(data), err)
	}
	s2.SetReadDeadline(time.Time{})
	closeBoth(r, s2)
}

// reviewLostReply opens a resumable tunnel through a relay, then has the
// server take a resume of it (with the token the client holds) on a
// connection that drops before the reply is written: the server drops the
// tunnel's connection and keeps it waiting. The client, which never got
// the new token, resumes with the one before; reviewLostReply returns
// once it has, and a round trip went through.
func reviewLostReply(t *testing.T, srv *Server) (*testServer, *ResumableConn) {
	t.Helper()
	ts, _, d, tg := resumeSetup(t, srv, echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, "before")
	host, port, _ := dialer.SplitAddress("tcp", tg.addr())
	tok, recvd := rc.tokenAndReceived()

	cfg, err := Tuning{KeepAlive: -1}.config()
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	b.Close() // the reply cannot be written
	defer a.Close()
	c := newConn(a, false, cfg, nil)
	req := wire.Request{Host: host, Port: port, Resume: tok, Received: recvd}
	if err := ts.Server.resumeTunnel(c, req, &slot{token: testToken}); err == nil || errors.Is(err, errResumeServed) {
		t.Fatalf("resume with its reply lost = %v, want the write's error", err)
	}
	rc.SetDeadline(time.Now().Add(10 * time.Second))
	echoTrip(t, rc, "after")
	rc.SetDeadline(time.Time{})
	if n := rc.Resumes(); n != 1 {
		t.Fatalf("%d resumes, want 1", n)
	}
	return ts, rc
}

// resumableTokens is how many tokens s keeps for resumable tunnels.
func resumableTokens(s *Server) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.resumable)
}

// TestResumeReviewOldTokenForgotten: a resume with the token before (the
// client never got the reply that replaced it) forgets the token that
// reply carried; once the tunnel ends the server keeps no token of it.
// (The replaced token stayed in s.resumable for the server's lifetime.)
func TestResumeReviewOldTokenForgotten(t *testing.T) {
	t.Parallel()
	ts, rc := reviewLostReply(t, newServer())
	// The round trip confirmed the client's new token: that one is left.
	if n := resumableTokens(ts.Server); n != 1 {
		t.Errorf("%d resume tokens kept for one tunnel, want 1", n)
	}
	rc.Close()
	waitLive(t, ts.Server, 0)
	for i := 0; resumableTokens(ts.Server) != 0; i++ {
		if i > 500 {
			t.Fatalf("%d resume tokens kept after the tunnel's end, want 0", resumableTokens(ts.Server))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestResumeReviewDetachedGauge: spriteproxy_tunnels_detached stays at
// zero through a resume that drops an attached tunnel's connection and
// then fails to write its reply (the tunnel waits, detached, uncounted),
// the client's resume that follows, and the tunnel's end. (It read -1.)
func TestResumeReviewDetachedGauge(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.Metrics = NewMetrics()
	detached := func() float64 { return testutil.ToFloat64(srv.Metrics.detached) }
	ts, rc := reviewLostReply(t, srv)
	// The resume's "ok" is counted after its detached -1.
	waitFor(t, "the client's resume counted", func() bool {
		return testutil.ToFloat64(srv.Metrics.resumes.WithLabelValues("ok")) == 1
	})
	if g := detached(); g != 0 {
		t.Errorf("after the resume: %v tunnels detached, want 0", g)
	}
	rc.Close()
	waitLive(t, ts.Server, 0)
	if g := detached(); g != 0 {
		t.Errorf("after the tunnel's end: %v tunnels detached, want 0", g)
	}
}

// TestResumeReviewWriteWokenAfterResend: a Write that waits for the
// connection while the tunnel is detached goes on once the resend on the
// next connection is done, though the peer sends nothing. (It waited
// reading that connection with no bound, for an ack or data that the
// resend's end does not bring.)
func TestResumeReviewWriteWokenAfterResend(t *testing.T) {
	t.Parallel()
	r := reviewDetached(t)
	var werr error
	wrote := reviewGo(func() { _, werr = r.Write([]byte("x")) })
	reviewHas(t, r, "the Write waiting", func() bool { return r.waiters > 0 })

	c2, s2 := reviewPipe(t)
	var attachErr error
	attached := reviewGo(func() { attachErr = r.attach(c2, 0, nil) })
	// The Write, woken by the new connection while the resend is under
	// way (its ack waits on the pipe), reads that connection for acks.
	waitFor(t, "the Write reading the new connection", func() bool { return c2.reading.Load() > 0 })
	s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	_, err := io.ReadFull(s2, b)
	attached()
	if attachErr != nil {
		t.Fatal(attachErr)
	}
	if err != nil || b[0] != 'x' {
		r.CloseWithError(nil)
		wrote()
		t.Fatalf("the peer read %q, %v; want the Write's x", b, err)
	}
	wrote()
	if werr != nil {
		t.Fatal(werr)
	}
	s2.SetReadDeadline(time.Time{})
	closeBoth(r, s2)
}

// reviewCloseDuringWrite has a Write hand a segment of the send buffer to
// a connection that has not yet copied it (the connection is busy with a
// control frame its peer does not read yet), detaches that connection,
// closes the tunnel, takes chunks from the pool and scribbles on them as
// another tunnel would, then lets the peer read: it says whether the peer
// got other bytes than those written.
func reviewCloseDuringWrite(t *testing.T) bool {
	c1, s1 := reviewPipe(t)
	r := newResumable(c1, true, 1<<20, time.Minute)
	c1.ctrlMu.Lock()
	c1.ctrl.ack, c1.ctrl.ackN = true, 1
	c1.ctrlMu.Unlock()
	c1.ctrlPending.Store(true) // the Write sends it first, and waits on the pipe
	data := bytes.Repeat([]byte("0123456789abcdef"), resumeChunk/16)
	wrote := reviewGo(func() { r.Write(data) })
	reviewHas(t, r, "the Write's segment handed on", func() bool { return r.sent == int64(len(data)) })
	reviewLose(r)
	r.CloseWithError(errors.New("test's end"))
	var taken []*[]byte
	for range 8 {
		b := chunkPool.Get().(*[]byte)
		for i := range *b {
			(*b)[i] = 0xEE
		}
		taken = append(taken, b)
	}
	s1.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(data))
	_, err := io.ReadFull(s1, got)
	wrote()
	for _, b := range taken {
		chunkPool.Put(b)
	}
	if err != nil {
		t.Fatalf("the peer read: %v", err)
	}
	return !bytes.Equal(got, data)
}

// TestResumeReviewCloseDuringWrite: Close leaves the send buffer's chunks
// to a Write that still sends one of them (on a connection detached
// meanwhile): they go back to the pool once it is done, not under it.
// (closeWith gave them back at once: the Write sent what another user of
// the pool wrote there.) A chunk given back may not be the next one
// taken (under -race the pool drops a quarter of them), hence the tries.
func TestResumeReviewCloseDuringWrite(t *testing.T) {
	t.Parallel()
	for i := range 4 {
		if reviewCloseDuringWrite(t) {
			t.Fatalf("try %d: the Write sent bytes of a chunk given back to the pool", i)
		}
	}
}
