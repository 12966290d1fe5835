package websocket

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// Tests of the reuse extension: a tunnel closed cleanly leaves its
// connection for the next tunnel to the same sprite.

// reuseDialer is ts.dialer(), its idle connections closed by cleanup (which
// runs before the server's, registered earlier).
func reuseDialer(t testing.TB, ts *testServer) *Dialer {
	d := ts.dialer()
	t.Cleanup(d.CloseIdleConnections)
	return d
}

// dialTo opens a tunnel through d to addr in sprite.
func dialTo(t *testing.T, d *Dialer, sprite, addr string) *Conn {
	t.Helper()
	c, err := d.DialSprite(testCtx(t), sprite, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*Conn)
}

// dialOn opens a tunnel to addr in sprite "s" that must be on the
// connection *on, or, if *on is nil, sets *on to the tunnel's connection.
func dialOn(t *testing.T, d *Dialer, addr string, on *net.Conn) *Conn {
	t.Helper()
	c := dialTo(t, d, "s", addr)
	if *on == nil {
		*on = c.NetConn()
	} else if c.NetConn() != *on {
		t.Fatalf("the tunnel to %s is on a new connection, not the one it should reuse", addr)
	}
	return c
}

// payload is stream i's bytes: a tag naming i, then n random bytes.
func payload(i, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	p := fmt.Appendf(nil, "stream %03d|", i)
	for range n {
		p = append(p, byte(r.Uint32()))
	}
	return p
}

// streamIndex reads back the i of a payload's tag.
func streamIndex(p []byte) int {
	tag, _, ok := bytes.Cut(p, []byte("|"))
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(strings.TrimPrefix(string(tag), "stream "))
	if err != nil {
		return -1
	}
	return i
}

// roundTrip writes p on c and reads exactly as many bytes back from the echo.
func roundTrip(t *testing.T, c net.Conn, p []byte) {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(p))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read the echo: %v", err)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("echo of %d bytes differs (got tag %q, want %q)", len(p), got[:min(len(got), 10)], p[:min(len(p), 10)])
	}
}

// finishEcho half-closes c and checks that the echo ends with exactly p:
// nothing of another stream got in.
func finishEcho(t *testing.T, c *Conn, p []byte) {
	t.Helper()
	if _, err := c.Write(p); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read to EOF: %v", err)
	}
	if !bytes.Equal(all, p) {
		t.Fatalf("stream read %d bytes (tag %q), want exactly the %d sent (tag %q)", len(all), all[:min(len(all), 10)], len(p), p[:min(len(p), 10)])
	}
}

// closeReused closes c and checks that its connection went to d's pool.
func closeReused(t *testing.T, d *Dialer, c *Conn, wantIdle int) {
	t.Helper()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := d.IdleConnections(); n != wantIdle {
		t.Fatalf("%d idle connections after Close, want %d", n, wantIdle)
	}
}

// recv waits a bounded time for a value on ch.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitFor polls cond, for what a timer or another goroutine brings about
// with no event to wait on, for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recordingEcho is echo, reporting on got every byte the connection
// received.
func recordingEcho(got chan<- []byte) func(net.Conn) {
	return func(c net.Conn) {
		var buf bytes.Buffer
		io.Copy(c, io.TeeReader(c, &buf))
		c.(*net.TCPConn).CloseWrite()
		got <- buf.Bytes()
	}
}

// notifyListener reports on closed each accepted connection closed (by the
// server: the client's end cannot close it).
type notifyListener struct {
	net.Listener
	closed chan struct{}
}

func (l *notifyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &notifyConn{Conn: c, closed: l.closed}, nil
}

type notifyConn struct {
	net.Conn
	once   sync.Once
	closed chan<- struct{}
}

func (c *notifyConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		select {
		case c.closed <- struct{}{}:
		default:
		}
	})
	return err
}

// startServerNotify is startServerMode (no TLS) on a listener that reports
// the connections the server closes.
func startServerNotify(t *testing.T, srv *Server, direct bool) (*testServer, <-chan struct{}) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &notifyListener{Listener: inner, closed: make(chan struct{}, 64)}
	ts := &testServer{Server: srv, URL: "http://" + inner.Addr().String()}
	serveOn(t, srv, ln, direct)
	return ts, ln.closed
}

// TestReuseSequential runs tunnels one after another: each goes on the
// connection the one before left, and carries its own bytes only, both
// ways.
func TestReuseSequential(t *testing.T) {
	t.Parallel()
	sizes := []int{0, 1, 200, 245, 246, 4 << 10, 70 << 10, 300 << 10}
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := map[bool]string{false: "ws-", true: "wss-"}[useTLS] + m.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				const n = 20
				got := make(chan []byte, n)
				tg := startTarget(t, recordingEcho(got))
				ts := startServerMode(t, newServer(), useTLS, m.direct)
				d := reuseDialer(t, ts)
				var first net.Conn
				sent := make([][]byte, n)
				for i := range n {
					c := dialTo(t, d, "s", tg.addr())
					if !c.Reuse() {
						t.Fatalf("tunnel %d: Reuse() = false", i)
					}
					if i == 0 {
						first = c.NetConn()
					} else if c.NetConn() != first {
						t.Fatalf("tunnel %d is on a new connection, not the first one's", i)
					}
					if k := d.IdleConnections(); k != 0 {
						t.Fatalf("tunnel %d: %d idle connections while the only one is in use", i, k)
					}
					sent[i] = payload(i, sizes[i%len(sizes)])
					roundTrip(t, c, sent[i])
					closeReused(t, d, c, 1)
				}
				// Upstream too: each target connection received exactly
				// its own stream.
				for range n {
					b := recv(t, got, "a target connection's end")
					i := streamIndex(b)
					if i < 0 || i >= n || !bytes.Equal(b, sent[i]) {
						t.Fatalf("a target connection received %d bytes (tag %q) that are not one stream's", len(b), b[:min(len(b), 10)])
					}
					sent[i] = nil // each once
				}
				if ts.Live() > 1 {
					t.Fatalf("%d tunnels live with none open", ts.Live())
				}
			})
		}
	}
}

// TestReuseHalfClose: a stream half-closed by the client, its echo read to
// EOF, leaves the connection for the next.
func TestReuseHalfClose(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			var first net.Conn
			for i := range 4 {
				c := dialOn(t, d, tg.addr(), &first)
				finishEcho(t, c, payload(i, 10_000*i))
				closeReused(t, d, c, 1)
			}
			// CloseWrite, then Close at once: Close reads the echo and the
			// server's eof off on its way to the end.
			c := dialOn(t, d, tg.addr(), &first)
			if _, err := c.Write(payload(9, 50_000)); err != nil {
				t.Fatal(err)
			}
			if err := c.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			closeReused(t, d, c, 1)
			c = dialOn(t, d, tg.addr(), &first)
			finishEcho(t, c, payload(10, 100))
			closeReused(t, d, c, 1)
		})
	}
}

// TestReuseCloseMidStream: a client that closes while the target is still
// sending (8 MiB it never gets to the end of) closes promptly, leaves the
// connection for the next tunnel, and none of the old stream reaches it.
func TestReuseCloseMidStream(t *testing.T) {
	t.Parallel()
	big := bytes.Repeat([]byte("flood "), (8<<20)/6)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			flood := startTarget(t, func(c net.Conn) {
				c.Write(big) // never reads
			})
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			for i := range 3 {
				c := dialTo(t, d, "s", flood.addr())
				nc := c.NetConn()
				if _, err := io.ReadFull(c, make([]byte, 64<<10)); err != nil {
					t.Fatalf("read the flood: %v", err)
				}
				start := time.Now()
				if err := c.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				if el := time.Since(start); el > time.Second {
					t.Errorf("Close mid-stream took %v", el)
				}
				if n := d.IdleConnections(); n != 1 {
					t.Fatalf("round %d: %d idle connections after Close mid-stream, want 1 (the connection was not reused)", i, n)
				}
				c2 := dialOn(t, d, tg.addr(), &nc)
				finishEcho(t, c2, payload(i, 1000))
				closeReused(t, d, c2, 1)
			}
		})
	}
}

// TestReuseTargetEndsFirst: the target replies and closes; the client reads
// to EOF, closes, and the connection carries the next tunnel.
func TestReuseTargetEndsFirst(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			banner := startTarget(t, func(c net.Conn) {
				io.WriteString(c, "banner of "+c.LocalAddr().String())
			})
			want := "banner of " + banner.addr()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			var first net.Conn
			for i := range 3 {
				c := dialOn(t, d, banner.addr(), &first)
				all, err := io.ReadAll(c)
				if err != nil || string(all) != want {
					t.Fatalf("read %q, %v; want %q then EOF", all, err, want)
				}
				closeReused(t, d, c, 1)

				c2 := dialOn(t, d, tg.addr(), &first)
				finishEcho(t, c2, payload(i, 3000))
				closeReused(t, d, c2, 1)
			}
		})
	}
}

// TestReuseOldConnInert: once closed, a tunnel's *Conn no longer reaches
// its connection, which carries the next tunnel: deadlines, reads, writes
// and closes on it fail or do nothing.
func TestReuseOldConnInert(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			old := dialTo(t, d, "s", tg.addr())
			roundTrip(t, old, payload(0, 100))
			closeReused(t, d, old, 1)

			next := dialTo(t, d, "s", tg.addr())
			if next.NetConn() != old.NetConn() {
				t.Fatal("the next tunnel is on a new connection")
			}
			if err := old.SetDeadline(time.Now()); !errors.Is(err, net.ErrClosed) {
				t.Errorf("old SetDeadline = %v, want net.ErrClosed", err)
			}
			if err := old.SetReadDeadline(aLongTimeAgo); !errors.Is(err, net.ErrClosed) {
				t.Errorf("old SetReadDeadline = %v, want net.ErrClosed", err)
			}
			if err := old.SetWriteDeadline(aLongTimeAgo); !errors.Is(err, net.ErrClosed) {
				t.Errorf("old SetWriteDeadline = %v, want net.ErrClosed", err)
			}
			if n, err := old.Read(make([]byte, 10)); n != 0 || err == nil {
				t.Errorf("old Read = %d, %v; want an error", n, err)
			}
			if n, err := old.Write([]byte("leak")); n != 0 || !errors.Is(err, net.ErrClosed) {
				t.Errorf("old Write = %d, %v; want net.ErrClosed", n, err)
			}
			if n, err := old.ReadFrom(strings.NewReader("leak")); n != 0 || err == nil {
				t.Errorf("old ReadFrom = %d, %v; want an error", n, err)
			}
			if n, err := old.WriteTo(io.Discard); n != 0 {
				t.Errorf("old WriteTo = %d, %v; want nothing read", n, err)
			}
			old.CloseWrite() // must not send an eof into the next stream
			old.Close()
			old.CloseNow() // must not close the connection

			// The next tunnel is unharmed: no deadline, no eof, no close
			// reached it, and no stray byte.
			roundTrip(t, next, payload(1, 5000))
			finishEcho(t, next, payload(2, 5000))
			closeReused(t, d, next, 1)
			third := dialTo(t, d, "s", tg.addr())
			if third.NetConn() != old.NetConn() {
				t.Fatal("the third tunnel is on a new connection")
			}
			finishEcho(t, third, payload(3, 10))
			closeReused(t, d, third, 1)
		})
	}
}

// waitBlockedRead waits until a Read (or WriteTo) on c holds the read side,
// so that it is blocked on the connection.
func waitBlockedRead(t *testing.T, c *Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if c.reading.Load() > 0 {
			if !c.rmu.TryLock() {
				return
			}
			c.rmu.Unlock()
		}
		runtime.Gosched()
	}
	t.Fatal("the Read never started")
}

// TestReuseBlockedRead: Close while another goroutine's Read (or io.Copy,
// as a pump does) waits for data: Close returns, the Read ends, and the
// connection is still reused.
func TestReuseBlockedRead(t *testing.T) {
	t.Parallel()
	reads := map[string]func(c *Conn) error{
		"Read": func(c *Conn) error {
			_, err := c.Read(make([]byte, 10))
			return err
		},
		"io.Copy": func(c *Conn) error {
			n, err := io.Copy(io.Discard, c)
			if err == nil && n == 0 {
				err = io.EOF
			}
			return err
		},
	}
	for _, m := range modes {
		for name, read := range reads {
			t.Run(m.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				tg := startTarget(t, echo)
				ts := startServerMode(t, newServer(), false, m.direct)
				d := reuseDialer(t, ts)
				for i := range 5 {
					c := dialTo(t, d, "s", tg.addr())
					roundTrip(t, c, payload(i, 500))
					nc := c.NetConn()
					readErr := make(chan error, 1)
					go func() { readErr <- read(c) }()
					waitBlockedRead(t, c)
					closed := make(chan error, 1)
					go func() { closed <- c.Close() }()
					if err := recv(t, closed, "Close"); err != nil {
						t.Fatalf("Close: %v", err)
					}
					if err := recv(t, readErr, "the blocked Read"); err == nil {
						t.Fatal("the blocked Read returned no error")
					}
					if n := d.IdleConnections(); n != 1 {
						t.Fatalf("round %d: %d idle connections after Close with a Read blocked, want 1", i, n)
					}
					c2 := dialOn(t, d, tg.addr(), &nc)
					finishEcho(t, c2, payload(100+i, 700))
					closeReused(t, d, c2, 1)
				}
			})
		}
	}
}

// TestReuseEmptyStream: a tunnel closed without any byte either way still
// leaves its connection for the next.
func TestReuseEmptyStream(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			var first net.Conn
			for range 5 {
				c := dialOn(t, d, tg.addr(), &first)
				closeReused(t, d, c, 1)
			}
			c := dialTo(t, d, "s", tg.addr())
			finishEcho(t, c, payload(0, 100))
			closeReused(t, d, c, 1)
		})
	}
}

// resetTarget resets each connection once it has read a byte (not
// before: a reset can reach the server's dial before its connect returns).
func resetTarget(c net.Conn) {
	c.Read(make([]byte, 1))
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// TestReuseServerEndsFirst: the target resets, so the server cuts the
// stream with close 4001 (a reset is never a clean end, not even under
// reuse); the client's Read fails with ECONNRESET, its writes fail, and the
// cut connection is not kept: the next tunnel opens a fresh one, which is
// reused as usual.
func TestReuseServerEndsFirst(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			reset := startTarget(t, resetTarget)
			tg := startTarget(t, echo)
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			for i := range 3 {
				var first net.Conn
				c := dialOn(t, d, reset.addr(), &first)
				if _, err := c.Write([]byte("x")); err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if n, err := c.Read(make([]byte, 10)); !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("Read = %d, %v; want ECONNRESET", n, err)
				}
				if _, err := c.Write([]byte("after the end")); err == nil {
					t.Fatal("Write after the server's end succeeded")
				}
				c.Close()
				if n := d.IdleConnections(); n != 0 {
					t.Fatalf("%d idle connections after a cut stream, want 0", n)
				}
				first = nil
				c = dialOn(t, d, tg.addr(), &first)
				finishEcho(t, c, payload(i, 100))
				closeReused(t, d, c, 1)
				c = dialOn(t, d, tg.addr(), &first)
				finishEcho(t, c, payload(i, 100))
				closeReused(t, d, c, 1)
				d.CloseIdleConnections()
			}
		})
	}
}

// TestReuseConcurrent: workers dial, use and close tunnels to one sprite at
// once through one Dialer; every stream carries its own bytes, and the pool
// stays within its cap.
func TestReuseConcurrent(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	d := reuseDialer(t, ts)
	t.Run("workers", func(t *testing.T) {
		for w := range 8 {
			t.Run(strconv.Itoa(w), func(t *testing.T) {
				t.Parallel()
				for i := range 15 {
					c := dialTo(t, d, "s", tg.addr())
					finishEcho(t, c, payload(w*100+i, 1000+i*37))
					if err := c.Close(); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	})
	if n := d.IdleConnections(); n < 1 || n > DefaultMaxIdlePerSprite {
		t.Fatalf("%d idle connections, want 1 to %d", n, DefaultMaxIdlePerSprite)
	}
	waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })
}

// reuseRawServer is a server written with gobwas alone that grants reuse
// and echoes binary messages until the client's end. Unless silent, it then
// answers with its end followed, in the same write, by the first byte of a
// ping whose second byte goes out with the next reply (so the client must
// carry bytes read past the end over to the next stream). It reports each
// upgrade on upgrades, and a client's misstep on errs.

// TestReuseAfterTargetError: a target that is refused or forbidden opens no
// stream, so under reuse the connection stays open for the next tunnel,
// whether it was reused already or fresh; with reuse off on the server it
// closes, as in v1.
func TestReuseAfterTargetError(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			refused := "127.0.0.1:" + itoa(closedPort(t))
			ts := startServerMode(t, newServer(), false, m.direct)
			d := reuseDialer(t, ts)
			fail := func(addr string, want error) {
				t.Helper()
				_, err := d.DialSprite(testCtx(t), "s", "tcp", addr)
				mustIs(t, err, want)
				if n := d.IdleConnections(); n != 1 {
					t.Fatalf("%d idle connections after a refused target, want 1", n)
				}
			}

			// Fresh: the first thing on the connection is a refusal.
			fail(refused, dialer.ErrTargetRefused)
			c := dialTo(t, d, "s", tg.addr())
			if n := d.IdleConnections(); n != 0 {
				t.Fatalf("the tunnel after a refusal took a new connection (%d idle)", n)
			}
			first := c.NetConn()
			roundTrip(t, c, payload(0, 100))
			closeReused(t, d, c, 1)

			// Reused: refusals in between leave it for the next tunnel.
			fail(refused, dialer.ErrTargetRefused)
			fail("10.1.2.3:80", dialer.ErrTargetForbidden)
			c = dialOn(t, d, tg.addr(), &first)
			finishEcho(t, c, payload(1, 5000))
			closeReused(t, d, c, 1)
		})
	}

	t.Run("server without reuse", func(t *testing.T) {
		t.Parallel()
		srv := newServer()
		srv.DisableReuse = true
		ts := startServer(t, srv, false)
		d := reuseDialer(t, ts)
		_, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:"+itoa(closedPort(t)))
		mustIs(t, err, dialer.ErrTargetRefused)
		if n := d.IdleConnections(); n != 0 {
			t.Fatalf("%d idle connections from a server without reuse", n)
		}
	})
}
