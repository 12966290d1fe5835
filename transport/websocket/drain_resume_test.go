package websocket

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// The drain rule of resume (resume_drain.go, PROTOCOL.md §9 Drain), with
// a grace far longer than the tests: Shutdown never waits for it.
const drainTestGrace = 10 * time.Minute

// endRecorder is a target that echoes and reports how each of its
// connections ended: nil for a clean end of stream.
func endRecorder(ends chan<- error) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		_, err := io.Copy(c, c)
		ends <- err
	}
}

// detachedCount is how many of the server's resumable tunnels wait
// detached for their client.
func detachedCount(s *Server) int {
	s.mu.Lock()
	rs := s.resumablesLocked()
	s.mu.Unlock()
	n := 0
	for _, r := range rs {
		r.mu.Lock()
		if r.reading == nil && r.final == nil && !r.closed {
			n++
		}
		r.mu.Unlock()
	}
	return n
}

// waitResumed waits for the client's tunnel c to be resumed once and its
// resend done. (A Write during the resend reads the connection for acks
// with no deadline and does not see the resend end: resume.go's matter,
// kept out of these tests.)
func waitResumed(t *testing.T, c net.Conn) {
	t.Helper()
	r := c.(*ResumableConn)
	waitFor(t, "the client's resume", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.resumes == 1 && r.cur != nil
	})
}

// TestDrainResumeDetachedEnds: once Shutdown has begun nothing can resume
// a tunnel (the listener is closed, upgrades get 503), so a detached
// tunnel, whether detached before Shutdown or during it, ends at once:
// Shutdown returns as soon as the attached tunnels have ended, without
// waiting for the grace or its own deadline; the targets are reset, not
// ended cleanly; and the clients, which find nothing where the server
// was, end with "tunnel gone". Before the rule, Shutdown waited for the
// detached tunnels until its deadline.
func TestDrainResumeDetachedEnds(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.ResumeGrace = drainTestGrace
	ends := make(chan error, 4)
	ts, rlA, d, tg := resumeSetup(t, srv, endRecorder(ends))
	rlB := startCutRelay(t, strings.TrimPrefix(ts.URL, "http://"))
	dB := ts.dialer()
	dB.BaseURL, dB.DisableResume = rlB.url(), false

	// A: detached before Shutdown.
	a, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	echoTrip(t, a, "a")
	// B: resumed once, then attached when Shutdown begins.
	b, err := dB.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	echoTrip(t, b, "b")
	rlB.cut()
	waitResumed(t, b)
	echoTrip(t, b, "b again")
	if n := b.(*ResumableConn).Resumes(); n != 1 {
		t.Fatalf("B resumed %d times, want 1", n)
	}

	rlA.setRefuse(true)
	rlA.cut()
	waitFor(t, "A detached on the server", func() bool { return detachedCount(srv) == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	waitFor(t, "Shutdown to begin", srv.Draining)
	// B loses its connection during Shutdown: it cannot come back either.
	rlB.setRefuse(true)
	rlB.cut()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown = %v, want nil: no tunnel could still end on its own", err)
	}
	if n := srv.Live(); n != 0 {
		t.Errorf("Live() = %d after Shutdown, want 0", n)
	}
	for i := range 2 {
		select {
		case err := <-ends:
			if err == nil {
				t.Errorf("target connection %d ended cleanly; want a reset", i)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("target connection %d still open after Shutdown", i)
		}
	}

	// Nothing listens where the server was: the clients end with gone.
	testnet.CloseRefusing(t, rlA.ln)
	testnet.CloseRefusing(t, rlB.ln)
	for _, x := range []struct {
		name string
		c    net.Conn
	}{{"A", a}, {"B", b}} {
		x.c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, err := x.c.Read(make([]byte, 1))
		var re *dialer.ResumeError
		if !errors.As(err, &re) || re.Reason != dialer.ResumeGone || !errors.Is(err, dialer.ErrTunnelClosed) {
			t.Errorf("%s: client read = %v, want a *dialer.ResumeError (tunnel gone)", x.name, err)
		}
	}
}

// TestDrainResumeResumedCutAtDeadline: a resumed tunnel still attached at
// Shutdown's deadline is cut there like any other: Shutdown returns (with
// the deadline's error) once its goroutines, the resume's handshake
// goroutine included, are done; the target is reset and the client reads
// a typed end, not a clean end of stream.
func TestDrainResumeResumedCutAtDeadline(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.ResumeGrace = drainTestGrace
	ends := make(chan error, 2)
	_, rl, d, tg := resumeSetup(t, srv, endRecorder(ends))
	c, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoTrip(t, c, "hello")
	rl.cut()
	waitResumed(t, c)
	echoTrip(t, c, "again")
	if n := c.(*ResumableConn).Resumes(); n != 1 {
		t.Fatalf("resumed %d times, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want the deadline's error", err)
		}
	case <-time.After(drainTestGrace / 20):
		t.Fatal("Shutdown did not return after its deadline")
	}
	if n := srv.Live(); n != 0 {
		t.Errorf("Live() = %d after Shutdown, want 0", n)
	}
	select {
	case err := <-ends:
		if err == nil {
			t.Error("the target's connection ended cleanly; want a reset")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the target's connection is still open after Shutdown")
	}
	// The resumed connection carries the cut's close frame (4001), as a
	// tunnel's first connection would: the client does not take its end
	// for a lost connection and come back for nothing.
	testnet.CloseRefusing(t, rl.ln) // (should it come back, it finds nothing: gone)
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = c.Read(make([]byte, 1))
	var ce *CloseError
	if !errors.As(err, &ce) || ce.Code != closeTargetReset || !errors.Is(err, dialer.ErrTunnelClosed) {
		t.Errorf("client read = %v, want the server's 4001 close (matching dialer.ErrTunnelClosed)", err)
	}
}
