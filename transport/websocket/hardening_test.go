package websocket

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/dialer"
)

// rawServer serves h on loopback and returns its base URL.
func rawServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { defer close(done); hs.Serve(ln) }()
	t.Cleanup(func() { hs.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// rawUpgraded answers the upgrade and the first message with reply, then
// runs then on the conn.
func rawUpgraded(t *testing.T, reply string, then func(net.Conn)) string {
	return rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, _, err := ws.UpgradeHTTP(r, w)
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := wsutil.ReadClientText(conn); err != nil {
			return
		}
		wsutil.WriteServerText(conn, []byte(reply))
		if then != nil {
			then(conn)
		}
	})
}

func TestClientAgainstBadServers(t *testing.T) {
	t.Parallel()
	dial := func(t *testing.T, base string) (net.Conn, error) {
		d := &Dialer{BaseURL: base, Tuning: Tuning{CloseTimeout: 100 * time.Millisecond}}
		return d.DialSprite(testCtx(t), "s", "tcp", "localhost:1")
	}
	t.Run("200 without upgrade", func(t *testing.T) {
		t.Parallel()
		base := rawServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
		_, err := dial(t, base)
		mustIs(t, err, dialer.ErrTunnelClosed)
		if !strings.Contains(err.Error(), "without upgrading") {
			t.Errorf("error %q does not say what happened", err)
		}
	})
	t.Run("500 with no JSON", func(t *testing.T) {
		t.Parallel()
		base := rawServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) })
		_, err := dial(t, base)
		var he *dialer.HTTPError
		if !errors.As(err, &he) || he.StatusCode != 500 {
			t.Fatalf("got %v, want an *HTTPError 500", err)
		}
	})
	t.Run("non-JSON reply", func(t *testing.T) {
		t.Parallel()
		_, err := dial(t, rawUpgraded(t, "this is not json", nil))
		mustIs(t, err, dialer.ErrTunnelClosed)
	})
	t.Run("close before reply", func(t *testing.T) {
		t.Parallel()
		base := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			conn, _, _, err := ws.UpgradeHTTP(r, w)
			if err != nil {
				return
			}
			defer conn.Close()
			wsutil.ReadClientText(conn)
			wsutil.WriteServerMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusInternalServerError, "nope"))
		})
		_, err := dial(t, base)
		mustIs(t, err, dialer.ErrTunnelClosed)
	})
	t.Run("connected twice and unknown text are ignored", func(t *testing.T) {
		t.Parallel()
		base := rawUpgraded(t, `{"status":"connected","features":["half_close"]}`, func(c net.Conn) {
			wsutil.WriteServerText(c, []byte(`{"status":"connected"}`))
			wsutil.WriteServerText(c, []byte(`{"type":"future-thing","x":1}`))
			wsutil.WriteServerText(c, []byte(`not even json`))
			wsutil.WriteServerBinary(c, []byte("data"))
			wsutil.WriteServerText(c, []byte(`{"type":"eof"}`))
			wsutil.ReadClientData(c)
		})
		c, err := dial(t, base)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		all, err := io.ReadAll(c)
		if err != nil || string(all) != "data" {
			t.Fatalf("read %q, %v; want the data then EOF", all, err)
		}
	})
	t.Run("masked frames from server", func(t *testing.T) {
		t.Parallel()
		base := rawUpgraded(t, `{"status":"connected"}`, func(c net.Conn) {
			f := ws.MaskFrame(ws.NewBinaryFrame([]byte("masked")))
			ws.WriteFrame(c, f)
			//lint:ignore SA1019 a test peer reading frames from our side, which is trusted
			ws.ReadFrame(c)
		})
		c, err := dial(t, base)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Read(make([]byte, 10))
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Code != closeProtocolError {
			t.Fatalf("Read: %v, want a ProtocolError 1002", err)
		}
	})
}

func TestServerBadUpgrades(t *testing.T) {
	t.Parallel()
	ts := startServer(t, newServer(), false)
	url := ts.URL + "/v1/sprites/s/proxy"
	cases := []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no upgrade header", http.Header{"Authorization": {"Bearer " + testToken}}, http.StatusBadRequest},
		{"wrong version", http.Header{
			"Authorization": {"Bearer " + testToken}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Version": {"12"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="},
		}, http.StatusUpgradeRequired},
		{"bad key", http.Header{
			"Authorization": {"Bearer " + testToken}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"short"},
		}, http.StatusBadRequest},
	}
	// (A group, so that the counts are read once its parallel subtests
	// have run.)
	t.Run("group", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header = tc.header
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
			})
		}
	})
	if n, h := ts.Live(), ts.handshakingNow(); n != 0 || h != 0 {
		t.Fatalf("%d tunnels live and %d connections handshaking after refused upgrades", n, h)
	}
}

// handshakingNow is the number of connections counted as waiting for
// their first message.
func (s *Server) handshakingNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handshaking
}

// TestSlowClient: a client that upgrades but never sends its first message
// is dropped after the handshake timeout, on both serving paths, and its
// handshake slot is given back.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer()
			srv.HandshakeTimeout = 100 * time.Millisecond
			ts := startServerMode(t, srv, false, m.direct)
			conn := sdkDial(t, ts.URL, "s")
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _, err := wsutil.ReadServerData(conn)
			if err == nil {
				t.Fatal("server sent data to a client that asked for nothing")
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("the server did not drop the silent client")
			}
			waitFor(t, "the handshake slot to be given back", func() bool { return ts.handshakingNow() == 0 })
			if n := ts.Live(); n != 0 {
				t.Fatalf("%d tunnels live after a silent client", n)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	t.Run("per server", func(t *testing.T) {
		t.Parallel()
		srv := newServer()
		srv.MaxTunnels = 1
		ts := startServer(t, srv, false)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		_, err = ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		mustIs(t, err, dialer.ErrUnavailable)
		var he *dialer.HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || he.Message == "" {
			t.Fatalf("got %v, want 503 with a message", err)
		}
		c.Close()
		// The slot frees once the tunnel has ended on the server too.
		waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })
		c, err = ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatalf("after the first closed: %v", err)
		}
		c.Close()
	})
	t.Run("per token", func(t *testing.T) {
		t.Parallel()
		srv := &Server{Auth: AuthFunc(func(_ context.Context, token, _ string) error { return nil }), MaxTunnelsPerToken: 1}
		ts := startServer(t, srv, false)
		d1 := &Dialer{BaseURL: ts.URL, Token: "one"}
		d2 := &Dialer{BaseURL: ts.URL, Token: "two"}
		c, err := d1.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = d1.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		var he *dialer.HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("got %v, want 429", err)
		}
		mustIs(t, err, dialer.ErrUnavailable)
		c2, err := d2.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatalf("another token was refused: %v", err)
		}
		c2.Close()
	})
	t.Run("message size", func(t *testing.T) {
		t.Parallel()
		srv := newServer()
		srv.Tuning.MaxMessageSize = 1024
		ts := startServer(t, srv, false)
		conn := sdkDial(t, ts.URL, "s")
		wsutil.WriteClientText(conn, []byte(`{"host":"127.0.0.1","port":`+itoa(tg.port)+`}`))
		if _, err := wsutil.ReadServerText(conn); err != nil {
			t.Fatal(err)
		}
		wsutil.WriteClientBinary(conn, make([]byte, 2048))
		_, _, err := wsutil.ReadServerData(conn)
		var closed wsutil.ClosedError
		if !errors.As(err, &closed) || closed.Code != closeTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		t.Parallel()
		srv := newServer()
		srv.Tuning.IdleTimeout = 100 * time.Millisecond
		ts := startServer(t, srv, false)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1))
		if err == nil || errors.Is(err, errDeadline) {
			t.Fatalf("idle tunnel read %v, want it closed by the server", err)
		}
	})
}

// TestFragmentedAndPingFlood: a fragmented message is reassembled as bytes,
// and a flood of pings neither blocks the data nor grows without bound.
func TestFragmentedAndPingFlood(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	conn := sdkDial(t, ts.URL, "s")
	wsutil.WriteClientText(conn, []byte(`{"host":"127.0.0.1","port":`+itoa(tg.port)+`}`))
	if _, err := wsutil.ReadServerText(conn); err != nil {
		t.Fatal(err)
	}
	// Pings, then a message in three fragments with pings between them.
	bw := bufio.NewWriter(conn)
	for range 5000 {
		ws.WriteFrame(bw, ws.MaskFrame(ws.NewPingFrame([]byte("flood"))))
	}
	ws.WriteFrame(bw, ws.MaskFrame(ws.NewFrame(ws.OpBinary, false, []byte("frag"))))
	ws.WriteFrame(bw, ws.MaskFrame(ws.NewPingFrame(nil)))
	ws.WriteFrame(bw, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, false, []byte("men"))))
	ws.WriteFrame(bw, ws.MaskFrame(ws.NewFrame(ws.OpContinuation, true, []byte("ted"))))
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	pongs := 0
	for len(got) < len("fragmented") {
		//lint:ignore SA1019 a test peer reading frames from our side, which is trusted
		f, err := ws.ReadFrame(conn)
		if err != nil {
			t.Fatal(err)
		}
		switch f.Header.OpCode {
		case ws.OpBinary:
			got = append(got, f.Payload...)
		case ws.OpPong:
			pongs++
		}
	}
	if !bytes.Equal(got, []byte("fragmented")) {
		t.Fatalf("echo %q", got)
	}
	if pongs > 5001 {
		t.Fatalf("%d pongs for 5001 pings", pongs)
	}
}

// TestClientResetMidStream: a client that vanishes mid-stream (TCP reset)
// ends its tunnel on the server; nothing is left behind.
func TestClientResetMidStream(t *testing.T) {
	t.Parallel()
	targetDone := make(chan struct{})
	tg := startTarget(t, func(c net.Conn) {
		defer close(targetDone)
		defer c.Close()
		io.Copy(io.Discard, c)
	})
	ts := startServer(t, newServer(), false)
	c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write(make([]byte, 100<<10))
	tcp := c.(*Conn).NetConn().(*net.TCPConn)
	tcp.SetLinger(0)
	tcp.Close()
	c.Close()
	<-targetDone // the server closed the target's connection
	if err := ts.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("the tunnel did not end on the server: %v", err)
	}
}

// TestServeRawRequests: the fast path answers what net/http would, and
// caps what it reads.
func TestServeRawRequests(t *testing.T) {
	t.Parallel()
	plain := startServerMode(t, newServer(), false, true)
	secure := startServerMode(t, newServer(), true, true)
	hostOf := func(u string) string { return u[strings.Index(u, "://")+3:] }

	t.Run("endless header line", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", hostOf(plain.URL))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		go func() {
			c.Write([]byte("GET /v1/sprites/s/proxy HTTP/1.1\r\nX-Long: "))
			c.Write(bytes.Repeat([]byte("a"), 64<<10))
		}()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a 64 KiB header: %v", err)
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
	})
	t.Run("TLS to a plain server", func(t *testing.T) {
		t.Parallel()
		d := &Dialer{BaseURL: "https://" + hostOf(plain.URL), Token: testToken}
		_, err := d.DialSprite(testCtx(t), "s", "tcp", "localhost:1")
		var rhe tls.RecordHeaderError
		if !errors.As(err, &rhe) {
			t.Fatalf("got %v, want the TLS stack's RecordHeaderError", err)
		}
	})
	t.Run("plain HTTP to a TLS server", func(t *testing.T) {
		t.Parallel()
		d := &Dialer{BaseURL: "http://" + hostOf(secure.URL), Token: testToken}
		_, err := d.DialSprite(testCtx(t), "s", "tcp", "localhost:1")
		if err == nil || !strings.Contains(err.Error(), "400") && !errors.Is(err, dialer.ErrBadRequest) {
			t.Fatalf("got %v, want the 400 of a plain request to TLS", err)
		}
	})
}

// TestSlowRequest: a client that never finishes its upgrade request is
// dropped by Serve after the handshake timeout, and nothing is left behind.
func TestSlowRequest(t *testing.T) {
	t.Parallel()
	srv := newServer()
	srv.HandshakeTimeout = 100 * time.Millisecond
	ts := startServerMode(t, srv, false, true)
	c, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\n")) // and never the end
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	if errors.Is(err, errDeadline) {
		t.Fatal("the server kept a request that never ended")
	}
}
