package websocket

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// slowDialer dials after a delay once slow is set: a target that takes
// a while to answer (within the server's DialTimeout).
type slowDialer struct {
	delay time.Duration
	slow  *atomic.Bool
}

func (d slowDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if d.slow == nil || d.slow.Load() {
		t := time.NewTimer(d.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// countingTarget is an echo target that counts its connections.
func countingTarget(t *testing.T) (*target, *atomic.Int32) {
	var n atomic.Int32
	tg := startTarget(t, func(c net.Conn) {
		n.Add(1)
		echo(c)
	})
	return tg, &n
}

// TestSlowDialAnswered (found by review; fails before the fix: the reply
// was cut by the deadline set at accept, the client retried, and the
// target was dialed 4 times): a target dial that takes longer than the
// handshake timeout (but within DialTimeout) must still get its reply,
// and the client must not retry a request whose target the server dialed
// (PROTOCOL §7): the target must see exactly one connection.
func TestSlowDialAnswered(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg, accepted := countingTarget(t)
			srv := newServer()
			srv.HandshakeTimeout = 300 * time.Millisecond
			srv.DialTimeout = 5 * time.Second
			srv.Sprites = ResolverFunc(func(context.Context, string) (dialer.ContextDialer, error) {
				return slowDialer{delay: 800 * time.Millisecond}, nil
			})
			ts := startServerMode(t, srv, false, m.direct)
			d := ts.dialer() // retries on, as by default
			c, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if c != nil {
				c.Close()
			}
			if err != nil || accepted.Load() != 1 {
				t.Fatalf("dial with a target that takes 800ms (HandshakeTimeout 300ms, DialTimeout 5s): err %v; target dialed %d times (want 1)", err, accepted.Load())
			}
		})
	}
}

// TestSlowDialAnsweredReused: the same on a reused connection, whose
// reply's write deadline was set before the dial (fails before the fix on
// both paths: 3 and 6 dials for 2 tunnels).
func TestSlowDialAnsweredReused(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg, accepted := countingTarget(t)
			var slow atomic.Bool
			srv := newServer()
			srv.HandshakeTimeout = 300 * time.Millisecond
			srv.DialTimeout = 5 * time.Second
			srv.Sprites = ResolverFunc(func(context.Context, string) (dialer.ContextDialer, error) {
				return slowDialer{delay: 800 * time.Millisecond, slow: &slow}, nil
			})
			ts := startServerMode(t, srv, false, m.direct)
			d := reuseDialer(t, ts)
			var on net.Conn
			c := dialOn(t, d, tg.addr(), &on)
			if !c.Reuse() {
				t.Fatal("no reuse")
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if d.IdleConnections() != 1 {
				t.Fatalf("%d idle connections, want 1", d.IdleConnections())
			}
			slow.Store(true)
			c2, err := d.DialSprite(testCtx(t), "s", "tcp", tg.addr())
			if c2 != nil {
				c2.Close()
			}
			if err != nil || accepted.Load() != 2 {
				t.Fatalf("second tunnel (target takes 800ms, HandshakeTimeout 300ms): err %v; target dialed %d times in all (want 2)", err, accepted.Load())
			}
		})
	}
}

// TestAdmitBoundedByHandshakeTimeout: the front door's Resolver (and
// Authenticator) calls end with the handshake timeout on both paths. On
// Serve's they had the server's own context (fails before the fix): a
// Resolver that hangs held the connection's goroutine and descriptor past
// HandshakeTimeout, after the client had given up. (Behind net/http, the
// request's context ends when the client leaves.)
func TestAdmitBoundedByHandshakeTimeout(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			released := make(chan struct{})
			entered := make(chan struct{}, 1)
			srv := newServer()
			srv.HandshakeTimeout = 100 * time.Millisecond
			srv.Sprites = ResolverFunc(func(ctx context.Context, _ string) (dialer.ContextDialer, error) {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-ctx.Done() // a resolver that never answers on its own
				close(released)
				return nil, ctx.Err()
			})
			ts := startServerMode(t, srv, false, m.direct)
			d := ts.dialer()
			d.Retry = Retry{MaxAttempts: 1}
			ctx, cancel := context.WithCancel(testCtx(t))
			errc := make(chan error, 1)
			go func() {
				_, err := d.DialSprite(ctx, "s", "tcp", tg.addr())
				errc <- err
			}()
			<-entered
			cancel() // the client gives up and closes its connection
			<-errc
			select {
			case <-released:
			case <-time.After(2 * time.Second):
				t.Fatal("the Resolver's context did not end within 2s of the client leaving (HandshakeTimeout 100ms): the connection is held as long as the Resolver hangs")
			}
		})
	}
}
