package websocket

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testlog"
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
