package proxytest_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/spriteproxy/spriteproxy/proxy/proxytest"
)

// A test of code that reaches an HTTP service inside a sprite, with no OS
// port anywhere: the service listens in the sprite, and the client reaches
// it through a real tunnel on the in-memory network.
func Example() {
	// In a test: srv := proxytest.NewServer(t), closed by t's cleanup.
	srv, err := proxytest.Start()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ln, _ := srv.Sprite("web").Listen("tcp", "127.0.0.1:8080")
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from inside the sprite")
	})}
	go hs.Serve(ln)
	defer hs.Close()

	sprite := srv.Client().Sprite("web")
	tr := &http.Transport{DialContext: sprite.DialContext}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	resp, err := client.Get("http://localhost:8080/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output: hello from inside the sprite
}
