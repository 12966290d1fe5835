package proxy_test

import (
	"context"
	"log"
	"net"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

// The Sprites SDK's proxy documentation snippets, as written for
// github.com/superfly/sprites-go: they must compile against this package
// with only the import path changed. They are compiled, not run (they use
// fixed ports and the hosted API).
var (
	_ = sdkSingle
	_ = sdkMany
	_ = sdkSocket
	_ = sdkManager
)

func sdkSingle(ctx context.Context) {
	client := sprites.New("your-auth-token", sprites.WithBaseURL("http://localhost:8080"))
	sprite := client.Sprite("my-sprite")

	session, err := sprite.ProxyPort(ctx, 3000, 3000)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()

	session2, err := client.ProxyPort(ctx, "my-sprite", 8080, 8080)
	if err != nil {
		log.Fatal(err)
	}
	defer session2.Close()
	session2.Wait()
}

func sdkMany(ctx context.Context, sprite *sprites.Sprite) {
	sessions, err := sprite.ProxyPorts(ctx, []sprites.PortMapping{
		{LocalPort: 3000, RemotePort: 3000},
		{LocalPort: 8080, RemotePort: 80},
		{LocalPort: 5432, RemotePort: 5432, RemoteHost: "fdf::1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	var addr net.Addr = sessions[0].LocalAddr()
	_ = addr
}

func sdkSocket(ctx context.Context, client *sprites.Client) {
	conn, err := client.ProxySocket(ctx, "tcp", "my-sprite", "localhost:5432")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	var c net.Conn
	c, err = client.Sprite("my-sprite").ProxySocket(ctx, "tcp", "localhost:5432")
	_, _ = c, err
}

func sdkManager(ctx context.Context, client *sprites.Client) {
	manager := sprites.NewProxyManager()
	session1, _ := client.ProxyPort(ctx, "my-sprite", 3000, 3000)
	session2, _ := client.ProxyPort(ctx, "my-sprite", 5432, 5432)
	manager.AddSession(session1)
	manager.AddSession(session2)
	defer manager.CloseAll()
	manager.WaitAll()
}
