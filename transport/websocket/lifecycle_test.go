package websocket

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// silentTarget accepts connections and never reads, writes or closes them
// until the test ends: a FIN from the server changes nothing, as with a
// target that never reads. conns gets each accepted connection.
func silentTarget(t *testing.T) (tg *target, conns <-chan net.Conn) {
	ch := make(chan net.Conn, 16)
	stop := make(chan struct{})
	tg = startTarget(t, func(c net.Conn) {
		defer c.Close()
		ch <- c
		<-stop
	})
	t.Cleanup(func() { close(stop) }) // before startTarget's, which waits for the handlers
	return tg, ch
}

// awaitFreed waits for the server to give the tunnel's slot back and
// checks that it closed the target's connection (tc, from silentTarget)
// for good, not only its write side: the target's writes fail once the
// server's socket is gone, where a half-closed one would take them.
func awaitFreed(t *testing.T, conns <-chan net.Conn, ts *testServer) {
	t.Helper()
	tc := recv(t, conns, "the target's connection")
	waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })
	tc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := tc.Write([]byte("x")); err != nil {
			if errors.Is(err, errDeadline) {
				t.Fatal("the server kept the target's connection, unread, after its client left")
			}
			return // EPIPE or ECONNRESET: the server's socket is closed
		}
		if time.Now().After(deadline) {
			t.Fatal("the server kept the target's connection after its client left")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestClientGoneTargetSilent (defect 1 of the lifecycle issue): a client
// that ends its side and leaves, against a target that never speaks, frees
// its tunnel on the server: the target's connection is closed and the slot
// given back. Before the fix the tunnel stayed for ever, and a token's
// tunnels could lock everyone with that token out.
func TestClientGoneTargetSilent(t *testing.T) {
	t.Parallel()
	leave := map[string]func(t *testing.T, conn net.Conn){
		// The SDK's way: a close frame, then the socket closed.
		"plain close frame": func(t *testing.T, conn net.Conn) {
			ws.WriteFrame(conn, ws.MaskFrame(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))))
			conn.Close()
		},
		"half_close eof then FIN": func(t *testing.T, conn net.Conn) {
			wsutil.WriteClientText(conn, wire.EOFMessage)
			conn.Close()
		},
		"half_close eof then RST": func(t *testing.T, conn net.Conn) {
			wsutil.WriteClientText(conn, wire.EOFMessage)
			conn.(*net.TCPConn).SetLinger(0)
			conn.Close()
		},
	}
	for name, how := range leave {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tg, conns := silentTarget(t)
			srv := newServer()
			srv.MaxTunnelsPerToken = 2
			srv.Tuning.CloseTimeout = 200 * time.Millisecond
			ts := startServer(t, srv, false)
			for range 3 { // more than the cap: each slot must come back
				conn := sdkDial(t, ts.URL, "s")
				first := fmt.Sprintf(`{"host":"127.0.0.1","port":%d}`, tg.port)
				if name != "plain close frame" {
					first = fmt.Sprintf(`{"host":"127.0.0.1","port":%d,"features":["half_close"]}`, tg.port)
				}
				wsutil.WriteClientText(conn, []byte(first))
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if msg, err := wsutil.ReadServerText(conn); err != nil {
					t.Fatalf("reply: %q, %v", msg, err)
				}
				how(t, conn)
				awaitFreed(t, conns, ts)
			}
		})
	}
	// Over TLS, with our own client: CloseWrite, then the connection lost.
	t.Run("tls half_close then reset", func(t *testing.T) {
		t.Parallel()
		tg, conns := silentTarget(t)
		ts := startServer(t, newServer(), true)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		c.(*Conn).CloseWrite()
		c.(*Conn).rawTCP().SetLinger(0)
		c.(*Conn).CloseNow()
		awaitFreed(t, conns, ts)
	})
}

// TestClientGoneTargetNotReading (defect 1): the client leaves while the
// server's copy is blocked writing to a target that stopped reading;
// keep-alive finds the client gone (a failed ping) and the target's
// connection is closed, so that the copy does not wait on it for ever.
func TestClientGoneTargetNotReading(t *testing.T) {
	t.Parallel()
	tg, conns := silentTarget(t)
	srv := newServer()
	srv.Tuning = Tuning{KeepAlive: 20 * time.Millisecond, CloseTimeout: 100 * time.Millisecond}
	ts := startServer(t, srv, false)
	d := ts.dialer()
	d.Tuning.KeepAlive = -1
	c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	// Fill the target's socket and the server's copy towards it: a Write
	// that times out means the server stopped reading from the client.
	c.SetWriteDeadline(time.Now().Add(time.Second))
	chunk := make([]byte, 256<<10)
	for {
		if _, err := c.Write(chunk); err != nil {
			break
		}
	}
	c.(*Conn).rawTCP().SetLinger(0)
	c.(*Conn).CloseNow()
	awaitFreed(t, conns, ts)
}

// isReset reports whether err is a connection reset.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestTargetResetIsReset (defect 2): a target that writes 1 MiB and resets
// reaches the client as a reset (ECONNRESET), over TCP and TLS, not as a
// clean end of stream, and the client does not hang (what the former
// TestTargetDiesMidStream checked, over TCP only).
func TestTargetResetIsReset(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", useTLS), func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, func(c net.Conn) {
				io.ReadFull(c, make([]byte, 1))
				c.Write(make([]byte, 1<<20))
				c.(*net.TCPConn).SetLinger(0)
				c.Close()
			})
			ts := startServer(t, newServer(), useTLS)
			c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("g"))
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if errors.Is(err, errDeadline) {
				t.Fatal("client hung after the target died")
			}
			if !isReset(err) {
				t.Fatalf("after %d bytes: %v, want ECONNRESET", n, err)
			}
		})
	}
}

// TestCloseNotHeldByBlockedPing (defect 3): a ping blocked on a peer that
// does not read holds no lock that a close needs: CloseNow, Close and Close
// under reuse (which stops the keep-alive before sending its end) all
// return within the close timeout. Before the fix, the keep-alive held its
// lock across the ping's write, and Close under reuse waited until the
// peer's socket went away.
func TestCloseNotHeldByBlockedPing(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		reuse bool
		close func(*Conn) error
	}{
		{"CloseNow", false, (*Conn).CloseNow},
		{"Close", false, (*Conn).Close},
		{"Close under reuse", true, (*Conn).Close},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tune := Tuning{KeepAlive: 10 * time.Millisecond, DeadPeerTimeout: time.Hour, CloseTimeout: 200 * time.Millisecond}
			client, server := connPair(t, tc.reuse, tune)
			client.reuse, server.reuse = tc.reuse, tc.reuse
			// The server Conn never reads: fill the client's socket.
			client.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			for {
				if _, err := client.Write(make([]byte, 64<<10)); err != nil {
					break
				}
			}
			client.SetWriteDeadline(time.Time{})
			// Wait for a ping to be under way: it holds the write side, blocked.
			deadline := time.Now().Add(5 * time.Second)
			for client.wmu.TryLock() {
				client.wmu.Unlock()
				if time.Now().After(deadline) {
					t.Fatal("no ping went out")
				}
				time.Sleep(time.Millisecond)
			}
			// Within its timeout, whatever the peer does: the close timeout
			// and a second of slack for a loaded machine.
			done := make(chan struct{})
			go func() { tc.close(client); close(done) }()
			select {
			case <-done:
			case <-time.After(tune.CloseTimeout + time.Second):
				t.Fatalf("%s blocked past its %v close timeout behind a ping to a peer that does not read", tc.name, tune.CloseTimeout)
			}
		})
	}
}

// TestPlainPeerIdleTunnelSurvives (defect 4): an idle tunnel of a plain v1
// client that neither pings nor reads (the SDK's pooled ProxySocket) is not
// closed by the dead-peer rule; TCP keep-alive watches its connection.
func TestPlainPeerIdleTunnelSurvives(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	srv := newServer()
	srv.Tuning = Tuning{KeepAlive: 10 * time.Millisecond, DeadPeerTimeout: 30 * time.Millisecond}
	ts := startServer(t, srv, false)
	conn := sdkDial(t, ts.URL, "s")
	wsutil.WriteClientText(conn, fmt.Appendf(nil, `{"host":"127.0.0.1","port":%d}`+"\n", tg.port))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := wsutil.ReadServerText(conn); err != nil {
		t.Fatal(err)
	}
	// Idle, reading nothing, for ten dead-peer timeouts: nothing here can
	// be waited on, since what must not happen is the server's close.
	time.Sleep(300 * time.Millisecond)
	if err := wsutil.WriteClientBinary(conn, []byte("still here")); err != nil {
		t.Fatal(err)
	}
	for {
		msg, op, err := wsutil.ReadServerData(conn)
		if err != nil {
			t.Fatalf("the idle tunnel was closed: %v", err)
		}
		if op == ws.OpBinary {
			if string(msg) != "still here" {
				t.Fatalf("echo %q", msg)
			}
			return
		}
	}
}

// TestKeepAliveIgnoresExpiredWriteDeadline (defect 5): an application that
// leaves an expired write deadline on an idle conn does not stop its
// pings, so the peer's dead-peer rule keeps the tunnel.
func TestKeepAliveIgnoresExpiredWriteDeadline(t *testing.T) {
	t.Parallel()
	// Pings ten times per dead-peer timeout: a loaded machine that delays
	// a ping by a few intervals must not pass for a silent peer.
	client, server := connPair(t, true, Tuning{KeepAlive: 100 * time.Millisecond, DeadPeerTimeout: time.Second})
	client.SetWriteDeadline(aLongTimeAgo)
	got := make(chan error, 1)
	go func() {
		_, err := server.Read(make([]byte, 1))
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the server's Read ended while the client was idle: %v", err)
	case <-time.After(3 * time.Second): // three dead-peer timeouts
	}
	client.SetWriteDeadline(time.Time{})
	if _, err := client.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("server Read: %v", err)
	}
}

// TestPeerTimeoutIsNotEOF (defect 5): a tunnel the peer ended by its idle
// or dead-peer rule reads as a timeout, not as a clean io.EOF.
func TestPeerTimeoutIsNotEOF(t *testing.T) {
	t.Parallel()
	cfgC, _ := Tuning{KeepAlive: -1}.config()
	cfgS, _ := Tuning{KeepAlive: -1, IdleTimeout: 50 * time.Millisecond}.config()
	a, b := testnet.TCPPair(t)
	client, server := newConn(a, true, cfgC, nil), newConn(b, false, cfgS, nil)
	client.halfClose, server.halfClose = true, true
	client.startKeepalive()
	server.startKeepalive()
	t.Cleanup(func() { closeBoth(client, server) })
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := client.Read(make([]byte, 1))
	var ne net.Error
	if err == io.EOF || !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, errDeadline) {
		t.Fatalf("Read = %v, want the peer's timeout", err)
	}
}

// TestDeadPeerFiresOnTime (defect 7): the dead-peer rule fires at its
// timeout after the last frame, not at the next keep-alive tick (which
// made it 60–80 s for a 60 s timeout).
func TestDeadPeerFiresOnTime(t *testing.T) {
	t.Parallel()
	keepAlive, dead := 2*time.Second, 2100*time.Millisecond
	a, b := testnet.TCPPair(t)
	cfg, _ := Tuning{KeepAlive: keepAlive, DeadPeerTimeout: dead}.config()
	client := newConn(a, true, cfg, nil)
	client.halfClose = true
	client.startKeepalive()
	defer client.CloseNow()
	defer b.Close() // a peer that reads nothing and never answers
	start := time.Now()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := client.Read(make([]byte, 1))
	if !isTimeout(err) || errors.Is(err, errDeadline) {
		t.Fatalf("Read = %v, want the dead-peer timeout", err)
	}
	// The tick would next run at 2 × keepAlive: well after the timeout.
	if el := time.Since(start); el >= 2*keepAlive {
		t.Fatalf("the dead-peer rule fired after %v, at a keep-alive tick, not at its %v timeout", el, dead)
	}
}

// TestLateTimerIsNotPeerSilence (defect 7): when the keep-alive timer fires
// late (the process did not run), the time lost is not counted as the
// peer's silence: the tunnel lives on.
func TestLateTimerIsNotPeerSilence(t *testing.T) {
	t.Parallel()
	client, server := connPair(t, true, Tuning{KeepAlive: time.Hour, DeadPeerTimeout: 2 * time.Hour})
	go server.Read(make([]byte, 1)) // answers pings
	// As after a stop of three hours: the last frame, and the timer's due
	// time, are in the past.
	client.ka.mu.Lock()
	past := time.Now().Add(-3 * time.Hour)
	client.lastRead.Store(past.UnixNano())
	client.ka.due = past.UnixNano()
	client.ka.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	read := make(chan error, 1)
	go func() { defer wg.Done(); _, err := client.Read(make([]byte, 1)); read <- err }()
	waitFor(t, "the Read to start", func() bool { return client.reading.Load() > 0 })
	client.lastRead.Store(past.UnixNano()) // the Read's start counts as a frame: undo it
	client.keepalive()
	select {
	case err := <-read:
		t.Fatalf("a late timer closed a live tunnel: %v", err)
	default:
	}
	server.Write([]byte("x"))
	wg.Wait()
	if err := <-read; err != nil {
		t.Fatalf("Read: %v", err)
	}
}

// TestKeepAliveTimerDoesNotSpin: a tunnel no one reads, long silent, and
// whose ping cannot go out (its peer does not read) sets its keep-alive
// timer a ping interval ahead, not a millisecond: neither the dead-peer
// deadline of a Read that is not waiting, nor a ping already queued, is
// due again at once.
func TestKeepAliveTimerDoesNotSpin(t *testing.T) {
	t.Parallel()
	keepAlive := time.Hour
	client, _ := connPair(t, true, Tuning{KeepAlive: keepAlive, DeadPeerTimeout: 2 * keepAlive})
	past := time.Now().Add(-3 * keepAlive).UnixNano()
	client.lastRead.Store(past)
	client.lastWrite.Store(past)
	client.wmu.Lock() // a write under way: the ping stays queued
	client.keepalive()
	client.ka.mu.Lock()
	due := time.Until(time.Unix(0, client.ka.due))
	client.ka.mu.Unlock()
	client.wmu.Unlock()
	if due < keepAlive/2 {
		t.Fatalf("keep-alive timer set %v ahead, want about a ping interval (%v)", due, keepAlive*9/10)
	}
}

// TestInvalidCloseCodes (defect 8): a close frame with a code a peer may not
// send is answered with 1002, a reason that is not UTF-8 with 1007, and
// Read reports the protocol error.
func TestInvalidCloseCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code   int
		reason string
		want   int
	}{
		{0, "", closeProtocolError},
		{999, "", closeProtocolError},
		{1004, "", closeProtocolError},
		{1005, "", closeProtocolError},
		{1006, "", closeProtocolError},
		{1015, "", closeProtocolError},
		{2999, "", closeProtocolError},
		{5000, "", closeProtocolError},
		{65535, "", closeProtocolError},
		{1000, "\xff\xfe", closeInvalidData},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.code), func(t *testing.T) {
			t.Parallel()
			cfg, _ := Tuning{KeepAlive: -1}.config()
			a, b := testnet.TCPPair(t)
			server := newConn(b, false, cfg, nil)
			defer server.CloseNow()
			body := make([]byte, 2, 2+len(tc.reason))
			body[0], body[1] = byte(tc.code>>8), byte(tc.code)
			body = append(body, tc.reason...)
			ws.WriteFrame(a, ws.MaskFrame(ws.NewFrame(ws.OpClose, true, body)))
			_, err := server.Read(make([]byte, 1))
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != tc.want {
				t.Fatalf("Read = %v, want a protocol error with %d", err, tc.want)
			}
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			//lint:ignore SA1019 a close frame from a test peer, at most 125 bytes
			f, err := ws.ReadFrame(a)
			if err != nil || f.Header.OpCode != ws.OpClose {
				t.Fatalf("answer %v, %v; want a close frame", f.Header, err)
			}
			if got := int(f.Payload[0])<<8 | int(f.Payload[1]); got != tc.want {
				t.Fatalf("answered with %d, want %d", got, tc.want)
			}
		})
	}
}
