package websocket

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"golang.org/x/net/nettest"
)

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := "ws-" + m.name
			if useTLS {
				name = "wss-" + m.name
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				tg := startTarget(t, echo)
				ts := startServerMode(t, newServer(), useTLS, m.direct)
				c, err := ts.dialer().DialSprite(testCtx(t), "my-sprite", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if got := c.RemoteAddr().String(); got != tg.addr() {
					t.Errorf("RemoteAddr = %s, want the target %s", got, tg.addr())
				}
				if c.LocalAddr() == nil {
					t.Error("LocalAddr is nil")
				}
				msg := []byte("hello through the tunnel\n")
				if _, err := c.Write(msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("echo = %q, want %q", got, msg)
				}
			})
		}
	}
}

// TestBulkChecksum moves 24 MiB each way at once, in writes of random sizes
// (message boundaries carry no meaning), and checks every byte.
//
// Over wss the three ways of serving TLS differ below the tunnel: net/http's
// TLS, Serve with TLSConfig (the server gathers a frame's records into one
// write, as the client always does), and Serve on a tls.NewListener.
func TestBulkChecksum(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                        string
		useTLS, direct, tlsListener bool
	}{
		{"ws-http", false, false, false},
		{"ws-serve", false, true, false},
		{"wss-http", true, false, false},
		{"wss-serve", true, true, false},
		{"wss-serve-tls-listener", true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts := startServerHow(t, newServer(), tc.useTLS, tc.direct, tc.tlsListener)
			c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const total = 24 << 20
			src := make([]byte, total)
			for i := range src {
				src[i] = byte(rand.Uint32())
			}
			werr := make(chan error, 1)
			go func() {
				rest := src
				for len(rest) > 0 {
					n := min(len(rest), 1+rand.IntN(200<<10))
					if _, err := c.Write(rest[:n]); err != nil {
						werr <- err
						return
					}
					rest = rest[n:]
				}
				werr <- c.(*Conn).CloseWrite()
			}()
			h := sha256.New()
			n, err := io.Copy(h, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-werr; err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(src)
			if n != total || !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("got %d bytes with a different checksum, want %d intact", n, total)
			}
		})
	}
}

func TestDialErrors(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testDialErrors(t, m.direct)
		})
	}
}

func testDialErrors(t *testing.T, direct bool) {
	ts := startServerMode(t, &Server{
		Auth:    StaticToken(testToken),
		Sprites: &HostNetwork{Names: []string{"known"}},
	}, false, direct)
	refused := closedPort(t)
	cases := []struct {
		name    string
		token   string
		sprite  string
		network string
		addr    string
		want    error
	}{
		{"bad token", "nope", "known", "tcp", "localhost:80", dialer.ErrUnauthorized},
		{"no token", "", "known", "tcp", "localhost:80", dialer.ErrUnauthorized},
		{"unknown sprite", testToken, "other", "tcp", "localhost:80", dialer.ErrUnknownSprite},
		{"refused target", testToken, "known", "tcp", "127.0.0.1:" + itoa(refused), dialer.ErrTargetRefused},
		{"outside policy", testToken, "known", "tcp", "169.254.169.254:80", dialer.ErrTargetForbidden},
		{"outside policy by name", testToken, "known", "tcp", "example.com:80", dialer.ErrTargetForbidden},
		{"port 0", testToken, "known", "tcp", "localhost:0", dialer.ErrBadAddress},
		{"port 70000", testToken, "known", "tcp", "localhost:70000", dialer.ErrBadAddress},
		{"empty host", testToken, "known", "tcp", ":80", dialer.ErrBadAddress},
		{"no port", testToken, "known", "tcp", "localhost", dialer.ErrBadAddress},
		{"udp", testToken, "known", "udp", "localhost:53", dialer.ErrUnsupportedNetwork},
		{"bad sprite name", testToken, "a/b", "tcp", "localhost:80", dialer.ErrBadAddress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &Dialer{BaseURL: ts.URL, Token: tc.token}
			c, err := d.DialSprite(testCtx(t), tc.sprite, tc.network, tc.addr)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			mustIs(t, err, tc.want)
			var op *net.OpError
			if !errors.As(err, &op) || op.Op != "dial" {
				t.Errorf("error %v is not a dial *net.OpError", err)
			}
		})
	}
	t.Run("refusal carries the body", func(t *testing.T) {
		t.Parallel()
		d := &Dialer{BaseURL: ts.URL, Token: "nope"}
		_, err := d.DialSprite(testCtx(t), "known", "tcp", "localhost:80")
		var he *dialer.HTTPError
		if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized || he.Code != "unauthorized" || he.Message == "" {
			t.Fatalf("error %v: want an *HTTPError 401 with the JSON body", err)
		}
	})
	t.Run("refused target reply", func(t *testing.T) {
		t.Parallel()
		_, err := ts.dialer().DialSprite(testCtx(t), "known", "tcp", "127.0.0.1:"+itoa(refused))
		var te *dialer.TargetError
		if !errors.As(err, &te) || te.Code != dialer.CodeConnectionRefused {
			t.Fatalf("error %v: want a *TargetError connection_refused", err)
		}
	})
	t.Run("server unreachable", func(t *testing.T) {
		t.Parallel()
		d := &Dialer{BaseURL: "http://127.0.0.1:" + itoa(closedPort(t))}
		_, err := d.DialSprite(testCtx(t), "known", "tcp", "localhost:80")
		if err == nil {
			t.Fatal("dial succeeded")
		}
		mustIs(t, err, errConnRefused)
	})
}

// TestPolicyAllow widens the policy to a non-loopback address.
func TestPolicyAllow(t *testing.T) {
	t.Parallel()
	rule, err := ParseRule("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Allow: []Rule{rule}}
	for _, ok := range []string{"127.0.0.1:5", "localhost:1", "[::1]:80"} {
		h, port, _ := dialer.SplitAddress("tcp", ok)
		if err := p.Check(h, port); err != nil {
			t.Errorf("Check(%s) = %v, want allowed", ok, err)
		}
	}
	r2, _ := ParseRule("10.0.0.0/8:5432-5433")
	p = &Policy{Allow: []Rule{r2}}
	for addr, allowed := range map[string]bool{"10.1.2.3:5432": true, "10.1.2.3:5433": true, "10.1.2.3:80": false, "11.0.0.1:5432": false, "192.168.1.1:5432": false} {
		h, port, _ := dialer.SplitAddress("tcp", addr)
		if err := p.Check(h, port); (err == nil) != allowed {
			t.Errorf("Check(%s) = %v, want allowed=%v", addr, err, allowed)
		}
	}
}

func TestParseRule(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"10.0.0.0/8":        "10.0.0.0/8",
		"10.0.0.5":          "10.0.0.5",
		"10.0.0.5:80":       "10.0.0.5:80",
		"[fd00::1]:80-90":   "[fd00::1]:80-90",
		"fd00::/8":          "fd00::/8",
		"db.internal:5432":  "db.internal:5432",
		"DB.internal":       "db.internal",
		"192.168.0.0/16:22": "192.168.0.0/16:22",
	}
	for in, want := range good {
		r, err := ParseRule(in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("ParseRule(%q).String() = %q, want %q", in, r.String(), want)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/8:0", "host:70000", "[::1", "a b", "h:9-1", "h:x"} {
		if _, err := ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) succeeded", bad)
		}
	}
}

// TestHalfClose: write a request, CloseWrite, read the whole reply, then EOF
// — in both directions, as over plain TCP.
func TestHalfClose(t *testing.T) {
	t.Parallel()
	reply := bytes.Repeat([]byte("reply "), 100_000)
	t.Run("client closes first", func(t *testing.T) {
		t.Parallel()
		got := make(chan []byte, 1)
		tg := startTarget(t, func(c net.Conn) {
			defer c.Close()
			req, _ := io.ReadAll(c) // until the client's FIN
			got <- req
			c.Write(reply)
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
		})
		ts := startServer(t, newServer(), false)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("request"))
		if err := c.(*Conn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		all, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(all, reply) {
			t.Fatalf("reply of %d bytes, want %d", len(all), len(reply))
		}
		if r := <-got; string(r) != "request" {
			t.Fatalf("target read %q", r)
		}
		if _, err := c.Write([]byte("x")); err == nil {
			t.Error("Write after CloseWrite succeeded")
		}
	})
	t.Run("target closes first", func(t *testing.T) {
		t.Parallel()
		got := make(chan []byte, 1)
		tg := startTarget(t, func(c net.Conn) {
			defer c.Close()
			c.Write([]byte("banner"))
			c.(*net.TCPConn).CloseWrite()
			all, _ := io.ReadAll(c)
			got <- all
		})
		ts := startServer(t, newServer(), false)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		banner, err := io.ReadAll(c)
		if err != nil || string(banner) != "banner" {
			t.Fatalf("read %q, %v; want the banner then EOF", banner, err)
		}
		if _, err := c.Write(reply); err != nil {
			t.Fatal(err)
		}
		c.(*Conn).CloseWrite()
		if r := <-got; !bytes.Equal(r, reply) {
			t.Fatalf("target read %d bytes, want %d", len(r), len(reply))
		}
	})
}

func TestNetConn(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "tunnel", true: "tunnel wss"}[useTLS]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			netConnTunnel(t, startServerMode(t, newServer(), useTLS, true))
		})
	}
	for _, hc := range []bool{true, false} {
		t.Run(map[bool]string{true: "pair half_close", false: "pair plain"}[hc], func(t *testing.T) {
			t.Parallel()
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				a, b := connPair(t, hc, Tuning{CloseTimeout: time.Second})
				return b, a, func() { closeBoth(a, b) }, nil
			})
		})
	}
}

func TestControlEndpointIs404(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			testControlEndpointIs404(t, m.direct)
		})
	}
}

func testControlEndpointIs404(t *testing.T, direct bool) {
	ts := startServerMode(t, newServer(), false, direct)
	for _, path := range []string{"/v1/sprites/my-sprite/control", "/v1/sprites/my-sprite/other", "/nope"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"error":"not_found"`) {
			t.Errorf("GET %s = %d %s, want 404 with a JSON error", path, resp.StatusCode, body)
		}
	}
}

// TestWriteToPeerClosed: io.Copy from a tunnel ends with a nil error when
// the peer closes it (a close frame with half_close), as at EOF.
func TestWriteToPeerClosed(t *testing.T) {
	t.Parallel()
	cl, sv := connPair(t, true, Tuning{})
	go func() {
		cl.Write([]byte("last words"))
		cl.Close()
	}()
	var got bytes.Buffer
	if _, err := io.Copy(&got, sv); err != nil || got.String() != "last words" {
		t.Fatalf("io.Copy = %q, %v; want the bytes and a nil error", got.String(), err)
	}
}

// TestCopyToKeepsReadDeadline: over wss, CopyTo gathers TLS records with
// deadlines of its own; a deadline the caller set still ends the copy.
func TestCopyToKeepsReadDeadline(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	tg := startTarget(t, func(c net.Conn) {
		c.Write(make([]byte, 300<<10))
		<-release // then silence
	})
	t.Cleanup(func() { close(release) })
	ts := startServer(t, newServer(), true)
	c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	done := make(chan error, 1)
	var n int64
	go func() {
		var err error
		n, err = io.Copy(io.Discard, c) // WriteTo, then CopyTo
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errDeadline) || n != 300<<10 {
			t.Fatalf("io.Copy = %d, %v; want all 300 KiB, then the deadline", n, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the caller's read deadline was lost")
	}
}

// netConnTunnel runs nettest.TestConn on client tunnels through ts (over
// TLS, write deadlines cut TLS records, which the Conn must finish).
func netConnTunnel(t *testing.T, ts *testServer) {
	accepted := make(chan net.Conn, 1)
	release := make(chan struct{})
	tg := startTarget(t, func(c net.Conn) {
		accepted <- c
		<-release // the conn is nettest's until then
	})
	t.Cleanup(func() { close(release) })
	nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
		c1, err = ts.dialer().DialSprite(testCtx(t), "s", "tcp", tg.addr())
		if err != nil {
			return nil, nil, nil, err
		}
		c2 = <-accepted
		return c1, c2, func() { closeBoth(c1, c2) }, nil
	})
}
