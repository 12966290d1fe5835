package proxytest

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/internal/testnet"
	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// noResume turns the resume extension off on the server, for the tests of
// faults that end a tunnel: with it on, a tunnel carries on across a Cut
// (resume_test.go tests that).
func noResume() Option {
	return WithServer(func(s *websocket.Server) { s.DisableResume = true })
}

// echoSprite starts an echo service on 127.0.0.1:7 of sprite "echo"; the
// error that ends each target conn's echo (nil for an end of stream) is
// sent on the returned channel.
func echoSprite(t *testing.T, srv *Server) <-chan error {
	ln, err := srv.Sprite("echo").Listen("tcp", "127.0.0.1:7")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 16)
	testnet.Serve(t, ln, func(c net.Conn) {
		_, err := io.Copy(c, c)
		ended <- err
	})
	return ended
}

// targetEnded waits for a target conn's echo to end, and returns its error.
func targetEnded(t *testing.T, ended <-chan error) error {
	t.Helper()
	select {
	case err := <-ended:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the target's conn did not end")
		return nil
	}
}

// echoOnce writes one byte on c and reads it back.
func echoOnce(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	b := make([]byte, 1)
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'x' {
		t.Fatalf("echo: %q, %v", b, err)
	}
}

// wantBroken checks that a read on c ends with an error, not a clean EOF.
func wantBroken(t *testing.T, what string, c net.Conn) error {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.ReadAll(c)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read ended with %v, want the tunnel's error", what, err)
	}
	return err
}

// TestConditionsDelayTunnels checks that latency on the client's link
// delays a tunnel's first echoed byte by at least a round trip (a lower
// bound only), through ProxySocket and through ProxyPort.
func TestConditionsDelayTunnels(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, WithoutTLS())
	echoSprite(t, srv)
	const latency = 15 * time.Millisecond
	if err := srv.SetConditions(netstack.Conditions{Latency: latency}); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	sprite := srv.Client().Sprite("echo")
	start := time.Now()
	c, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c)
	// TCP, upgrade, handshake and data: at least three round trips of 2×latency.
	if d := time.Since(start); d < 6*latency {
		t.Errorf("first echoed byte after %v, want at least %v", d, 6*latency)
	}

	ps, err := sprite.ProxyPort(ctx, 0, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	start = time.Now()
	lc, err := srv.DialLocal(ctx, ps.LocalPort)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	echoOnce(t, lc)
	if d := time.Since(start); d < 2*latency {
		t.Errorf("ProxyPort: first echoed byte after %v, want at least %v", d, 2*latency)
	}
}

// TestCut checks that, with resume off, Cut ends every tunnel with an error at the client,
// not a clean EOF, through ProxySocket and ProxyPort, and that the next
// tunnels work.
func TestCut(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, noResume())
	targets := echoSprite(t, srv)
	ctx := ctxFor(t)
	sprite := srv.Client().Sprite("echo")
	c, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c)
	ps, err := sprite.ProxyPort(ctx, 0, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	lc, err := srv.DialLocal(ctx, ps.LocalPort)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	echoOnce(t, lc)

	n, err := srv.Cut()
	if err != nil || n < 2 {
		t.Fatalf("Cut() = %d, %v; want at least the two tunnels' connections", n, err)
	}
	err = wantBroken(t, "ProxySocket after Cut", c)
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, dialer.ErrTunnelClosed) {
		t.Errorf("ProxySocket after Cut: %v, want a reset or dialer.ErrTunnelClosed", err)
	}
	wantBroken(t, "ProxyPort's local conn after Cut", lc)
	// The server ends the targets of the tunnels it lost.
	targetEnded(t, targets)
	targetEnded(t, targets)

	c2, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	echoOnce(t, c2)
	lc2, err := srv.DialLocal(ctx, ps.LocalPort)
	if err != nil {
		t.Fatal(err)
	}
	defer lc2.Close()
	echoOnce(t, lc2)
}

// TestPartition checks that a partition makes a tunnel's read time out,
// and that the tunnel carries on once it heals.
func TestPartition(t *testing.T) {
	t.Parallel()
	srv := NewServer(t)
	echoSprite(t, srv)
	ctx := ctxFor(t)
	c, err := srv.Client().Sprite("echo").ProxySocket(ctx, "tcp", "localhost:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echoOnce(t, c)

	if err := srv.Partition(time.Hour); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	b := make([]byte, 1)
	if _, err := c.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read during the partition: %v, want a timeout", err)
	}
	srv.Partition(0)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, b); err != nil || b[0] != 'y' {
		t.Fatalf("read after the partition: %q, %v", b, err)
	}
	echoOnce(t, c)
}

// TestRestart checks that Restart ends the open tunnels with an error and
// that new tunnels work on the new server.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"netstack", nil},
		{"loopback", []Option{WithLoopbackTCP(), WithoutTLS()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t, tc.opts...)
			echoSprite(t, srv)
			ctx := ctxFor(t)
			sprite := srv.Client().Sprite("echo")
			c, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echoOnce(t, c)
			old := srv.Tunnels
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			if srv.Tunnels == old {
				t.Error("Tunnels is the old server after Restart")
			}
			if err := wantBroken(t, "tunnel across Restart", c); !errors.Is(err, dialer.ErrTunnelClosed) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("tunnel across Restart: %v, want dialer.ErrTunnelClosed or a reset", err)
			}
			c2, err := sprite.ProxySocket(ctx, "tcp", "localhost:7")
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			echoOnce(t, c2)
			if tc.opts != nil {
				if err := srv.SetConditions(netstack.Conditions{}); !errors.Is(err, ErrNoLink) {
					t.Errorf("SetConditions with WithLoopbackTCP: %v, want ErrNoLink", err)
				}
			}
		})
	}
}

// TestMachines checks that a machine's faults touch only its own clients.
func TestMachines(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, noResume())
	echoSprite(t, srv)
	ctx := ctxFor(t)
	m, err := srv.NewMachine("laptop")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.NewMachine("laptop"); err == nil {
		t.Error("a second machine of the same name")
	}
	open := func(c *proxy.Client) net.Conn {
		conn, err := c.Sprite("echo").ProxySocket(ctx, "tcp", "localhost:7")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		echoOnce(t, conn)
		return conn
	}
	onLaptop, onLocal := open(srv.ClientOn(m)), open(srv.Client())
	if n := m.Cut(); n < 1 {
		t.Fatalf("Cut() = %d", n)
	}
	wantBroken(t, "the laptop's tunnel", onLaptop)
	echoOnce(t, onLocal)
	open(srv.ClientOn(m))
}

// TestSpriteLinks checks that with WithSpriteLinks a sprite's own faults
// act on its tunnels: its latency delays them (a lower bound only), a
// partition makes a read time out and heals, a cut ends the tunnel with an
// error and resets the target; refusals still read as refusals, over
// netstack and with WithLoopbackTCP.
func TestSpriteLinks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"netstack", []Option{WithSpriteLinks()}},
		{"loopback", []Option{WithSpriteLinks(), WithLoopbackTCP()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := NewServer(t, tc.opts...)
			targets := echoSprite(t, srv)
			sprite := srv.Sprite("echo")
			ctx := ctxFor(t)
			client := srv.Client().Sprite("echo")
			if _, err := client.ProxySocket(ctx, "tcp", "localhost:9"); !errors.Is(err, dialer.ErrTargetRefused) {
				t.Errorf("nothing listening: %v, want dialer.ErrTargetRefused", err)
			}

			const latency = 15 * time.Millisecond
			sprite.SetConditions(netstack.Conditions{Latency: latency})
			start := time.Now()
			c, err := client.ProxySocket(ctx, "tcp", "localhost:7")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			echoOnce(t, c)
			// The server's dial (TCP, the relay's answer) and the data: three
			// round trips of the sprite's link.
			if d := time.Since(start); d < 6*latency {
				t.Errorf("first echoed byte after %v, want at least %v", d, 6*latency)
			}
			sprite.SetConditions(netstack.Conditions{})

			sprite.Partition(time.Hour)
			if _, err := c.Write([]byte("y")); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			b := make([]byte, 1)
			if _, err := c.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read during the sprite's partition: %v, want a timeout", err)
			}
			sprite.Partition(0)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, b); err != nil || b[0] != 'y' {
				t.Fatalf("read after the partition: %q, %v", b, err)
			}

			if n := sprite.Cut(); n < 1 {
				t.Fatalf("sprite Cut() = %d", n)
			}
			wantBroken(t, "tunnel after the sprite's Cut", c)
			if err := targetEnded(t, targets); !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("target after the sprite's Cut: %v, want ECONNRESET", err)
			}
			c2, err := client.ProxySocket(ctx, "tcp", "localhost:7")
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			echoOnce(t, c2)
		})
	}
}

// TestRestartKeepsListener checks that Restart never gives the address up
// (with WithLoopbackTCP, another test's port-0 listener could take it):
// the listener is the one Start made after two Restarts; and that once
// the listener has failed, Restart reports it, again and again, without a
// panic.
func TestRestartKeepsListener(t *testing.T) {
	t.Parallel()
	srv := NewServer(t, WithLoopbackTCP(), WithoutTLS())
	echoSprite(t, srv)
	ln := srv.ln
	for i := range 2 {
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		if srv.ln != ln {
			t.Fatalf("Restart %d: a new listener", i+1)
		}
		c, err := srv.Client().Sprite("echo").ProxySocket(ctxFor(t), "tcp", "localhost:7")
		if err != nil {
			t.Fatalf("after Restart %d: %v", i+1, err)
		}
		echoOnce(t, c)
		c.Close()
	}

	ln.Close()       // the listener fails under the server
	<-srv.front.done // and the server's accepting goroutine has seen it
	for i := range 2 {
		if err := srv.Restart(); err == nil {
			t.Errorf("Restart %d after the listener failed: no error", i+1)
		}
	}
}

// TestSpriteLinksTarget checks that with WithSpriteLinks the connected
// reply names the target, as without it, not the sprite's gateway: a
// ProxySocket conn's RemoteAddr is the same either way.
func TestSpriteLinksTarget(t *testing.T) {
	t.Parallel()
	remote := func(opts ...Option) string {
		srv := NewServer(t, opts...)
		echoSprite(t, srv)
		c, err := srv.Client().Sprite("echo").ProxySocket(ctxFor(t), "tcp", "localhost:7")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		echoOnce(t, c)
		return c.RemoteAddr().String()
	}
	direct, linked := remote(), remote(WithSpriteLinks())
	if direct != linked {
		t.Errorf("RemoteAddr with WithSpriteLinks = %s, want %s as without", linked, direct)
	}
}
