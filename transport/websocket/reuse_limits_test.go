package websocket

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// TestReuseServerIdleTimeout: the server closes a connection left idle for
// its IdleConnTimeout; the client's next dial finds it closed and opens a
// fresh one, transparently, and drops the other idle ones with it.
func TestReuseServerIdleTimeout(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			srv := newServer()
			srv.IdleConnTimeout = 50 * time.Millisecond
			ts, closed := startServerNotify(t, srv, m.direct)
			d := reuseDialer(t, ts)

			c := dialTo(t, d, "s", tg.addr())
			old := c.NetConn()
			roundTrip(t, c, payload(0, 100))
			closeReused(t, d, c, 1)
			recv(t, closed, "the server to close the idle connection")

			c = dialTo(t, d, "s", tg.addr())
			if c.NetConn() == old {
				t.Fatal("the tunnel is on the connection the server closed")
			}
			if !c.Reuse() {
				t.Fatal("Reuse() = false on the fresh connection")
			}
			finishEcho(t, c, payload(1, 100))
			closeReused(t, d, c, 1)
			recv(t, closed, "the server to close the second idle connection")

			// Two idle, both closed by the server: the dial that finds the
			// first dead drops the other too.
			a := dialTo(t, d, "s", tg.addr())
			b := dialTo(t, d, "s", tg.addr())
			roundTrip(t, a, payload(2, 10))
			roundTrip(t, b, payload(3, 10))
			closeReused(t, d, a, 1)
			closeReused(t, d, b, 2)
			recv(t, closed, "the server to close an idle connection")
			recv(t, closed, "the server to close the other idle connection")
			c = dialTo(t, d, "s", tg.addr())
			if n := d.IdleConnections(); n != 0 {
				t.Fatalf("%d idle connections kept after finding one closed by the server, want 0", n)
			}
			finishEcho(t, c, payload(4, 100))
			c.Close()
		})
	}
}

// TestReuseClientIdleTimeout: the client closes a connection left idle for
// its IdleConnTimeout, and the server sees it go.
func TestReuseClientIdleTimeout(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts, closed := startServerNotify(t, newServer(), false)
	d := reuseDialer(t, ts)
	const timeout = 50 * time.Millisecond
	d.IdleConnTimeout = timeout
	c := dialTo(t, d, "s", tg.addr())
	old := c.NetConn()
	roundTrip(t, c, payload(0, 100))
	before := time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := d.IdleConnections(); n != 1 && time.Since(before) < timeout {
		t.Fatalf("%d idle connections right after Close, want 1", n)
	}
	waitFor(t, "the idle connection to expire", func() bool { return d.IdleConnections() == 0 })
	recv(t, closed, "the server to see the idle connection closed")
	c = dialTo(t, d, "s", tg.addr())
	if c.NetConn() == old {
		t.Fatal("the tunnel is on the expired connection")
	}
	finishEcho(t, c, payload(1, 100))
	c.Close()
}

// TestReuseMaxIdlePerSprite: the pool keeps at most MaxIdlePerSprite
// connections per sprite, none if it is negative.
func TestReuseMaxIdlePerSprite(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	cases := []struct {
		max, want int
	}{{2, 2}, {-1, 0}, {0, 3}}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.max), func(t *testing.T) {
			t.Parallel()
			d := reuseDialer(t, ts)
			d.MaxIdlePerSprite = tc.max
			var cs []*Conn
			for i := range 3 {
				c := dialTo(t, d, "s", tg.addr())
				roundTrip(t, c, payload(i, 100))
				cs = append(cs, c)
			}
			other := dialTo(t, d, "other", tg.addr())
			roundTrip(t, other, payload(9, 100))
			for _, c := range cs {
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if n := d.IdleConnections(); n != tc.want {
				t.Fatalf("%d idle connections, want %d", n, tc.want)
			}
			// The cap is per sprite.
			other.Close()
			want := tc.want + 1
			if tc.max < 0 {
				want = 0
			}
			if n := d.IdleConnections(); n != want {
				t.Fatalf("%d idle connections with another sprite's, want %d", n, want)
			}
			// What is kept works.
			for i := range tc.want {
				c := dialTo(t, d, "s", tg.addr())
				finishEcho(t, c, payload(20+i, 100))
				defer c.Close()
			}
		})
	}
}

// TestReusePerSprite: a connection is reused only for the sprite it was
// opened to, whose network the server resolved once, at the upgrade.
func TestReusePerSprite(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			dialed := make(chan string, 16)
			srv := newServer()
			srv.Sprites = ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
				return dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
					dialed <- name
					return hostDialer.DialContext(ctx, network, addr)
				}), nil
			})
			ts := startServerMode(t, srv, false, m.direct)
			d := reuseDialer(t, ts)
			conns := map[string]net.Conn{}
			for i, sprite := range []string{"a", "b", "a", "b", "a"} {
				c := dialTo(t, d, sprite, tg.addr())
				if got := recv(t, dialed, "the target dial"); got != sprite {
					t.Fatalf("tunnel %d to sprite %s was dialed in sprite %s's network", i, sprite, got)
				}
				if prev, ok := conns[sprite]; ok && c.NetConn() != prev {
					t.Fatalf("tunnel %d to %s: not on %s's idle connection", i, sprite, sprite)
				}
				for other, nc := range conns {
					if other != sprite && nc == c.NetConn() {
						t.Fatalf("tunnel %d to %s reuses %s's connection", i, sprite, other)
					}
				}
				conns[sprite] = c.NetConn()
				finishEcho(t, c, payload(i, 100))
				c.Close()
			}
			if n := d.IdleConnections(); n != 2 {
				t.Fatalf("%d idle connections, want one per sprite", n)
			}
		})
	}
}

// TestReuseDisabled: with reuse turned off on either side (or half_close,
// which it needs), tunnels work and close as before, each on a connection
// of its own.
func TestReuseDisabled(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	cases := []struct {
		name   string
		client func(*Dialer)
		server func(*Server)
	}{
		{"client DisableReuse", func(d *Dialer) { d.DisableReuse = true }, nil},
		{"server DisableReuse", nil, func(s *Server) { s.DisableReuse = true }},
		{"client DisableHalfClose", func(d *Dialer) { d.DisableHalfClose = true }, nil},
		{"server DisableHalfClose", nil, func(s *Server) { s.DisableHalfClose = true }},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				srv := newServer()
				if tc.server != nil {
					tc.server(srv)
				}
				ts, closed := startServerNotify(t, srv, m.direct)
				d := reuseDialer(t, ts)
				if tc.client != nil {
					tc.client(d)
				}
				var prev net.Conn
				for i := range 3 {
					c := dialTo(t, d, "s", tg.addr())
					if c.Reuse() {
						t.Fatal("Reuse() = true")
					}
					if c.NetConn() == prev {
						t.Fatalf("tunnel %d reuses a connection", i)
					}
					prev = c.NetConn()
					roundTrip(t, c, payload(i, 1000))
					if err := c.Close(); err != nil {
						t.Fatalf("Close: %v", err)
					}
					if n := d.IdleConnections(); n != 0 {
						t.Fatalf("%d idle connections without reuse", n)
					}
					recv(t, closed, "the server to close the connection")
				}
			})
		}
	}
}

// TestReuseServerMaxIdleConns: past MaxIdleConns the server closes a
// connection when its tunnel ends; the client, which kept it, dials afresh
// without its caller seeing anything.
func TestReuseServerMaxIdleConns(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	srv := newServer()
	srv.MaxIdleConns = 1
	ts, closed := startServerNotify(t, srv, false)
	d := reuseDialer(t, ts)
	a := dialTo(t, d, "s", tg.addr())
	b := dialTo(t, d, "s", tg.addr())
	roundTrip(t, a, payload(0, 10))
	roundTrip(t, b, payload(1, 10))
	closeReused(t, d, a, 1)
	closeReused(t, d, b, 2)
	recv(t, closed, "the server to close the connection over its idle cap")
	for i := range 2 {
		c := dialTo(t, d, "s", tg.addr())
		finishEcho(t, c, payload(2+i, 100))
		defer c.Close()
	}
}

// TestReuseRevokedToken: each tunnel on a reused connection has its token
// checked again; once revoked, the dial fails with the upgrade's 401 (the
// client, its connection closed before any reply, dials afresh), and the
// target is not dialed.
func TestReuseRevokedToken(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var accepted atomic.Int32
			tg := startTarget(t, func(c net.Conn) {
				accepted.Add(1)
				echo(c)
			})
			var revoked atomic.Bool
			srv := &Server{Auth: AuthFunc(func(_ context.Context, token, _ string) error {
				if revoked.Load() || token != testToken {
					return dialer.ErrUnauthorized
				}
				return nil
			})}
			ts := startServerMode(t, srv, false, m.direct)
			d := reuseDialer(t, ts)
			c := dialTo(t, d, "s", tg.addr())
			roundTrip(t, c, payload(0, 100))
			closeReused(t, d, c, 1)

			revoked.Store(true)
			c2, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if err == nil {
				c2.Close()
				t.Fatal("dial with a revoked token succeeded on the reused connection")
			}
			var he *dialer.HTTPError
			if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
				t.Fatalf("dial: %v, want an *HTTPError 401", err)
			}
			mustIs(t, err, dialer.ErrUnauthorized)
			if n := d.IdleConnections(); n != 0 {
				t.Fatalf("%d idle connections after the refusal", n)
			}
			if n := accepted.Load(); n != 1 {
				t.Fatalf("the target was dialed %d times, want once", n)
			}

			revoked.Store(false)
			c = dialTo(t, d, "s", tg.addr())
			finishEcho(t, c, payload(1, 100))
			closeReused(t, d, c, 1)
		})
	}
}

// TestReuseLimits: tunnels count against the limits while open, idle
// connections do not; a next tunnel over a limit on a reused connection is
// refused with the upgrade's status.
func TestReuseLimits(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	cases := []struct {
		name   string
		srv    func() *Server
		status int
	}{
		{"MaxTunnels", func() *Server {
			s := newServer()
			s.MaxTunnels = 1
			return s
		}, http.StatusServiceUnavailable},
		{"MaxTunnelsPerToken", func() *Server {
			s := newServer()
			s.MaxTunnelsPerToken = 1
			return s
		}, http.StatusTooManyRequests},
	}
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				ts := startServerMode(t, tc.srv(), false, m.direct)
				refused := func(t *testing.T, d *Dialer) {
					t.Helper()
					c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
					if err == nil {
						c.Close()
						t.Fatal("a second tunnel opened over the limit")
					}
					var he *dialer.HTTPError
					if !errors.As(err, &he) || he.StatusCode != tc.status {
						t.Fatalf("dial over the limit: %v, want an *HTTPError %d", err, tc.status)
					}
					mustIs(t, err, dialer.ErrUnavailable)
				}
				d := reuseDialer(t, ts)
				c := dialTo(t, d, "s", tg.addr())
				if n := ts.Live(); n != 1 {
					t.Fatalf("Live() = %d with a tunnel open, want 1", n)
				}
				refused(t, d)
				roundTrip(t, c, payload(0, 100))
				nc := c.NetConn()
				closeReused(t, d, c, 1)
				// The server lets go of the slot after its end went out,
				// on its own goroutine: nothing to wait on from here.
				waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })

				c = dialOn(t, d, tg.addr(), &nc)
				if n := ts.Live(); n != 1 {
					t.Fatalf("Live() = %d on the reused connection, want 1", n)
				}
				roundTrip(t, c, payload(1, 100))
				closeReused(t, d, c, 1)
				waitFor(t, "Live() to drop to 0", func() bool { return ts.Live() == 0 })

				// Another client takes the slot: the next tunnel on the idle
				// connection is over the limit, and the client learns why.
				d2 := reuseDialer(t, ts)
				c2 := dialTo(t, d2, "s", tg.addr())
				refused(t, d)
				if n := d.IdleConnections(); n != 0 {
					t.Fatalf("%d idle connections after a refusal on it", n)
				}
				roundTrip(t, c2, payload(2, 100))
				closeReused(t, d2, c2, 1)
			})
		}
	}
}

// TestReuseShutdownIdle: Shutdown closes idle connections at once (it
// does not wait out their idle timeout), then nothing more opens. The
// rounds of one tunnel each call Shutdown the moment the client's Close
// has returned, while the server is still putting the connection back to
// wait for the next handshake.
func TestReuseShutdownIdle(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			shutdown := func(t *testing.T, ts *testServer, d *Dialer) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				start := time.Now()
				if err := ts.Shutdown(ctx); err != nil {
					t.Fatalf("Shutdown with only idle connections = %v after %v", err, time.Since(start))
				}
				if n := ts.Live(); n != 0 {
					t.Fatalf("Live() = %d after Shutdown", n)
				}
				c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
				if err == nil {
					c.Close()
					t.Fatal("a tunnel opened after Shutdown")
				}
				if n := d.IdleConnections(); n != 0 {
					t.Fatalf("%d idle connections kept after Shutdown closed them", n)
				}
			}
			t.Run("three idle", func(t *testing.T) {
				ts := startServerMode(t, newServer(), false, m.direct)
				d := reuseDialer(t, ts)
				var cs []*Conn
				for i := range 3 {
					c := dialTo(t, d, "s", tg.addr())
					roundTrip(t, c, payload(i, 100))
					cs = append(cs, c)
				}
				for i, c := range cs {
					closeReused(t, d, c, i+1)
				}
				shutdown(t, ts, d)
			})
			t.Run("right after Close", func(t *testing.T) {
				for i := range 30 {
					ts := startServerMode(t, newServer(), false, m.direct)
					d := reuseDialer(t, ts)
					c := dialTo(t, d, "s", tg.addr())
					roundTrip(t, c, payload(i, 10))
					if err := c.Close(); err != nil {
						t.Fatal(err)
					}
					shutdown(t, ts, d)
				}
			})
		})
	}
}

// TestReuseCloseIdleConnections: CloseIdleConnections closes the idle
// connections (the server sees them go), not the tunnels in use, which
// still leave theirs idle when they close.
func TestReuseCloseIdleConnections(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts, closed := startServerNotify(t, newServer(), false)
	d := reuseDialer(t, ts)
	a := dialTo(t, d, "s", tg.addr())
	b := dialTo(t, d, "s", tg.addr())
	roundTrip(t, a, payload(0, 10))
	closeReused(t, d, a, 1)
	d.CloseIdleConnections()
	if n := d.IdleConnections(); n != 0 {
		t.Fatalf("%d idle connections after CloseIdleConnections", n)
	}
	recv(t, closed, "the server to see the idle connection closed")
	roundTrip(t, b, payload(1, 10)) // in use: untouched
	nb := b.NetConn()
	closeReused(t, d, b, 1)
	c := dialOn(t, d, tg.addr(), &nb)
	finishEcho(t, c, payload(2, 10))
	closeReused(t, d, c, 1)
}

// rawReuseClient speaks the reuse extension by hand, with gobwas's
// functions, on an upgraded connection.
