package proxy_test

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/spriteproxy/spriteproxy/netstack"
	"github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// TestNoOSSockets runs the whole chain on an in-memory network: the
// session listens on a userspace host (WithListen), the tunnels reach the
// server through it (WithNetDial), and the server dials the sprite's
// service inside another. No OS socket is bound.
func TestNoOSSockets(t *testing.T) {
	t.Parallel()
	n := netstack.NewNetwork(nil)
	defer n.Close()
	laptop, err := n.NewHost("laptop")
	if err != nil {
		t.Fatal(err)
	}
	sprite, err := n.NewHost(testSprite)
	if err != nil {
		t.Fatal(err)
	}
	api, err := n.NewHost("api")
	if err != nil {
		t.Fatal(err)
	}

	// The sprite's service, on its own loopback.
	svcLn, err := sprite.Listen("tcp", "localhost:5432")
	if err != nil {
		t.Fatal(err)
	}
	svc := &service{ln: svcLn}
	svc.serve(echo)
	defer svc.Close()

	// The server, on the api host, placing each sprite in the host of its name.
	ws := &websocket.Server{Auth: websocket.StaticToken(testToken), Sprites: n}
	apiLn, err := api.Listen("tcp", ":80")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: ws}
	served := make(chan struct{})
	go func() {
		defer close(served)
		hs.Serve(apiLn)
	}()
	defer func() {
		ws.Close()
		hs.Close()
		<-served
	}()

	c := proxy.New(testToken,
		proxy.WithBaseURL("http://api:80"),
		proxy.WithNetDial(laptop.DialContext),
		proxy.WithListen(func(_ context.Context, network, address string) (net.Listener, error) {
			return laptop.Listen(network, address)
		}),
	)
	ps, err := c.Sprite(testSprite).ProxyPort(t.Context(), 0, 5432)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if ps.LocalPort == 0 {
		t.Fatal("LocalPort = 0")
	}
	for _, addr := range []string{ps.LocalAddr().String(), net.JoinHostPort("::1", strconv.Itoa(ps.LocalPort))} {
		conn, err := laptop.DialContext(t.Context(), "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s on the laptop: %v", addr, err)
		}
		roundTrip(t, conn, "in memory via "+addr)
		conn.Close()
	}
}
