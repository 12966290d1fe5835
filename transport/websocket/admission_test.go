package websocket

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testlog"
	"github.com/spriteproxy/spriteproxy/internal/wire"
)

// TestAdmission: every outcome of the one admission decision (token,
// sprite, slot) on every path that takes it: ServeHTTP, Serve, and the next
// tunnel on a connection reused under either. The server turns to refusing
// only after the reused connection's first tunnel, so that on the reused
// paths it is that connection's next tunnel that is refused (the log says
// so), and then the client's fresh connection, whose HTTP status the
// client reports.
func TestAdmission(t *testing.T) {
	t.Parallel()
	errResolver := errors.New("sprite registry down")
	cases := []struct {
		name      string
		authErr   error // what Auth says once refusing
		spriteErr error // what Sprites says once refusing
		noAuth    bool
		tune      func(*Server)
		occupy    bool // another client holds the slot once refusing
		status    int  // 0: the tunnel opens
	}{
		{name: "admitted"},
		{name: "401 bad token", authErr: fmt.Errorf("%w: revoked", dialer.ErrUnauthorized), status: http.StatusUnauthorized},
		{name: "401 any auth error", authErr: errors.New("auth backend down"), status: http.StatusUnauthorized},
		{name: "403 forbidden sprite", authErr: dialer.ErrForbidden, status: http.StatusForbidden},
		{name: "404 unknown sprite", spriteErr: fmt.Errorf("%w: gone", dialer.ErrUnknownSprite), status: http.StatusNotFound},
		{name: "502 resolver error", spriteErr: errResolver, status: http.StatusBadGateway},
		{name: "429 per token", tune: func(s *Server) { s.MaxTunnelsPerToken = 1 }, occupy: true, status: http.StatusTooManyRequests},
		{name: "429 no auth is one identity", noAuth: true, tune: func(s *Server) { s.MaxTunnelsPerToken = 1 }, occupy: true, status: http.StatusTooManyRequests},
		{name: "503 per server", tune: func(s *Server) { s.MaxTunnels = 1 }, occupy: true, status: http.StatusServiceUnavailable},
	}
	for _, m := range modes {
		for _, reused := range []bool{false, true} {
			path := m.name
			if reused {
				path += "+reused"
			}
			for _, tc := range cases {
				t.Run(path+"/"+tc.name, func(t *testing.T) {
					t.Parallel()
					var accepted atomic.Int32
					tg := startTarget(t, func(c net.Conn) {
						accepted.Add(1)
						echo(c)
					})
					var refusing atomic.Bool
					rec := &testlog.Recorder{}
					srv := &Server{
						Sprites: ResolverFunc(func(ctx context.Context, name string) (dialer.ContextDialer, error) {
							if refusing.Load() && tc.spriteErr != nil {
								return nil, tc.spriteErr
							}
							return hostDialer, nil
						}),
						Logger: slog.New(rec),
					}
					if !tc.noAuth {
						srv.Auth = AuthFunc(func(_ context.Context, token, _ string) error {
							if token != testToken {
								return dialer.ErrUnauthorized
							}
							if refusing.Load() {
								return tc.authErr
							}
							return nil
						})
					}
					if tc.tune != nil {
						tc.tune(srv)
					}
					ts := startServerMode(t, srv, false, m.direct)
					d := reuseDialer(t, ts)
					if tc.noAuth {
						d.Token = "invented-1"
					}
					if reused {
						c := dialTo(t, d, "s", tg.addr())
						finishEcho(t, c, payload(0, 100))
						closeReused(t, d, c, 1)
						waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })
					}
					refusing.Store(true)
					if tc.occupy {
						d2 := ts.dialer()
						d2.DisableReuse = true
						if tc.noAuth {
							d2.Token = "invented-2"
						}
						c2 := dialTo(t, d2, "s", tg.addr())
						defer c2.Close()
						roundTrip(t, c2, payload(2, 10)) // the target has counted it
					}
					opened := accepted.Load()

					c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
					if tc.status == 0 {
						if err != nil {
							t.Fatal(err)
						}
						finishEcho(t, c.(*Conn), payload(1, 100))
						c.Close()
						if reused && accepted.Load() != 2 {
							t.Fatalf("the target saw %d dials, want 2", accepted.Load())
						}
						return
					}
					if err == nil {
						c.Close()
						t.Fatal("the tunnel opened")
					}
					var he *dialer.HTTPError
					if !errors.As(err, &he) || he.StatusCode != tc.status {
						t.Fatalf("dial: %v, want an *HTTPError %d", err, tc.status)
					}
					if n := accepted.Load(); n != opened {
						t.Fatalf("the target was dialed %d more times after the refusal", n-opened)
					}
					var onReused, onNew bool
					for _, r := range rec.Records() {
						if r.Message != "request refused" {
							continue
						}
						r.Attrs(func(a slog.Attr) bool {
							if a.Key == "reused" && a.Value.Bool() {
								onReused = true
							}
							if a.Key == "status" && a.Value.Int64() == int64(tc.status) {
								onNew = true
							}
							return true
						})
					}
					if reused && !onReused {
						t.Error("no refusal logged on the reused connection")
					}
					if !onNew {
						t.Errorf("no refusal with status %d logged", tc.status)
					}
				})
			}
		}
	}
}

// TestNoAuthOneIdentity: with no Auth, the per-token cap holds however
// many bearer values clients invent (three invented tokens once opened 30
// tunnels against a cap of 10).
func TestNoAuthOneIdentity(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			ts := startServerMode(t, &Server{MaxTunnelsPerToken: 3}, false, m.direct)
			var open []net.Conn
			defer func() {
				for _, c := range open {
					c.Close()
				}
			}()
			refused := 0
			for i := range 9 {
				d := ts.dialer()
				d.DisableReuse = true
				d.Token = fmt.Sprintf("invented-%d", i%3)
				c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
				if err != nil {
					var he *dialer.HTTPError
					if !errors.As(err, &he) || he.StatusCode != http.StatusTooManyRequests {
						t.Fatalf("dial %d: %v, want 429", i, err)
					}
					refused++
					continue
				}
				open = append(open, c)
			}
			if len(open) != 3 || refused != 6 {
				t.Fatalf("%d tunnels opened and %d refused, want 3 and 6", len(open), refused)
			}
		})
	}
}

// bufConn is a connection whose reads go through the reader that read the
// upgrade's answer.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// rawUpgrade sends an upgrade request with token to ts over raw bytes (TLS
// if ts serves it) and reads the answer's head: on a 101 the connection
// stays open, upgraded, until the test ends; on a refusal the answer is
// read to its end. The connection's deadline is 10 s.
func rawUpgrade(t *testing.T, ts *testServer, token string) (net.Conn, string) {
	t.Helper()
	host := ts.URL[strings.Index(ts.URL, "://")+3:]
	var c net.Conn
	var err error
	if ts.ClientTLS != nil {
		c, err = tls.Dial("tcp", host, ts.ClientTLS)
	} else {
		c, err = net.Dial("tcp", host)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(c, "GET /v1/sprites/s/proxy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer "+token+"\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var head strings.Builder
	for {
		line, err := br.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			t.Fatalf("answer %q: %v", head.String(), err)
		}
		if line == "\r\n" {
			break
		}
	}
	a := head.String()
	if strings.HasPrefix(a, "HTTP/1.1 101 ") {
		return bufConn{c, br}, a
	}
	body, _ := io.ReadAll(br)
	return nil, a + string(body)
}

// wantRefusal checks a raw answer: its status line, Retry-After, exactly
// one JSON Content-Type, and a body whose message says why.
func wantRefusal(t *testing.T, a, status, why string) {
	t.Helper()
	if !strings.HasPrefix(a, status+"\r\n") || !strings.Contains(a, "\r\nRetry-After: 1\r\n") ||
		strings.Count(strings.ToLower(a), "content-type:") != 1 || !strings.Contains(a, "\r\nContent-Type: application/json\r\n") ||
		!strings.Contains(a, `{"error":"unavailable","message":"`+why+`"}`) {
		t.Fatalf("answer %q, want %s with Retry-After and the message %q", a, status, why)
	}
}

// TestSilentUpgraders: connections that upgrade with a valid token and
// never send their first message hold no tunnel slot, only a handshake
// slot under caps of their own, so they cannot push others into 429 or
// 503 (1,100 silent upgraders once pushed 94 of 99 legitimate probes into
// 429). Here more silent upgraders than the server has tunnels: a tunnel of
// their own token and tunnels of another still open, up to the tunnel cap,
// which still holds; one silent upgrader over the handshake cap gets a 429
// that says so. Raw bytes, both serving paths, plain and TLS.
func TestSilentUpgraders(t *testing.T) {
	t.Parallel()
	const silent = 40
	tg := startTarget(t, echo)
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := m.name
			if useTLS {
				name += "/tls"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				srv := &Server{
					Auth:                  AuthFunc(func(context.Context, string, string) error { return nil }),
					MaxTunnels:            4,
					MaxTunnelsPerToken:    4,
					MaxHandshakesPerToken: silent + 1,
					// Long enough that no silent upgrader is dropped while
					// the test runs; the cleanup closes them.
					HandshakeTimeout: time.Minute,
				}
				ts := startServerMode(t, srv, useTLS, m.direct)
				upgradeSilently := func() string {
					t.Helper()
					_, a := rawUpgrade(t, ts, "silent")
					return a
				}
				tunnel := func(token string) (net.Conn, error) {
					t.Helper()
					d := ts.dialer()
					d.Token, d.DisableReuse = token, true
					c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
					if err == nil {
						t.Cleanup(func() { c.Close() })
						roundTrip(t, c, payload(1, 100))
					}
					return c, err
				}
				for i := range silent { // ten times MaxTunnels
					if a := upgradeSilently(); !strings.HasPrefix(a, "HTTP/1.1 101 ") {
						t.Fatalf("silent upgrader %d: answer %q, want 101", i, a)
					}
				}
				if _, err := tunnel("silent"); err != nil {
					t.Fatalf("a tunnel of the silent upgraders' token: %v", err)
				}
				if a := upgradeSilently(); !strings.HasPrefix(a, "HTTP/1.1 101 ") {
					t.Fatalf("the last silent upgrader under the cap: answer %q, want 101", a)
				}
				wantRefusal(t, upgradeSilently(), "HTTP/1.1 429 Too Many Requests",
					"token is at its limit of "+itoa(silent+1)+" connections waiting for their first message")
				for i := range 3 {
					if _, err := tunnel("other"); err != nil {
						t.Fatalf("tunnel %d of another token: %v", i, err)
					}
				}
				_, err := tunnel("other")
				var he *dialer.HTTPError
				if !errors.As(err, &he) || he.StatusCode != http.StatusServiceUnavailable || !errors.Is(err, dialer.ErrUnavailable) {
					t.Fatalf("a fifth tunnel: %v, want 503 (MaxTunnels 4)", err)
				}
			})
			t.Run(name+"/server cap", func(t *testing.T) {
				t.Parallel()
				srv := &Server{
					Auth:             AuthFunc(func(context.Context, string, string) error { return nil }),
					MaxHandshakes:    2,
					HandshakeTimeout: time.Minute,
				}
				ts := startServerMode(t, srv, useTLS, m.direct)
				for _, token := range []string{"a", "b"} {
					if _, a := rawUpgrade(t, ts, token); !strings.HasPrefix(a, "HTTP/1.1 101 ") {
						t.Fatalf("silent upgrader %s: answer %q, want 101", token, a)
					}
				}
				_, a := rawUpgrade(t, ts, "c")
				wantRefusal(t, a, "HTTP/1.1 503 Service Unavailable", "server is at its limit of 2 connections waiting for their first message")
			})
		}
	}
}

// TestTunnelCapFilledAfterUpgrade: a connection admitted at its upgrade
// takes its tunnel slot when its first message comes; if other tunnels
// took the last one in between, the answer is the error reply unavailable
// (then a close), never a dial of the target, and a Go client's error
// matches dialer.ErrUnavailable.
func TestTunnelCapFilledAfterUpgrade(t *testing.T) {
	t.Parallel()
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			name := m.name
			if useTLS {
				name += "/tls"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				var accepted atomic.Int32 // this subtest's target's
				tg := startTarget(t, func(c net.Conn) {
					accepted.Add(1)
					echo(c)
				})
				srv := newServer()
				srv.MaxTunnelsPerToken = 1
				ts := startServerMode(t, srv, useTLS, m.direct)
				c, a := rawUpgrade(t, ts, testToken)
				if c == nil {
					t.Fatalf("answer %q, want 101", a)
				}
				d := ts.dialer()
				d.DisableReuse = true
				other, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
				if err != nil {
					t.Fatal(err)
				}
				defer other.Close()
				roundTrip(t, other, payload(1, 10)) // the target has counted it
				before := accepted.Load()
				if err := wsutil.WriteClientText(c, []byte(`{"host":"127.0.0.1","port":`+itoa(tg.port)+`}`)); err != nil {
					t.Fatal(err)
				}
				msg, op, err := wsutil.ReadServerData(c)
				var rep wire.Reply
				if err != nil || op != ws.OpText || json.Unmarshal(msg, &rep) != nil ||
					rep.Status != wire.StatusError || rep.Error != dialer.CodeUnavailable || rep.Message != "token is at its limit of 1 tunnels" {
					t.Fatalf("reply %q (%v, %v), want the error reply unavailable", msg, op, err)
				}
				if !errors.Is(&dialer.TargetError{Code: rep.Error, Message: rep.Message}, dialer.ErrUnavailable) {
					t.Fatal("the client's error for the reply does not match ErrUnavailable")
				}
				if _, _, err := wsutil.ReadServerData(c); !errors.As(err, new(wsutil.ClosedError)) {
					t.Fatalf("after the reply: %v, want a close frame", err)
				}
				if n := accepted.Load(); n != before {
					t.Fatalf("the target was dialed %d times for the refused tunnel", n-before)
				}
			})
		}
	}
}

// TestShutdownWaitsForHandshake: a connection upgraded before Shutdown
// began still gets its tunnel when its first message comes during the
// drain, and Shutdown waits for that tunnel, on both serving paths.
func TestShutdownWaitsForHandshake(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			srv := newServer()
			srv.HandshakeTimeout = time.Minute
			ts := startServerMode(t, srv, false, m.direct)
			c, a := rawUpgrade(t, ts, testToken)
			if c == nil {
				t.Fatalf("answer %q, want 101", a)
			}
			done := make(chan error, 1)
			ctx := testCtx(t)
			go func() { done <- srv.Shutdown(ctx) }()
			waitFor(t, "Shutdown to begin", func() bool {
				srv.mu.Lock()
				defer srv.mu.Unlock()
				return srv.shutting
			})
			if err := wsutil.WriteClientText(c, []byte(`{"host":"127.0.0.1","port":`+itoa(tg.port)+`}`)); err != nil {
				t.Fatal(err)
			}
			msg, _, err := wsutil.ReadServerData(c)
			var rep wire.Reply
			if err != nil || json.Unmarshal(msg, &rep) != nil || rep.Status != wire.StatusConnected {
				t.Fatalf("reply %q (%v), want connected", msg, err)
			}
			if n := srv.Live(); n != 1 {
				t.Fatalf("Live() = %d during the drain, want 1", n)
			}
			c.Close()
			if err := <-done; err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
		})
	}
}
