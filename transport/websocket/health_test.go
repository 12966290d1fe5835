package websocket

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// healthGet is the status line and body of a GET of path on ts, on a
// connection of its own, as a balancer's health check sends it (no token).
func healthGet(t *testing.T, ts *testServer, path, version string) (status, body string) {
	t.Helper()
	got := rawExchange(t, ts, "GET "+path+" "+version+"\r\nHost: x\r\n\r\n")
	head, rest, ok := strings.Cut(string(got), "\r\n\r\n")
	if !ok {
		t.Fatalf("GET %s: no complete answer: %q", path, got)
	}
	status, _, _ = strings.Cut(head, "\r\n")
	return status, rest
}

// TestHealth: /healthz and /readyz answer 200 with no token on both serving
// paths, over TLS or not, to HTTP/1.1 and HTTP/1.0; from Drain on, 503
// draining; and nothing else is in the answers.
func TestHealth(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		for _, useTLS := range []bool{false, true} {
			name := m.name
			if useTLS {
				name += "/tls"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ts := startServerMode(t, newServer(), useTLS, m.direct)
				for _, v := range []string{"HTTP/1.1", "HTTP/1.0"} {
					for _, p := range []string{"/healthz", "/readyz", "/healthz?probe=1"} {
						status, body := healthGet(t, ts, p, v)
						if !strings.HasSuffix(status, " 200 OK") || body != "{\"status\":\"ok\"}\n" {
							t.Errorf("%s %s serving: %q %q", v, p, status, body)
						}
					}
				}
				if ts.Draining() {
					t.Fatal("Draining() before Drain")
				}
				ts.Drain()
				if !ts.Draining() {
					t.Fatal("not Draining() after Drain")
				}
				for _, v := range []string{"HTTP/1.1", "HTTP/1.0"} {
					for _, p := range []string{"/healthz", "/readyz"} {
						status, body := healthGet(t, ts, p, v)
						if !strings.HasSuffix(status, " 503 Service Unavailable") ||
							body != "{\"error\":\"draining\",\"message\":\"the server is draining\"}\n" {
							t.Errorf("%s %s draining: %q %q", v, p, status, body)
						}
					}
				}
				// Other paths and methods are the front door's as before.
				if status, _ := healthGet(t, ts, "/healthz/x", "HTTP/1.1"); !strings.Contains(status, " 404 ") {
					t.Errorf("GET /healthz/x: %q", status)
				}
				got := rawExchange(t, ts, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
				if !bytes.Contains(got, []byte(" 405 ")) {
					t.Errorf("POST /healthz: %q", got)
				}
			})
		}
	}
}

// TestReadyz: /readyz asks the Resolver; a sprite it does not know is an
// answer (200), another error is not (503 not_ready, with nothing of the
// error), while /healthz stays 200.
func TestReadyz(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			var down atomic.Bool
			var asked atomic.Int32
			srv := newServer()
			srv.Sprites = ResolverFunc(func(_ context.Context, name string) (dialer.ContextDialer, error) {
				asked.Add(1)
				if down.Load() {
					return nil, errors.New("control plane at 10.1.2.3 unreachable")
				}
				return nil, dialer.ErrUnknownSprite
			})
			ts := startServerMode(t, srv, false, m.direct)
			if status, body := healthGet(t, ts, "/readyz", "HTTP/1.1"); !strings.HasSuffix(status, " 200 OK") {
				t.Errorf("resolver answers: %q %q", status, body)
			}
			if asked.Load() != 1 {
				t.Errorf("the resolver was asked %d times for one /readyz", asked.Load())
			}
			down.Store(true)
			status, body := healthGet(t, ts, "/readyz", "HTTP/1.1")
			if !strings.HasSuffix(status, " 503 Service Unavailable") ||
				body != "{\"error\":\"not_ready\",\"message\":\"the sprite resolver does not answer\"}\n" {
				t.Errorf("resolver down: %q %q", status, body)
			}
			if status, _ := healthGet(t, ts, "/healthz", "HTTP/1.1"); !strings.HasSuffix(status, " 200 OK") {
				t.Errorf("/healthz with the resolver down: %q", status)
			}
		})
	}
}

// TestDrain follows a drain step by step on both serving paths: an idle
// reused connection is closed by the server at once, and the client's next
// tunnel goes on a new connection with no error; a tunnel open at the drain
// carries on; new tunnels are still served while the listener is open, with
// no reuse, and their connections are closed when they end; then Shutdown
// waits for the open tunnel, whose connection is closed too, not kept.
func TestDrain(t *testing.T) {
	t.Parallel()
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Parallel()
			tg := startTarget(t, echo)
			ts, closed := startServerNotify(t, newServer(), m.direct)
			d := reuseDialer(t, ts)
			var fresh atomic.Int32
			d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				fresh.Add(1)
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}
			open := dialTo(t, d, "s", tg.addr())
			roundTrip(t, open, payload(0, 100))
			idle := dialTo(t, d, "s", tg.addr())
			roundTrip(t, idle, payload(1, 100))
			closeReused(t, d, idle, 1)
			if n := fresh.Load(); n != 2 {
				t.Fatalf("%d connections for two tunnels", n)
			}

			ts.Drain()
			recv(t, closed, "the server to close the idle connection")
			c := dialTo(t, d, "s", tg.addr())
			if n := fresh.Load(); n != 3 {
				t.Fatalf("%d connections dialed: the tunnel after the drain should be on a third, new one", n)
			}
			if c.Reuse() {
				t.Error("a tunnel opened during the drain was granted reuse")
			}
			finishEcho(t, c, payload(2, 100))
			c.Close()
			recv(t, closed, "the server to close the connection of a tunnel opened during the drain")
			// open was granted reuse before the drain: its connection is
			// closed once it ends, below, instead of kept.
			roundTrip(t, open, payload(3, 100)) // untouched by the drain

			done := make(chan error, 1)
			go func() { done <- ts.Shutdown(testCtx(t)) }()
			finishEcho(t, open, payload(4, 100))
			open.Close()
			if err := recv(t, done, "Shutdown once the open tunnel ended"); err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			recv(t, closed, "the server to close the connection of the tunnel open at the drain")
		})
	}
}

// TestReadyzAfterDrainBegan: a /readyz whose resolver answers after a
// drain began answers 503, not the 200 it would have before: the drain is
// checked again once the resolver is done (found in review: it answered
// 200 on both serving paths).
func TestReadyzAfterDrainBegan(t *testing.T) {
	t.Parallel()
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprint("direct=", direct), func(t *testing.T) {
			t.Parallel()
			entered, release := make(chan struct{}, 1), make(chan struct{})
			srv := newServer()
			srv.Sprites = ResolverFunc(func(ctx context.Context, name string) (dialer.ContextDialer, error) {
				if name == readyProbe {
					entered <- struct{}{}
					<-release
				}
				return nil, dialer.ErrUnknownSprite
			})
			ts := startServerMode(t, srv, false, direct)
			got := make(chan string, 1)
			go func() { s, _ := healthGet(t, ts, "/readyz", "HTTP/1.1"); got <- s }()
			recv(t, entered, "the readiness probe")
			ts.Drain()
			close(release)
			if s := recv(t, got, "the /readyz answer"); !strings.Contains(s, "503") {
				t.Fatalf("/readyz answered %q after the drain began", s)
			}
		})
	}
}

// TestRefusalDuringDrainOffersNoReuse: a target refused after a drain
// began (its dial under way when Drain was called) is refused without
// offering reuse, so the client does not pool a connection the server is
// about to close (found in review: the offer was decided before the dial).
func TestRefusalDuringDrainOffersNoReuse(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	srv := newServer()
	srv.Sprites = ResolverFunc(func(ctx context.Context, name string) (dialer.ContextDialer, error) {
		return dialerFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
			entered <- struct{}{}
			<-release
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}), nil
	})
	ts := startServer(t, srv, false)
	d := reuseDialer(t, ts)
	d.Retry.MaxAttempts = 1
	errc := make(chan error, 1)
	go func() {
		_, err := d.DialSprite(testCtx(t), "s", "tcp", "127.0.0.1:1")
		errc <- err
	}()
	recv(t, entered, "the target dial")
	ts.Drain()
	close(release)
	if err := recv(t, errc, "the refused dial"); !errors.Is(err, dialer.ErrTargetRefused) {
		t.Fatalf("dial: %v, want the target refused", err)
	}
	if n := d.IdleConnections(); n != 0 {
		t.Fatalf("%d idle connections after a refusal during a drain, want 0", n)
	}
}
