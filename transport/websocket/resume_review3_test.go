package websocket

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// A review of the resume extension (2026-12-04). Each test here failed on
// the code as reviewed (126e0c2), because of the bug its comment names,
// and passes with its fix. They use the pipe
// helpers of resume_review_test.go (reviewPipe, reviewLose, reviewGo,
// reviewHas).

// TestResumeCloseDuringResendIsReset: Close on a tunnel whose resend
// (after a reconnection) is still under way when the close timeout is
// spent sends a clean close frame (1000) behind a partial resend: the peer
// reads a clean end of stream with bytes missing that Write had reported
// written. closeWith stops waiting for the resend after closeTimeout, bumps
// the generation (the resend stops at its next step) and calls Conn.Close
// on the resend's connection.
func TestResumeCloseDuringResendIsReset(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("resend "), 30<<10) // ~210 KB: four segments
	r := reviewWroteThenLost(t, data)
	r.closeTimeout = 100 * time.Millisecond // the default is 2 s; a 4 MiB resend on a slow link takes longer

	// The next connection: its peer does not read yet, so the resend
	// (first its ack) waits on the pipe.
	c2, s2 := reviewPipe(t)
	attached := reviewGo(func() { r.attach(c2, 0, nil) })
	reviewHas(t, r, "the resend under way", func() bool { return r.reading == c2 && r.cur == nil })
	var closeErr error
	closed := reviewGo(func() { closeErr = r.Close() })
	// Close gives up waiting for the resend (closeTimeout) and detaches.
	reviewHas(t, r, "Close past its wait", func() bool { return r.closed })
	// Now the peer reads: whatever it gets, a clean io.EOF must mean all
	// of data.
	s2.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(s2)
	attached()
	closed()
	s2.Close()
	if err == nil && !bytes.Equal(got, data) {
		t.Fatalf("the peer read %d of %d bytes, then a clean end of stream (Close returned %v): a cut stream read as complete", len(got), len(data), closeErr)
	}
	if !bytes.Equal(got, data) && !errors.Is(closeErr, dialer.ErrTunnelClosed) {
		t.Fatalf("the peer lacks %d bytes and Close returned %v, want an error matching ErrTunnelClosed", len(data)-len(got), closeErr)
	}
}

// TestResumeCopyFromWokenAfterResend: CopyFrom that waits for a connection
// while the tunnel is detached goes on once the resend on the next
// connection is done, though the peer sends nothing. fill (and
// awaitConnLocked) read that connection for acks with the write deadline
// as the only bound (none here): the resend's end (r.cur set, a
// broadcast) is not seen until the peer sends something. Write had the
// same bug and was fixed with ackReadStep (TestResumeReviewWriteWokenAfterResend);
// CopyFrom was not.
func TestResumeCopyFromWokenAfterResend(t *testing.T) {
	t.Parallel()
	r := reviewDetached(t)
	var cerr error
	copied := reviewGo(func() { _, cerr = r.CopyFrom(strings.NewReader("x"), nil) })
	reviewHas(t, r, "CopyFrom waiting", func() bool { return r.waiters > 0 })

	c2, s2 := reviewPipe(t)
	attached := reviewGo(func() { r.attach(c2, 0, nil) })
	waitFor(t, "CopyFrom reading the new connection", func() bool { return c2.reading.Load() > 0 })
	s2.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 1)
	_, err := io.ReadFull(s2, b)
	attached()
	if err != nil || b[0] != 'x' {
		r.CloseWithError(nil)
		copied()
		t.Fatalf("the peer read %q, %v; want CopyFrom's x once the resend was done", b, err)
	}
	copied()
	if cerr != nil {
		t.Fatal(cerr)
	}
	s2.SetReadDeadline(time.Time{})
	closeBoth(r, s2)
}

// TestResumeCopyFromLaterWriteDeadline: a write deadline set while CopyFrom
// waits for acks (its send buffer full, the peer not acknowledging) ends
// the wait, as it ends Write's. fill reads the connection for acks with
// the write deadline of the time it began (none) as the read's deadline,
// and SetWriteDeadline changes only the connection's write deadline: the
// wait goes on until the peer sends something.
func TestResumeCopyFromLaterWriteDeadline(t *testing.T) {
	t.Parallel()
	c1, s1 := reviewPipe(t)
	r := newResumable(c1, true, resumeChunk, time.Minute)   // one chunk of buffer
	drained := reviewGo(func() { io.Copy(io.Discard, s1) }) // reads, never acks
	src := bytes.NewReader(make([]byte, 4*resumeChunk))
	var cerr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, cerr = r.CopyFrom(src, nil)
	}()
	reviewHas(t, r, "the send buffer full", func() bool { return r.sent-r.acked == r.bufMax })
	waitFor(t, "CopyFrom reading for acks", func() bool { return c1.reading.Load() > 0 })
	r.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	select {
	case <-done:
		if !errors.Is(cerr, os.ErrDeadlineExceeded) {
			t.Errorf("CopyFrom = %v, want a deadline error", cerr)
		}
	case <-time.After(3 * time.Second):
		r.CloseWithError(nil)
		<-done
		drained()
		t.Fatalf("CopyFrom still waiting for acks 3 s after its write deadline passed (it returned %v once closed)", cerr)
	}
	r.CloseWithError(nil)
	drained()
}

// TestResumeOverlappingResumesOneAttaches: two resumes of one detached tunnel, the second
// coming while the first writes its reply, both attach: resumeTunnel
// detaches only the connection the tunnel reads at the time (none: the
// first has not attached yet), and attach does not check that its resume
// is still the tunnel's. The second attach overwrites the first's
// connection and its release channel: the first resume's goroutine waits
// on <-done for good (and its connection is never closed), even after the
// tunnel's Close. A client holding the bearer and resume tokens (or a
// relay that replays an upgrade) leaks a server goroutine and a socket
// per try.
func TestResumeOverlappingResumesOneAttaches(t *testing.T) {
	t.Parallel()
	cfg, err := Tuning{KeepAlive: -1}.config()
	if err != nil {
		t.Fatal(err)
	}
	s := newServer()
	pipeConn := func() (cl, sv *Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		cl, sv = newConn(a, true, cfg, nil), newConn(b, false, cfg, nil)
		cl.halfClose, cl.resume = true, true
		return cl, sv
	}
	// A resumable tunnel, then detached (its connection lost).
	_, c0 := pipeConn()
	c0.halfClose, c0.resume = true, true
	c0.resumeTok, c0.resumeGrace = newResumeToken(), time.Minute
	tok := c0.resumeTok
	r := s.newServerResumable(c0, &slot{token: testToken})
	reviewLose(r)
	c0.CloseNow()
	h0 := sha256.Sum256([]byte(tok))

	req := wire.Request{Host: "localhost", Port: 1, Features: []string{"half_close", "resume"}, Resume: tok}
	clA, svA := pipeConn()
	clB, svB := pipeConn()
	var errA, errB error
	doneA := make(chan struct{})
	go func() { defer close(doneA); errA = s.resumeTunnel(svA, req, &slot{token: testToken}) }()
	// A has taken the tunnel (new token issued) and now writes its reply,
	// which waits on the pipe.
	reviewHas(t, r, "resume A past its checks", func() bool { return r.hasOld && r.oldHash == h0 })
	r.mu.Lock()
	tokA := r.tokHash
	r.mu.Unlock()
	doneB := make(chan struct{})
	go func() { defer close(doneB); errB = s.resumeTunnel(svB, req, &slot{token: testToken}) }()
	reviewHas(t, r, "resume B past its checks", func() bool { return r.tokHash != tokA })

	// A's reply is read: A, superseded by B meanwhile, attaches nothing
	// and ends, its connection closed.
	if _, err := clA.readMessage(); err != nil {
		t.Fatal(err)
	}
	drainA := reviewGo(func() { io.Copy(io.Discard, clA) })
	select {
	case <-doneA:
	case <-time.After(3 * time.Second):
		r.Close()
		svA.CloseNow()
		<-doneA
		t.Fatal("resume A, superseded by B, still held 3 s after its reply: its goroutine and connection leak")
	}
	if !errors.Is(errA, errResumeSuperseded) || !svA.state().closed() {
		t.Fatalf("resume A ended with %v (connection closed: %v), want errResumeSuperseded and closed", errA, svA.state().closed())
	}
	drainA()
	// B's reply is read: B attaches, and the tunnel's Close ends it.
	if _, err := clB.readMessage(); err != nil {
		t.Fatal(err)
	}
	drainB := reviewGo(func() { io.Copy(io.Discard, clB) })
	reviewHas(t, r, "resume B attached", func() bool { return r.reading == svB && r.cur == svB })
	r.Close()
	<-doneB
	drainB()
	_ = errB
}

// TestResumePendingBoundedByPeerBuffer: a Write that waits for acks reads the
// connection for them and keeps the data that comes meanwhile (pending),
// "acknowledged only once Read hands it on, so the peer's buffer bounds
// it". Nothing checks that bound: a peer that sends past the buffer it
// announced (resume_buffer) and past what we acknowledged has all of it
// kept in memory by a tunnel whose application writes and does not read.
// (Marked: hostile peer only; the fix is a check, recvd-ackedOut over the
// peer's buffer being inconsistent, or stopping reading for the writer
// at that point.)
func TestResumePendingBoundedByPeerBuffer(t *testing.T) {
	t.Parallel()
	c1, s1 := reviewPipe(t)
	c1.peerBuf = 64 << 10 // what the peer said in its first message
	r := newResumable(c1, true, resumeChunk, time.Minute)
	drained := reviewGo(func() { io.Copy(io.Discard, s1) })
	var werr error
	wrote := reviewGo(func() { _, werr = r.Write(make([]byte, 2*resumeChunk)) }) // waits for acks that never come
	const flood = 4 << 20
	sent := reviewGo(func() {
		b := make([]byte, 64<<10)
		for n := 0; n < flood; n += len(b) {
			if _, err := s1.Write(b); err != nil {
				return
			}
		}
	})
	sent() // each of the peer's writes returned: the Write read them all
	r.mu.Lock()
	kept := len(r.pending)
	r.mu.Unlock()
	r.CloseWithError(nil)
	wrote()
	drained()
	_ = werr
	if kept > 2*int(c1.peerBuf) {
		t.Fatalf("the tunnel keeps %d bytes its application never read, from a peer whose buffer is %d bytes (nothing of it acknowledged)", kept, c1.peerBuf)
	}
}

// TestResumeCloseWriteLossResumes: a connection lost under CloseWrite
// (its eof's write fails with the socket's EPIPE) is a drop, to be
// resumed, as it is under Write. Conn.closeWriteLocked records our fin
// (finSent) whether or not the eof went out, so isLoss then finds the
// direction not writable and takes the socket's EPIPE for "the Conn's own
// rule": ResumableConn.CloseWrite ends the tunnel for good with it
// (failLocked) instead of detaching it. (Conn.lost's AfterEnd goroutine
// may detach it first; the synchronous path wins nearly always, hence the
// tries.) The write side's shutdown stands in for a connection that
// failed: the write gets the same EPIPE.
func TestResumeCloseWriteLossResumes(t *testing.T) {
	t.Parallel()
	cfg, err := Tuning{KeepAlive: -1}.config()
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	var last error
	const tries = 10
	for range tries {
		a, b := testnet.TCPPair(t)
		cl, sv := newConn(a, true, cfg, nil), newConn(b, false, cfg, nil)
		cl.halfClose, sv.halfClose = true, true
		cl.resume, sv.resume = true, true
		r := newResumable(sv, false, 1<<20, time.Minute) // the server's side: a loss arms the grace
		b.(*net.TCPConn).CloseWrite()                    // every write from now fails with EPIPE
		cwErr := r.CloseWrite()
		r.mu.Lock()
		final := r.final
		r.mu.Unlock()
		if final != nil {
			failed++
			last = fmt.Errorf("CloseWrite = %v, the tunnel's end: %v", cwErr, final)
		}
		r.CloseWithError(nil)
		cl.CloseNow()
	}
	if failed > 0 {
		t.Fatalf("%d of %d tries: a connection lost under CloseWrite ended the tunnel for good instead of a drop (%v)", failed, tries, last)
	}
}
