package websocket

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countConns makes d count the connections it dials (dialed) and those of
// them still open (open).
func countConns(d *Dialer) (dialed, open *atomic.Int64) {
	dialed, open = new(atomic.Int64), new(atomic.Int64)
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dialed.Add(1)
		open.Add(1)
		return &countedConn{Conn: c, open: open}, nil
	}
	return dialed, open
}

// countedConn counts itself out of open when first closed.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// openAtOnce opens n tunnels to sprite through d, all of them open at the
// same time, each after one echo, and then closes them cleanly.
func openAtOnce(t *testing.T, d *Dialer, sprite, addr string, n int) {
	t.Helper()
	cs := make([]*Conn, 0, n)
	for i := range n {
		c := dialTo(t, d, sprite, addr)
		roundTrip(t, c, payload(i, 64))
		cs = append(cs, c)
	}
	for _, c := range cs {
		if err := c.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

// TestPoolAdaptive: with MaxIdlePerSprite 0 the pool keeps what the
// concurrency of the tunnels to a sprite left, past the old fixed cap of
// DefaultMaxIdlePerSprite and up to AdaptiveMaxIdlePerSprite; a cap set
// explicitly bounds it; a tunnel at a time leaves one connection.
func TestPoolAdaptive(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	cases := []struct {
		max, open, want int
	}{
		{0, 1, 1},
		{0, 2 * DefaultMaxIdlePerSprite, 2 * DefaultMaxIdlePerSprite},
		{0, AdaptiveMaxIdlePerSprite + 2, AdaptiveMaxIdlePerSprite},
		{5, 12, 5},
		{-1, 4, 0},
	}
	for _, tc := range cases {
		t.Run(strconv.Itoa(tc.max)+"/"+strconv.Itoa(tc.open), func(t *testing.T) {
			t.Parallel()
			d := reuseDialer(t, ts)
			d.MaxIdlePerSprite = tc.max
			dialed, _ := countConns(d)
			openAtOnce(t, d, "s", tg.addr(), tc.open)
			if n := d.IdleConnections(); n != tc.want {
				t.Fatalf("%d idle connections after %d concurrent tunnels, want %d", n, tc.open, tc.want)
			}
			// The next burst of the same size finds them all: no new
			// connection is dialed while idle ones last.
			before := dialed.Load()
			openAtOnce(t, d, "s", tg.addr(), tc.want)
			if tc.want > 0 {
				if got := dialed.Load() - before; got != 0 {
					t.Fatalf("%d new connections for %d tunnels on %d idle ones", got, tc.want, tc.want)
				}
			}
			if n := d.IdleConnections(); n != tc.want {
				t.Fatalf("%d idle connections after the second burst, want %d", n, tc.want)
			}
			// Tunnels one at a time do not grow it.
			d.CloseIdleConnections()
			for i := range 3 {
				c := dialTo(t, d, "s", tg.addr())
				finishEcho(t, c, payload(100+i, 64))
				c.Close()
			}
			if want := min(tc.want, 1); d.IdleConnections() != want {
				t.Fatalf("%d idle connections after tunnels one at a time, want %d", d.IdleConnections(), want)
			}
		})
	}
}

// TestPoolAdaptiveExpires: the connections a burst left close after the
// idle timeout, all of them, and nothing is left running (goleak checks
// the package's goroutines at the end).
func TestPoolAdaptiveExpires(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	ts := startServer(t, newServer(), false)
	d := reuseDialer(t, ts)
	d.IdleConnTimeout = 20 * time.Millisecond
	_, open := countConns(d)
	openAtOnce(t, d, "s", tg.addr(), 2*DefaultMaxIdlePerSprite)
	// (Some may have expired already: the timeout is short.)
	if n := d.IdleConnections(); n > 2*DefaultMaxIdlePerSprite {
		t.Fatalf("%d idle connections, want at most %d", n, 2*DefaultMaxIdlePerSprite)
	}
	waitFor(t, "the idle connections to expire", func() bool { return d.IdleConnections() == 0 })
	waitFor(t, "the connections to close", func() bool { return open.Load() == 0 })
	waitFor(t, "the server's tunnels to end", func() bool { return ts.Live() == 0 })
}
