package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/spriteproxy/spriteproxy/internal/testnet"
	sprites "github.com/spriteproxy/spriteproxy/proxy"
	"github.com/spriteproxy/spriteproxy/transport/websocket"
)

// refusingProxy is an HTTP proxy on loopback that answers every CONNECT
// with 407, and reports each request's target.
func refusingProxy(t *testing.T) (addr string, targets <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 4)
	testnet.Serve(t, ln, func(c net.Conn) {
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		ch <- req.Method + " " + req.Host
		fmt.Fprint(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\nContent-Length: 0\r\n\r\n")
	})
	return ln.Addr().String(), ch
}

// WithProxy sends the dial of a non-loopback API through the proxy, whose
// refusal is a *websocket.ProxyError naming it.
func TestWithProxy(t *testing.T) {
	t.Parallel()
	addr, targets := refusingProxy(t)
	c := sprites.New("tok", sprites.WithBaseURL("https://sprites.test:8443"),
		sprites.WithProxy(func(*url.URL) (*url.URL, error) { return url.Parse("http://" + addr) }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Sprite("box").ProxySocket(ctx, "tcp", "localhost:22")
	pe, ok := errors.AsType[*websocket.ProxyError](err)
	if !ok || pe.StatusCode != http.StatusProxyAuthRequired || pe.Proxy != "http://"+addr {
		t.Fatalf("err %v, want a *websocket.ProxyError with 407 from %s", err, addr)
	}
	if got := <-targets; got != "CONNECT sprites.test:8443" {
		t.Errorf("the proxy was asked %q", got)
	}
}

// Without WithProxy, HTTPS_PROXY is honoured for a non-loopback API name
// (the proxy never forwards, so the name need not resolve). Not parallel:
// it sets the environment.
func TestProxyFromEnvironment(t *testing.T) {
	addr, targets := refusingProxy(t)
	t.Setenv("HTTPS_PROXY", "http://alice:pw@"+addr)
	t.Setenv("NO_PROXY", "")
	c := sprites.New("tok", sprites.WithBaseURL("https://sprites.test"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.Sprite("box").ProxySocket(ctx, "tcp", "localhost:22")
	if pe, ok := errors.AsType[*websocket.ProxyError](err); !ok || pe.StatusCode != http.StatusProxyAuthRequired {
		t.Fatalf("err %v, want a *websocket.ProxyError with 407", err)
	}
	if got := <-targets; got != "CONNECT sprites.test:443" {
		t.Errorf("the proxy was asked %q", got)
	}

	// NO_PROXY names it: a direct dial, which fails without the proxy.
	t.Setenv("NO_PROXY", "sprites.test")
	_, err = c.Sprite("box").ProxySocket(ctx, "tcp", "localhost:22")
	if _, ok := errors.AsType[*websocket.ProxyError](err); ok || err == nil {
		t.Fatalf("err %v with NO_PROXY, want a direct dial's error", err)
	}
}
