package websocket

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// rawServer is a test server with the raw_stream extension on.
func rawTunnelServer(t *testing.T, useTLS, direct bool) *testServer {
	srv := newServer()
	srv.RawStreams = true
	return startServerMode(t, srv, useTLS, direct)
}

func TestRawStream(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := map[bool]string{false: "ws-", true: "wss-"}[useTLS] + m.name
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				tg := startTarget(t, echo)
				ts := rawTunnelServer(t, useTLS, m.direct)
				c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if !c.(*Conn).Raw() {
					t.Fatal("raw_stream not negotiated with a server that offers it")
				}
				// 8 MiB each way at once in random-size writes, then
				// half-close: everything back, then EOF.
				src := make([]byte, 8<<20)
				for i := range src {
					src[i] = byte(rand.Uint32())
				}
				go func() {
					rest := src
					for len(rest) > 0 {
						n := min(len(rest), 1+rand.IntN(100<<10))
						c.Write(rest[:n])
						rest = rest[n:]
					}
					c.(*Conn).CloseWrite()
				}()
				h := sha256.New()
				n, err := io.Copy(h, c)
				want := sha256.Sum256(src)
				if err != nil || n != int64(len(src)) || !bytes.Equal(h.Sum(nil), want[:]) {
					t.Fatalf("got %d bytes (%v), want %d intact", n, err, len(src))
				}
			})
		}
	}
	t.Run("not offered", func(t *testing.T) {
		t.Parallel()
		tg := startTarget(t, echo)
		c, err := startServer(t, newServer(), false).dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.(*Conn).Raw() {
			t.Fatal("raw_stream negotiated with a server that does not offer it")
		}
	})
	t.Run("client declines", func(t *testing.T) {
		t.Parallel()
		tg := startTarget(t, echo)
		d := rawTunnelServer(t, false, true).dialer()
		d.DisableRawStream = true
		c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.(*Conn).Raw() {
			t.Fatal("raw_stream used by a client that declined it")
		}
		c.Write([]byte("framed"))
		if _, err := io.ReadFull(c, make([]byte, 6)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRawBanner: bytes the target sends at once arrive behind the reply,
// possibly in the same read; they are the stream's first bytes.
func TestRawBanner(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, func(c net.Conn) {
		c.Write([]byte("banner"))
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
	})
	ts := rawTunnelServer(t, false, true)
	for range 20 {
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "banner" {
			t.Fatalf("read %q, %v", got, err)
		}
	}
}

func TestRawNetConn(t *testing.T) {
	t.Parallel()
	netConnTunnel(t, rawTunnelServer(t, false, true))
}
