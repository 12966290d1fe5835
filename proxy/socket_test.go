package proxy_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/dialer"
	"github.com/spriteproxy/spriteproxy/proxy"
)

func TestProxySocket(t *testing.T) {
	t.Parallel()
	transports(t, func(t *testing.T, srv *testServer, c *proxy.Client) {
		srv.Serve(5432, echo)
		ctx, cancel := context.WithCancel(t.Context())
		conn, err := c.ProxySocket(ctx, "tcp", testSprite, "localhost:5432")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cancel() // bounds the handshake only
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		roundTrip(t, conn, "after cancel")
		conn.(dialer.HalfCloser).CloseWrite()
		if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
			t.Fatalf("after CloseWrite: %q, %v; want EOF", rest, err)
		}
	})
}

// TestServerRefusals: the server's refusals come back as the dialer
// package's sentinels.
func TestServerRefusals(t *testing.T) {
	t.Parallel()
	srv, c := server(t)
	if _, err := c.ProxySocket(t.Context(), "tcp", "other-sprite", "localhost:1"); !errors.Is(err, dialer.ErrUnknownSprite) {
		t.Errorf("unknown sprite: %v", err)
	}
	bad := proxy.New("wrong-token", proxy.WithBaseURL(srv.URL))
	if _, err := bad.Sprite(testSprite).DialContext(t.Context(), "tcp", "localhost:1"); !errors.Is(err, dialer.ErrUnauthorized) {
		t.Errorf("wrong token: %v", err)
	}
	if _, err := c.ProxySocket(t.Context(), "tcp", testSprite, "10.1.2.3:80"); !errors.Is(err, dialer.ErrTargetForbidden) {
		t.Errorf("target outside the policy: %v", err)
	}
}

// TestTLSAndNetDial: a wss:// server, trusted through WithTLSConfig, with
// the connection under each tunnel dialed by the WithNetDial hook.
func TestTLSAndNetDial(t *testing.T) {
	t.Parallel()
	srv := newTestServer(true)
	defer srv.Close()
	srv.Serve(443, echo)
	var dials atomic.Int32
	c := proxy.New(testToken,
		proxy.WithBaseURL(srv.URL),
		proxy.WithTLSConfig(srv.TLSConfig()),
		proxy.WithNetDial(func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}),
	)
	ps := proxyPort(t, c, 443)
	roundTrip(t, dial(t, "tcp4", ps), "over TLS")
	if dials.Load() != 1 {
		t.Fatalf("%d dials through WithNetDial, want 1", dials.Load())
	}

	untrusting := proxy.New(testToken, proxy.WithBaseURL(srv.URL))
	if _, err := untrusting.ProxySocket(t.Context(), "tcp", testSprite, "localhost:443"); err == nil {
		t.Fatal("dial succeeded without trusting the server's certificate")
	}
}

func TestDialContextHTTP(t *testing.T) {
	t.Parallel()
	srv, c := server(t)
	srv.ServeHTTP(8080, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	}))
	tr := &http.Transport{DialContext: c.Sprite(testSprite).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("http://localhost:8080/")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "hello from localhost:8080" {
		t.Fatalf("body %q, err %v", body, err)
	}
}
