package websocket

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
)

// resumeSetup is a server (Serve, plain) behind a relay the test cuts,
// and a Dialer that goes through the relay.
func resumeSetup(t *testing.T, srv *Server, handle func(net.Conn)) (*testServer, *cutRelay, *Dialer, *target) {
	t.Helper()
	ts := startServerMode(t, srv, false, true)
	rl := startCutRelay(t, strings.TrimPrefix(ts.URL, "http://"))
	d := ts.dialer()
	d.BaseURL = rl.url()
	d.DisableResume = false
	return ts, rl, d, startTarget(t, handle)
}

// stream is n deterministic pseudo-random bytes from seed, written in
// writes of random sizes.
func writeStream(w io.Writer, seed uint64, n int) ([sha256.Size]byte, error) {
	rng := rand.New(rand.NewPCG(seed, seed))
	h := sha256.New()
	buf := make([]byte, 256<<10)
	for n > 0 {
		m := min(n, 1+rng.IntN(len(buf)))
		for i := range buf[:m] {
			buf[i] = byte(rng.Uint32())
		}
		h.Write(buf[:m])
		if _, err := w.Write(buf[:m]); err != nil {
			return [sha256.Size]byte{}, err
		}
		n -= m
	}
	return [sha256.Size]byte(h.Sum(nil)), nil
}

func readHash(r io.Reader, n int64) ([sha256.Size]byte, int64, error) {
	h := sha256.New()
	got, err := io.CopyN(h, r, n)
	return [sha256.Size]byte(h.Sum(nil)), got, err
}

// cutter cuts the relay's connections k times at random points while
// the test moves data; stop ends it.
func cutter(rl *cutRelay, k int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < k; i++ {
			select {
			case <-done:
				return
			case <-time.After(time.Duration(20+rand.IntN(150)) * time.Millisecond):
			}
			rl.cut()
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestResumeCutsIntact: 16 MiB each way through an echo target while the
// relay resets the connection several times: all of it arrives, intact,
// in order, with no error, and the tunnel was resumed.
func TestResumeCutsIntact(t *testing.T) {
	t.Parallel()
	_, rl, d, tg := resumeSetup(t, newServer(), echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	rc, ok := nc.(*ResumableConn)
	if !ok {
		t.Fatalf("DialSprite returned %T, want *ResumableConn", nc)
	}
	defer rc.Close()
	const n = 16 << 20
	stop := cutter(rl, 4)
	var sent [sha256.Size]byte
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sent, werr = writeStream(rc, 1, n)
		if werr == nil {
			werr = rc.CloseWrite()
		}
	}()
	got, m, rerr := readHash(rc, n)
	wg.Wait()
	stop()
	if werr != nil || rerr != nil {
		t.Fatalf("write: %v; read %d of %d bytes: %v", werr, m, n, rerr)
	}
	if got != sent {
		t.Fatal("the bytes read back differ from those sent")
	}
	if _, err := rc.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the echo's end = %v, want io.EOF", err)
	}
	if rc.Resumes() == 0 {
		t.Fatal("no resume happened: the cuts missed the tunnel")
	}
	t.Logf("%d resumes", rc.Resumes())
}

// sinkThenSend reads n bytes, then sends n bytes of stream 2 back.
func sinkThenSend(n int) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		if _, err := io.CopyN(io.Discard, c, int64(n)); err != nil {
			return
		}
		writeStream(c, 2, n)
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	}
}

// TestResumeWriteOnlyThenRead: an application that writes 16 MiB without
// reading (the acks it needs arrive on the read side), then reads the
// reply, with cuts: no deadlock, nothing lost.
func TestResumeWriteOnlyThenRead(t *testing.T) {
	t.Parallel()
	const n = 16 << 20
	_, rl, d, tg := resumeSetup(t, newServer(), sinkThenSend(n))
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	stop := cutter(rl, 3)
	if _, err := writeStream(nc, 1, n); err != nil {
		t.Fatal(err)
	}
	want, _ := writeStream(io.Discard, 2, n)
	got, m, err := readHash(nc, n)
	stop()
	if err != nil {
		t.Fatalf("read %d of %d: %v", m, n, err)
	}
	if got != want {
		t.Fatal("reply differs")
	}
}

// TestResumeGraceExpires: the relay cuts and refuses from then on; with
// a 1 s grace both sides give up with the typed error, and the server
// frees the slot.
func TestResumeGraceExpires(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.ResumeGrace = time.Second
	var logs bytes.Buffer
	var lmu sync.Mutex
	srv.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &lmu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	got := make(chan error, 1)
	ts, rl, d, tg := resumeSetup(t, srv, func(c net.Conn) {
		defer c.Close()
		_, err := io.Copy(io.Discard, c)
		got <- err
	})
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	rl.setRefuse(true)
	rl.cut()
	_, err = nc.Read(make([]byte, 1))
	var re *dialer.ResumeError
	if !errors.Is(err, dialer.ErrTunnelClosed) || !errors.As(err, &re) || err == io.EOF {
		t.Fatalf("client read = %v, want a *dialer.ResumeError", err)
	}
	if re.Reason != dialer.ResumeGraceExpired {
		t.Errorf("reason %q, want %q", re.Reason, dialer.ResumeGraceExpired)
	}
	// The server's grace ends the tunnel: the target is reset, not ended.
	if err := <-got; err == nil {
		t.Error("the target's connection ended cleanly; want a reset")
	}
	waitLive(t, ts.Server, 0)
	lmu.Lock()
	defer lmu.Unlock()
	if tok := nc.(*ResumableConn).token; strings.Contains(logs.String(), tok) {
		t.Error("the server logged a resume token")
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitLive waits (bounded) for the server's live tunnels to be n.
func waitLive(t *testing.T, s *Server, n int) {
	t.Helper()
	for i := 0; s.Live() != n; i++ {
		if i > 500 {
			t.Fatalf("Live() = %d, want %d", s.Live(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// echoTrip writes s and reads it back through an echo.
func echoTrip(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(s))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != s {
		t.Fatalf("read back %q, %v; want %q", b, err, s)
	}
}

func (r *ResumableConn) tokenAndReceived() (string, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.token, r.recvd
}

// TestResumeSecurity: a resume with another bearer token is forbidden and
// leaves the tunnel alone; a token used up by a resume is gone; a
// received count outside what was sent is inconsistent, and ends the
// tunnel for good.
func TestResumeSecurity(t *testing.T) {
	t.Parallel()
	const other = "other-token"
	srv := newServer()
	srv.Auth = AuthFunc(func(_ context.Context, tok, _ string) error {
		if tok == testToken || tok == other {
			return nil
		}
		return errors.New("no")
	})
	ts, rl, d, tg := resumeSetup(t, srv, echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, "a")
	host, port, _ := dialer.SplitAddress("tcp", tg.addr())
	tok, recvd := rc.tokenAndReceived()

	// Another bearer token.
	thief := ts.dialer()
	thief.Token = other
	thief.DisableResume = false
	_, _, err = thief.resumeDial(testCtx(t), "box", host, port, tok, recvd, "")
	var re *dialer.ResumeError
	if !errors.As(err, &re) || re.Reason != dialer.ResumeRevoked || !errors.Is(err, dialer.ErrForbidden) {
		t.Fatalf("resume with another token = %v, want forbidden", err)
	}
	echoTrip(t, rc, "b")
	if rc.Resumes() != 0 {
		t.Fatal("the refused resume disturbed the tunnel")
	}

	// A cut: the tunnel resumes; the old token, once the client has
	// spoken on the new connection, is used up.
	rl.cut()
	echoTrip(t, rc, "c")
	if rc.Resumes() != 1 {
		t.Fatalf("%d resumes, want 1", rc.Resumes())
	}
	owner := ts.dialer()
	owner.DisableResume = false
	_, _, err = owner.resumeDial(testCtx(t), "box", host, port, tok, recvd, "")
	if !errors.As(err, &re) || re.Reason != dialer.ResumeGone {
		t.Fatalf("replayed token = %v, want gone", err)
	}
	echoTrip(t, rc, "d")

	// Offsets outside [acked, sent]: the tunnel ends for good.
	tok, _ = rc.tokenAndReceived()
	_, _, err = owner.resumeDial(testCtx(t), "box", host, port, tok, 1<<40, "")
	if !errors.As(err, &re) || re.Reason != dialer.ResumeInconsistent {
		t.Fatalf("bad offsets = %v, want inconsistent", err)
	}
	if _, err := rc.Read(make([]byte, 1)); err == nil || err == io.EOF || !errors.Is(err, dialer.ErrTunnelClosed) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after the inconsistent resume = %v, want the tunnel cut", err)
	}
	waitLive(t, ts.Server, 0)
}

// TestResumeServerDisabled: a server with DisableResume gives the client
// a plain *Conn.
func TestResumeServerDisabled(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.DisableResume = true
	_, _, d, tg := resumeSetup(t, srv, echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, ok := nc.(*Conn); !ok {
		t.Fatalf("DialSprite returned %T, want *Conn", nc)
	}
	echoTrip(t, nc, "x")
}

// TestResumeSilentDrop: the connection goes silent (no reset, no FIN):
// the dead-peer rule finds it gone on both sides, and the tunnel is
// carried on over a new connection.
func TestResumeSilentDrop(t *testing.T) {
	t.Parallel()
	tune := Tuning{KeepAlive: 50 * time.Millisecond, DeadPeerTimeout: 300 * time.Millisecond}
	srv := newServer()
	srv.Tuning = tune
	_, rl, d, tg := resumeSetup(t, srv, echo)
	d.Tuning = tune
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, "before")
	rl.freeze()
	rc.SetDeadline(time.Now().Add(10 * time.Second))
	echoTrip(t, rc, "after the drop")
	if rc.Resumes() == 0 {
		t.Fatal("no resume: the tunnel never noticed the drop")
	}
}

// TestResumeIdle: a tunnel that neither reads nor writes when its
// connection is reset is resumed all the same (its keep-alive finds the
// connection gone), before the server's grace runs out.
func TestResumeIdle(t *testing.T) {
	t.Parallel()
	tune := Tuning{KeepAlive: 50 * time.Millisecond, DeadPeerTimeout: 300 * time.Millisecond}
	srv := newServer()
	srv.Tuning = tune
	_, rl, d, tg := resumeSetup(t, srv, echo)
	d.Tuning = tune
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, "before")
	rl.cut()
	for i := 0; rc.Resumes() == 0; i++ {
		if i > 500 {
			t.Fatal("the idle tunnel was not resumed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	echoTrip(t, rc, "after")
}

// TestResumeIdleHoldsNoBuffer: once everything sent is acknowledged, a
// resumable tunnel gives its send buffer back (an idle tunnel holds none).
func TestResumeIdleHoldsNoBuffer(t *testing.T) {
	t.Parallel()
	_, _, d, tg := resumeSetup(t, newServer(), echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	rc := nc.(*ResumableConn)
	echoTrip(t, rc, strings.Repeat("x", 200<<10))
	held := func() (int, int64) {
		rc.mu.Lock()
		defer rc.mu.Unlock()
		return len(rc.chunks), rc.sent - rc.acked
	}
	for i := 0; ; i++ {
		chunks, unacked := held()
		if chunks == 0 && unacked == 0 {
			break
		}
		if i > 500 {
			t.Fatalf("idle tunnel holds %d chunks, %d bytes unacknowledged", chunks, unacked)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestResumeWithReuse: a resumable tunnel closed cleanly leaves its
// connection for the next tunnel (resume and reuse combine).
func TestResumeWithReuse(t *testing.T) {
	t.Parallel()
	_, _, d, tg := resumeSetup(t, newServer(), echo)
	defer d.CloseIdleConnections()
	for i := range 2 {
		nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := nc.(*ResumableConn); !ok {
			t.Fatalf("tunnel %d is a %T", i, nc)
		}
		echoTrip(t, nc, "hi")
		if err := nc.Close(); err != nil {
			t.Fatal(err)
		}
		if n := d.IdleConnections(); n != 1 {
			t.Fatalf("after tunnel %d: %d idle connections, want 1", i, n)
		}
	}
}

// TestResumeWriteAfterPeerEOF: the far side ends its output first, the
// application reads that end and then writes 16 MiB without reading: the
// acks, which follow the peer's eof, still come in.
func TestResumeWriteAfterPeerEOF(t *testing.T) {
	t.Parallel()
	const n = 16 << 20
	got := make(chan [sha256.Size]byte, 1)
	_, _, d, tg := resumeSetup(t, newServer(), func(c net.Conn) {
		defer c.Close()
		c.Write([]byte("x"))
		c.(*net.TCPConn).CloseWrite()
		h, _, _ := readHash(c, n)
		got <- h
	})
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(15 * time.Second))
	if b, err := io.ReadAll(nc); err != nil || string(b) != "x" {
		t.Fatalf("read %q, %v", b, err)
	}
	want, err := writeStream(nc, 3, n)
	if err != nil {
		t.Fatal(err)
	}
	if h := <-got; h != want {
		t.Fatal("the target got other bytes")
	}
}

// TestResumeServerGone: nothing listens where the server was (its process
// died, and with it the tunnel): the tunnel ends at once, tunnel gone,
// instead of retrying for the whole grace.
func TestResumeServerGone(t *testing.T) {
	t.Parallel()
	_, rl, d, tg := resumeSetup(t, newServer(), echo)
	nc, err := d.DialSprite(testCtx(t), "box", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	echoTrip(t, nc, "a")
	testnet.CloseRefusing(t, rl.ln)
	rl.cut()
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = nc.Read(make([]byte, 1))
	var re *dialer.ResumeError
	if !errors.As(err, &re) || re.Reason != dialer.ResumeGone || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("read = %v, want tunnel gone (connection refused)", err)
	}
}
