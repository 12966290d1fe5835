// Quickstart is the library quick start of README.md, word for word (a
// test in cmd/spriteproxy checks that, builds it and runs it).
package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"

	sprites "github.com/spriteproxy/spriteproxy/proxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	client := sprites.New(os.Getenv("SPRITEPROXY_TOKEN"),
		sprites.WithBaseURL(cmp.Or(os.Getenv("SPRITEPROXY_API"), sprites.DefaultBaseURL)))
	sprite := client.Sprite("my-sprite")

	// An HTTP client whose connections open inside the sprite: no local port.
	httpClient := &http.Client{Transport: &http.Transport{DialContext: sprite.DialContext}}
	resp, err := httpClient.Get("http://localhost:8080/")
	if err != nil {
		log.Fatal(err) // errors.Is(err, dialer.ErrUnauthorized), ErrTargetRefused...
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("GET / inside the sprite: %s: %s\n", resp.Status, body)

	// localhost:PORT here is port 5432 inside the sprite, until Ctrl-C.
	// Local port 0 lets the OS pick a free port.
	session, err := sprite.ProxyPort(ctx, 0, 5432)
	if err != nil {
		log.Fatal(err)
	}
	defer session.Close()
	fmt.Printf("forwarding %s to my-sprite:5432: psql -h 127.0.0.1 -p %d\n", session.LocalAddr(), session.LocalPort)
	session.Wait()
}
