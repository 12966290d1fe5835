package websocket

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spriteproxy/spriteproxy/dialer"
)

// histCount is the number of observations of the histogram name in reg.
func histCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatalf("no %s gathered", name)
	return 0
}

// TestMetrics runs a known set of tunnels and refusals on each serving
// path and checks every count exactly: tunnels by result, HTTP refusals by
// status, bytes each way, handshakes and dials observed, and the gauges of
// open tunnels and idle connections.
func TestMetrics(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			metrics := NewMetrics()
			reg := prometheus.NewRegistry()
			reg.MustRegister(metrics)
			srv := newServer()
			srv.Metrics = metrics
			srv.MaxTunnels = 1
			srv.DialTimeout = 50 * time.Millisecond
			srv.Sprites = ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
				switch name {
				case "s":
					return hostDialer, nil
				case "slow": // a target that never answers: the dial times out
					return dialerFunc(func(ctx context.Context, _, _ string) (net.Conn, error) {
						<-ctx.Done()
						return nil, ctx.Err()
					}), nil
				case "broken": // a network that fails otherwise
					return dialerFunc(func(context.Context, string, string) (net.Conn, error) {
						return nil, errors.New("no route")
					}), nil
				}
				return nil, dialer.ErrUnknownSprite
			})
			ts := startServerMode(t, srv, false, m.direct)
			d := reuseDialer(t, ts)
			ctx := testCtx(t)
			// The cap of one tunnel leaves no room for the slot of the tunnel
			// before, which the server frees just after its reply or end.
			freed := func() { waitFor(t, "the last tunnel's slot freed", func() bool { return ts.Live() == 0 }) }
			const upgrade = "Host: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"

			// ok: three tunnels, the second and third on the first's
			// connection; the third stays open while a fourth is over the
			// cap of one.
			sent := 0
			for i, n := range []int{100, 5000} {
				freed()
				c := dialTo(t, d, "s", tg.addr())
				p := payload(i, n)
				finishEcho(t, c, p)
				sent += len(p)
				closeReused(t, d, c, 1)
			}
			freed()
			held := dialTo(t, d, "s", tg.addr())
			waitFor(t, "one tunnel open", func() bool { return testutil.ToFloat64(metrics.tunnelsOpen) == 1 })
			if got := rawExchange(t, ts, "GET /v1/sprites/s/proxy HTTP/1.1\r\n"+upgrade+"Authorization: Bearer "+testToken+"\r\n\r\n"); !strings.Contains(string(got), " 503 ") {
				t.Fatalf("over the cap: %q", got)
			}
			p := payload(9, 300)
			finishEcho(t, held, p)
			sent += len(p)
			closeReused(t, d, held, 1)
			// Error replies, each on the idle connection.
			freed()
			if _, err := d.DialSprite(ctx, "s", "tcp", "127.0.0.1:"+itoa(closedPort(t))); !errors.Is(err, dialer.ErrTargetRefused) {
				t.Fatalf("refused target: %v", err)
			}
			freed()
			if _, err := d.DialSprite(ctx, "s", "tcp", "10.255.255.1:80"); !errors.Is(err, dialer.ErrTargetForbidden) {
				t.Fatalf("forbidden target: %v", err)
			}
			freed()
			if _, err := d.DialSprite(ctx, "slow", "tcp", "127.0.0.1:1"); err == nil || dialer.CodeOf(err) != dialer.CodeTimeout {
				t.Fatalf("slow target: %v", err)
			}
			freed()
			if _, err := d.DialSprite(ctx, "broken", "tcp", "127.0.0.1:1"); err == nil || dialer.CodeOf(err) != dialer.CodeUnreachable {
				t.Fatalf("broken network: %v", err)
			}
			// HTTP refusals.
			freed()
			if _, err := d.DialSprite(ctx, "nope", "tcp", tg.addr()); !errors.Is(err, dialer.ErrUnknownSprite) {
				t.Fatalf("unknown sprite: %v", err)
			}
			bad := &Dialer{BaseURL: ts.URL, Token: "wrong"}
			freed()
			if _, err := bad.DialSprite(ctx, "s", "tcp", tg.addr()); !errors.Is(err, dialer.ErrUnauthorized) {
				t.Fatalf("wrong token: %v", err)
			}
			rawExchange(t, ts, "GET /v1/sprites/s/proxy HTTP/1.1\r\n"+upgrade+"Authorization: a\r\nAuthorization: b\r\n\r\n") // 400, a tunnel
			rawExchange(t, ts, "GET /v1/nothing HTTP/1.1\r\n"+upgrade+"\r\n")                                                 // 404, no tunnel
			healthGet(t, ts, "/healthz", "HTTP/1.1")                                                                          // not counted

			d.CloseIdleConnections()
			waitFor(t, "no tunnel open", func() bool { return testutil.ToFloat64(metrics.tunnelsOpen) == 0 })
			waitFor(t, "no idle connection", func() bool { return testutil.ToFloat64(metrics.idle) == 0 })
			err := testutil.CollectAndCompare(metrics, strings.NewReader(`
# HELP spriteproxy_tunnels_total Tunnels the server answered (a reply to the first message, or an HTTP refusal of the upgrade), by result.
# TYPE spriteproxy_tunnels_total counter
spriteproxy_tunnels_total{result="bad_request"} 1
spriteproxy_tunnels_total{result="forbidden"} 1
spriteproxy_tunnels_total{result="ok"} 3
spriteproxy_tunnels_total{result="over_limit"} 1
spriteproxy_tunnels_total{result="refused"} 1
spriteproxy_tunnels_total{result="timeout"} 1
spriteproxy_tunnels_total{result="unauthorized"} 1
spriteproxy_tunnels_total{result="unknown_sprite"} 1
spriteproxy_tunnels_total{result="unreachable"} 1
# HELP spriteproxy_http_refusals_total Upgrade requests refused with an HTTP status, by status code.
# TYPE spriteproxy_http_refusals_total counter
spriteproxy_http_refusals_total{code="400"} 1
spriteproxy_http_refusals_total{code="401"} 1
spriteproxy_http_refusals_total{code="404"} 2
spriteproxy_http_refusals_total{code="503"} 1
# HELP spriteproxy_tunnel_bytes_total Payload bytes carried by tunnels that ended, by direction (to_target, from_target).
# TYPE spriteproxy_tunnel_bytes_total counter
spriteproxy_tunnel_bytes_total{direction="from_target"} `+itoa(sent)+`
spriteproxy_tunnel_bytes_total{direction="to_target"} `+itoa(sent)+`
# HELP spriteproxy_tunnels_open Tunnels open now: between their connected reply and their end.
# TYPE spriteproxy_tunnels_open gauge
spriteproxy_tunnels_open 0
# HELP spriteproxy_connections_idle Connections waiting for their client's next tunnel (the reuse extension).
# TYPE spriteproxy_connections_idle gauge
spriteproxy_connections_idle 0
`), "spriteproxy_tunnels_total", "spriteproxy_http_refusals_total", "spriteproxy_tunnel_bytes_total",
				"spriteproxy_tunnels_open", "spriteproxy_connections_idle")
			if err != nil {
				t.Error(err)
			}
			// Replies: 3 ok, refused, forbidden, timeout, unreachable.
			if n := histCount(t, reg, "spriteproxy_handshake_seconds"); n != 7 {
				t.Errorf("%d handshakes observed, want 7", n)
			}
			// Dials: 3 ok, refused, timeout, unreachable (forbidden is not
			// dialed).
			if n := histCount(t, reg, "spriteproxy_target_dial_seconds"); n != 6 {
				t.Errorf("%d dials observed, want 6", n)
			}
		})
	}
}

// TestMetricsIdleGauge: spriteproxy_connections_idle follows the
// connections waiting for a next tunnel, up as tunnels end under reuse and
// down as they are taken again or closed.
func TestMetricsIdleGauge(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	metrics := NewMetrics()
	srv := newServer()
	srv.Metrics = metrics
	ts := startServer(t, srv, false)
	d := reuseDialer(t, ts)
	idle := func() float64 { return testutil.ToFloat64(metrics.idle) }
	a := dialTo(t, d, "s", tg.addr())
	b := dialTo(t, d, "s", tg.addr())
	closeReused(t, d, a, 1)
	closeReused(t, d, b, 2)
	waitFor(t, "two idle connections", func() bool { return idle() == 2 })
	c := dialTo(t, d, "s", tg.addr())
	waitFor(t, "one idle connection", func() bool { return idle() == 1 })
	closeReused(t, d, c, 2)
	waitFor(t, "two idle connections again", func() bool { return idle() == 2 })
	ts.Drain()
	waitFor(t, "none idle after Drain", func() bool { return idle() == 0 })
}

// TestMetricsTwoServers: two servers in one process, each with its own
// Metrics, register into one registry under a label each (a third under
// a label already taken is refused), and count apart.
func TestMetricsTwoServers(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	reg := prometheus.NewRegistry()
	var servers [2]*testServer
	for i, name := range []string{"a", "b"} {
		srv := newServer()
		srv.Metrics = NewMetrics()
		prometheus.WrapRegistererWith(prometheus.Labels{"server": name}, reg).MustRegister(srv.Metrics)
		servers[i] = startServer(t, srv, false)
	}
	var are prometheus.AlreadyRegisteredError
	if err := prometheus.WrapRegistererWith(prometheus.Labels{"server": "a"}, reg).Register(NewMetrics()); !errors.As(err, &are) {
		t.Errorf("a third Metrics under the same label registered: %v", err)
	}
	for range 2 {
		d := servers[0].dialer()
		d.DisableReuse = true
		c := dialTo(t, d, "s", tg.addr())
		finishEcho(t, c, payload(0, 10))
		c.Close()
	}
	d := servers[1].dialer()
	d.DisableReuse = true
	c := dialTo(t, d, "s", tg.addr())
	finishEcho(t, c, payload(1, 10))
	c.Close()
	for i, want := range []float64{2, 1} {
		if got := testutil.ToFloat64(servers[i].Metrics.result[resultOK]); got != want {
			t.Errorf("server %d: %v ok tunnels, want %v", i, got, want)
		}
	}
	// The registry shows both, apart.
	if n := testutil.CollectAndCount(reg, "spriteproxy_tunnels_open"); n != 2 {
		t.Errorf("%d spriteproxy_tunnels_open series, want one per server", n)
	}
}
