package websocket

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// sdkDial opens a WebSocket to the proxy endpoint the way the Sprites SDK's
// client does (see the transcript in shared/testdata): bearer token, no
// extensions, no subprotocol.
func sdkDial(t *testing.T, base, sprite string) net.Conn {
	t.Helper()
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(http.Header{
		"Authorization":          {"Bearer " + testToken},
		"User-Agent":             {"sprites-go-sdk/1.0"},
		"Sprite-Client-Features": {"control"},
	})}
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/sprites/" + sprite + "/proxy"
	conn, br, _, err := d.Dial(testCtx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	if br != nil {
		t.Fatal("server sent data before the first message")
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestSDKClient drives our server with exactly the frames of the SDK's
// client: the first message with its trailing newline, one binary message
// per write, the close frame from conn.Close().
func TestSDKClient(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testSDKClient(t, m.direct)
		})
	}
}

func testSDKClient(t *testing.T, direct bool) {
	targetEOF := make(chan struct{})
	tg := startTarget(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
		close(targetEOF)
	})
	ts := startServerMode(t, newServer(), false, direct)
	conn := sdkDial(t, ts.URL, "my-sprite")

	first := []byte(`{"host":"127.0.0.1","port":` + itoa(tg.port) + "}\n")
	if err := wsutil.WriteClientText(conn, first); err != nil {
		t.Fatal(err)
	}
	reply, err := wsutil.ReadServerText(conn)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(reply, []byte("features")) {
		t.Errorf("reply %s offers features to a client that asked for none", reply)
	}
	var rep wire.Reply
	if err := json.Unmarshal(reply, &rep); err != nil || rep.Status != "connected" || rep.Target != tg.addr() {
		t.Fatalf("reply %s, %v; want connected to %s", reply, err, tg.addr())
	}
	for _, msg := range [][]byte{[]byte("hello through the tunnel\n"), bytes.Repeat([]byte{7}, 32<<10)} {
		if err := wsutil.WriteClientBinary(conn, msg); err != nil {
			t.Fatal(err)
		}
		var got []byte
		for len(got) < len(msg) {
			b, err := wsutil.ReadServerBinary(conn)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, b...)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("echo of %d bytes differs", len(msg))
		}
	}
	// conn.Close() in the SDK sends close 1000; the server answers it.
	if err := wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")); err != nil {
		t.Fatal(err)
	}
	_, _, err = wsutil.ReadServerData(conn)
	var closed wsutil.ClosedError
	if !errors.As(err, &closed) || closed.Code != ws.StatusNormalClosure {
		t.Fatalf("after close: %v, want the server's close 1000", err)
	}
	<-targetEOF // the target saw the end of the stream
}

// TestServerRejectsBadFirstMessage sends first messages a server must refuse
// with the protocol's bad_request reply (and accepts unknown fields).
func TestServerRejectsBadFirstMessage(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	port := itoa(tg.port)
	cases := []struct {
		name   string
		op     ws.OpCode
		msg    string
		wantOK bool
	}{
		{"not json", ws.OpText, "hello", false},
		{"binary first", ws.OpBinary, `{"host":"127.0.0.1","port":` + port + `}`, false},
		{"port 0", ws.OpText, `{"host":"127.0.0.1","port":0}`, false},
		{"port -1", ws.OpText, `{"host":"127.0.0.1","port":-1}`, false},
		{"port 65536", ws.OpText, `{"host":"127.0.0.1","port":65536}`, false},
		{"port 70000", ws.OpText, `{"host":"127.0.0.1","port":70000}`, false},
		{"port as string", ws.OpText, `{"host":"127.0.0.1","port":"80"}`, false},
		{"empty host", ws.OpText, `{"host":"","port":` + port + `}`, false},
		{"no host", ws.OpText, `{"port":` + port + `}`, false},
		{"over-long host", ws.OpText, `{"host":"` + strings.Repeat("a", 300) + `","port":80}`, false},
		{"host with a space", ws.OpText, `{"host":"a b","port":80}`, false},
		{"unknown fields", ws.OpText, `{"host":"127.0.0.1","port":` + port + `,"extra":{"x":[1,2]},"features":["future"]}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn := sdkDial(t, ts.URL, "s")
			if err := wsutil.WriteClientMessage(conn, tc.op, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			reply, err := wsutil.ReadServerText(conn)
			if err != nil {
				t.Fatal(err)
			}
			var rep wire.Reply
			json.Unmarshal(reply, &rep)
			if tc.wantOK {
				if rep.Status != "connected" || len(rep.Features) != 0 {
					t.Fatalf("reply %s, want connected with no features", reply)
				}
				return
			}
			if rep.Status != "error" || rep.Error != dialer.CodeBadRequest || rep.Message == "" {
				t.Fatalf("reply %s, want an error reply with code bad_request", reply)
			}
			// Then the close frame.
			_, _, err = wsutil.ReadServerData(conn)
			var closed wsutil.ClosedError
			if !errors.As(err, &closed) {
				t.Fatalf("after the error reply: %v, want a close frame", err)
			}
		})
	}
	t.Run("huge first message", func(t *testing.T) {
		t.Parallel()
		conn := sdkDial(t, ts.URL, "s")
		msg := `{"host":"127.0.0.1","port":80,"pad":"` + strings.Repeat("x", 64<<10) + `"}`
		wsutil.WriteClientText(conn, []byte(msg))
		_, _, err := wsutil.ReadServerData(conn)
		var closed wsutil.ClosedError
		if !errors.As(err, &closed) || closed.Code != closeTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
	})
}

// minimalServer is a server that speaks only the base protocol, as the
// hosted Sprites API may: it never echoes features, and it echoes binary
// messages until the client's close frame, which it answers. If banner is
// set it sends that and then closes instead of echoing.
func minimalServer(t *testing.T, banner string) *testServer {
	t.Helper()
	h := func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := wsutil.ReadClientText(conn); err != nil {
			return
		}
		// A reply with no trailing newline and no features.
		wsutil.WriteServerText(conn, []byte(`{"status":"connected","target":"127.0.0.1:9"}`))
		if banner != "" {
			wsutil.WriteServerBinary(conn, []byte(banner))
			wsutil.WriteServerMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
			wsutil.ReadClientData(conn) // the client's answering close
			return
		}
		for {
			msg, op, err := wsutil.ReadClientData(conn)
			if err != nil {
				return // includes the client's close, answered by wsutil
			}
			if op == ws.OpBinary {
				wsutil.WriteServerBinary(conn, msg)
			}
		}
	}
	return &testServer{URL: rawServer(t, h)}
}

// TestClientAgainstMinimalServer: our client against a server that knows no
// extension and ends streams with a close frame.
func TestClientAgainstMinimalServer(t *testing.T) {
	t.Parallel()
	t.Run("echo then CloseWrite", func(t *testing.T) {
		t.Parallel()
		ts := minimalServer(t, "")
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", "localhost:9")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.(*Conn).HalfClose() {
			t.Fatal("half_close negotiated with a server that never offered it")
		}
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("read %q, %v", buf, err)
		}
		// Without half_close, the close frame goes out once the server
		// has been silent for the linger period; the server answers it
		// and the read side ends cleanly.
		if err := c.(*Conn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
			t.Fatalf("after CloseWrite read %q, %v; want a clean EOF", rest, err)
		}
	})
	t.Run("server closes after data", func(t *testing.T) {
		t.Parallel()
		ts := minimalServer(t, "banner")
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", "localhost:9")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		all, err := io.ReadAll(c)
		if err != nil || string(all) != "banner" {
			t.Fatalf("read %q, %v; want the banner then EOF", all, err)
		}
	})
}

// TestDeadPeer: a server that stops answering pings is detected by a waiting
// Read, which fails with a timeout.
func TestDeadPeer(t *testing.T) {
	t.Parallel()
	pings := make(chan struct{}, 16)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		wsutil.ReadClientText(conn)
		// An extension peer: one known to answer pings, to which the
		// dead-peer rule applies (a plain one gets TCP keep-alive).
		wsutil.WriteServerText(conn, []byte(`{"status":"connected","features":["half_close"]}`))
		go func() { <-release; conn.Close() }()
		for {
			// Read frames, never answer: a peer that is gone.
			//lint:ignore SA1019 a test peer reading frames from our side, which is trusted
			f, err := ws.ReadFrame(conn)
			if err != nil {
				return
			}
			if f.Header.OpCode == ws.OpPing {
				select {
				case pings <- struct{}{}:
				default:
				}
			}
		}
	})
	base := rawServer(t, h)
	// Registered after rawServer's cleanup, so it runs first: the handler
	// ends before the server waits for it.
	t.Cleanup(func() { close(release) })

	d := &Dialer{BaseURL: base, Tuning: Tuning{KeepAlive: 30 * time.Millisecond, DeadPeerTimeout: 200 * time.Millisecond}}
	c, err := d.DialSprite(testCtx(t), "s", "tcp", "localhost:1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read: %v, want a timeout net.Error", err)
	}
	mustIs(t, err, dialer.ErrTunnelClosed)
	if time.Since(start) > 10*time.Second {
		t.Fatalf("dead peer found after %v", time.Since(start))
	}
	select {
	case <-pings:
	default:
		t.Fatal("no keep-alive ping reached the server")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("Write on a dead tunnel succeeded")
	}
}

// TestKeepAliveKeepsIdleTunnel: with both sides pinging, an idle tunnel that
// is being read outlives many dead-peer timeouts.
func TestKeepAliveKeepsIdleTunnel(t *testing.T) {
	t.Parallel()
	// Pings ten times per dead-peer timeout, so that a loaded machine's
	// late ping is not a silent peer.
	tune := Tuning{KeepAlive: 100 * time.Millisecond, DeadPeerTimeout: time.Second}
	tg := startTarget(t, echo)
	srv := newServer()
	srv.Tuning = tune
	ts := startServer(t, srv, false)
	d := ts.dialer()
	d.Tuning = tune
	c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second)) // three dead-peer timeouts
	_, err = c.Read(make([]byte, 1))
	if !errors.Is(err, errDeadline) {
		t.Fatalf("idle Read ended with %v, want its own deadline", err)
	}
	c.SetReadDeadline(time.Time{})
	c.Write([]byte("alive"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "alive" {
		t.Fatalf("after idling: %q, %v", buf, err)
	}
}

// TestShutdown: Shutdown refuses new tunnels with 503 and waits for live
// ones; when its context ends first it forces them closed.
func TestShutdown(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testShutdown(t, m.direct)
		})
	}
}

func testShutdown(t *testing.T, direct bool) {
	t.Run("drains", func(t *testing.T) {
		t.Parallel()
		tg := startTarget(t, echo)
		ts := startServerMode(t, newServer(), false, direct)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		shut := make(chan error, 1)
		go func() { shut <- ts.Shutdown(context.Background()) }()
		// Wait until the server refuses new tunnels: 503 from the handler,
		// a closed listener for Serve.
		for {
			c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err == nil {
				c.Close()
				continue
			}
			if errors.Is(err, dialer.ErrUnavailable) || direct && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)) {
				break
			}
			t.Fatal(err)
		}
		c.Write([]byte("still"))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("live tunnel broken by Shutdown: %v", err)
		}
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v with a tunnel open", err)
		default:
		}
		c.Close()
		if err := <-shut; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("forces", func(t *testing.T) {
		t.Parallel()
		tg := startTarget(t, echo)
		ts := startServerMode(t, newServer(), false, direct)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown = %v, want the deadline", err)
		}
		if ts.Live() != 0 {
			t.Fatalf("%d tunnels live after a forced Shutdown", ts.Live())
		}
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, dialer.ErrTunnelClosed) {
			t.Fatalf("client read after forced shutdown: %v", err)
		}
	})
}

// TestDialContext: ctx bounds the handshake, including the server's dial of
// the target; the server cleans up after a client that gave up.
func TestDialContext(t *testing.T) {
	t.Parallel()
	hang := ResolverFunc(func(ctx context.Context, name string) (dialer.ContextDialer, error) {
		return dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}), nil
	})
	srv := newServer()
	srv.Sprites = hang
	srv.DialTimeout = 300 * time.Millisecond
	ts := startServer(t, srv, false)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := ts.dialer().DialSprite(ctx, "s", "tcp", "localhost:1")
	mustIs(t, err, context.DeadlineExceeded)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a timeout net.Error", err)
	}

	// With a patient client, the server's own dial timeout answers.
	_, err = ts.dialer().DialSprite(testCtx(t), "s", "tcp", "localhost:1")
	mustIs(t, err, dialer.ErrTargetTimeout)

	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	_, err = ts.dialer().DialSprite(cancelled, "s", "tcp", "localhost:1")
	mustIs(t, err, context.Canceled)
}

type dialerFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialerFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// countingConn counts the writes on a client's connection.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestEarlyData: a server that announces early_data gets, from the second
// tunnel on, the first message in the same write as the upgrade request;
// a server that does not announce it never does.
func TestEarlyData(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	run := func(t *testing.T, base string, addr string, wantEarly bool) {
		var writes atomic.Int64
		var nd net.Dialer
		d := &Dialer{BaseURL: base, Token: testToken, NetDial: func(ctx context.Context, network, a string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			return countingConn{c, &writes}, nil
		}}
		for i := range 3 {
			writes.Store(0)
			c, err := d.DialSprite(testCtx(t), "s", "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			handshakeWrites := writes.Load()
			c.Write([]byte("hi"))
			if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
				t.Fatalf("tunnel %d: %v", i, err)
			}
			c.Close()
			want := int64(2)
			if i > 0 && wantEarly {
				want = 1
			}
			if handshakeWrites != want {
				t.Fatalf("tunnel %d: %d writes in the handshake, want %d", i, handshakeWrites, want)
			}
		}
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			run(t, startServerMode(t, newServer(), false, m.direct).URL, tg.addr(), true)
		})
	}
	t.Run("server without it", func(t *testing.T) {
		t.Parallel()
		run(t, minimalServer(t, "").URL, "localhost:9", false)
	})
}

// TestEarlyDataRefusal: a client that sends its first message early still
// reads the server's refusal (not a reset) when the upgrade is refused.
func TestEarlyDataRefusal(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var refuse atomic.Bool
			srv := &Server{Auth: AuthFunc(func(_ context.Context, token, _ string) error {
				if refuse.Load() {
					return dialer.ErrUnauthorized
				}
				return nil
			})}
			ts := startServerMode(t, srv, false, m.direct)
			d := ts.dialer()
			c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			if !d.earlyData.Load() {
				t.Fatal("the client did not learn early_data")
			}
			refuse.Store(true)
			for i := range 20 {
				_, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
				var he *dialer.HTTPError
				if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
					t.Fatalf("early dial %d: %v, want the 401", i, err)
				}
			}
		})
	}
}
