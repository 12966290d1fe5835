package websocket

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/spriteproxy/spriteproxy/dialer"
)

// recordingNetwork is a sprite's network that records every address it is
// asked to dial and refuses any that is not an IP literal: a name reaching
// it would be resolved, by the hosts file or DNS.
type recordingNetwork struct {
	t     *testing.T
	mu    sync.Mutex
	addrs []string
}

func (n *recordingNetwork) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	n.mu.Lock()
	n.addrs = append(n.addrs, addr)
	n.mu.Unlock()
	if _, err := netip.ParseAddrPort(addr); err != nil {
		n.t.Errorf("the server asked its network to dial %q, a name a resolver would answer", addr)
		return nil, &net.DNSError{Err: "no such host", Name: addr, IsNotFound: true}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

var _ dialer.ContextDialer = (*recordingNetwork)(nil)

// TestLocalhostNeverResolved: localhost, in any case, is dialed as
// 127.0.0.1 and ::1, never handed to the sprite's network as a name, so no
// hosts file or DNS server decides where it goes.
func TestLocalhostNeverResolved(t *testing.T) {
	t.Parallel()
	tg := startTarget(t, echo)
	for _, useTLS := range []bool{false, true} {
		for _, m := range modes {
			for _, name := range []string{"localhost", "LOCALHOST", "LocalHost"} {
				path := m.name
				if useTLS {
					path += "/tls"
				}
				t.Run(path+"/"+name, func(t *testing.T) {
					t.Parallel()
					nw := &recordingNetwork{t: t}
					srv := newServer()
					srv.Sprites = ResolverFunc(func(context.Context, string) (dialer.ContextDialer, error) { return nw, nil })
					ts := startServerMode(t, srv, useTLS, m.direct)
					c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", net.JoinHostPort(name, itoa(tg.port)))
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					roundTrip(t, c, payload(0, 100))
					nw.mu.Lock()
					defer nw.mu.Unlock()
					if len(nw.addrs) != 1 || nw.addrs[0] != tg.addr() {
						t.Fatalf("dialed %q, want just %q", nw.addrs, tg.addr())
					}
				})
			}
		}
	}
	t.Run("IPv6 loopback when 127.0.0.1 refuses", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port))); err == nil {
			c.Close()
			ln.Close()
			t.Skip("something listens on 127.0.0.1 at the same port")
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if c, err := ln.Accept(); err == nil {
				echo(c)
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		nw := &recordingNetwork{t: t}
		srv := newServer()
		srv.Sprites = ResolverFunc(func(context.Context, string) (dialer.ContextDialer, error) { return nw, nil })
		ts := startServerMode(t, srv, false, true)
		c, err := ts.dialer().DialSprite(testCtx(t), "s", "tcp", net.JoinHostPort("localhost", itoa(port)))
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, payload(0, 100))
		c.Close()
		nw.mu.Lock()
		defer nw.mu.Unlock()
		want := []string{net.JoinHostPort("127.0.0.1", itoa(port)), net.JoinHostPort("::1", itoa(port))}
		if len(nw.addrs) != 2 || nw.addrs[0] != want[0] || nw.addrs[1] != want[1] {
			t.Fatalf("dialed %q, want %q", nw.addrs, want)
		}
	})
}
